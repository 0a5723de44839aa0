"""uvxlan.lab.dockerd without root: dockerd's command line, the busybox
image's file system, the API probe against a real Unix socket, and
removal of a stand-in dockerd process (a real process with dockerd's
marking arguments).  tests/system/test_dockerd.py runs the real dockerd."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from uvxlan.errors import LabError
from uvxlan.lab import dockerd
from uvxlan.lab.dockerd import busybox_rootfs, dockerd_argv, host_root, owned_pids, remove


def test_argv_enters_the_netns_unshares_mounts_and_execs_dockerd() -> None:
    root = Path("/run/uvxlan/docker/demo-h1")
    argv = dockerd_argv(root, "/run/netns/uvx-demo-h1")
    assert argv[:3] == ["nsenter", "--net=/run/netns/uvx-demo-h1", "--"]
    assert argv[3:8] == ["unshare", "--mount", "--propagation", "unchanged", "--"]
    assert argv[8:10] == ["sh", "-c"]
    assert argv[11:13] == ["sh", str(root)]       # $0, $1 of the script
    tail = argv[13:]
    assert tail[0] == "dockerd"
    opts = dict(zip(tail[1::2], tail[2::2], strict=False))
    assert opts["--data-root"] == f"{root}/data"
    assert opts["--exec-root"] == f"{root}/exec"
    assert opts["--host"] == f"unix://{root}/docker.sock"
    assert opts["--pidfile"] == f"{root}/docker.pid"
    assert opts["--config-file"] == f"{root}/etc/daemon.json"
    assert opts["--cgroup-parent"] == "uvxlan-demo-h1"
    for flag in ("--iptables=false", "--ip6tables=false", "--bridge=none"):
        assert flag in tail


def _run_script(tmp_path: Path, root: Path, fakes: str) -> list[str]:
    """The script as dockerd_argv gives it, run with shell functions in
    place of every command that would change the machine (mkdir, mount,
    mountpoint: they print what they were asked) on a mountinfo of our own:
    a mount point with a space, one that is gone by the time it is made a
    slave, and the shared netns directory."""
    script = dockerd_argv(root, "/run/netns/x")[10]
    # nothing else in it may touch the machine
    assert script.count("mount ") == 4 and script.count("mkdir ") == 1
    assert script.count("mountpoint ") == 1
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "42 27 254:0 /run/netns /run/netns rw shared:2 - ext4 /dev/vda rw\n"
        "43 42 0:4 net:[1] /run/netns/gone rw shared:4 - nsfs nsfs rw\n"
        "44 27 254:0 /n /run/uvxlan/docker/lab\\040x-h1/exec/netns rw shared:3"
        " - ext4 /dev/vda rw\n"
        "45 27 0:9 / /mnt/a\\040b rw - tmpfs tmpfs rw\n")
    stub = fakes + script.replace("/proc/self/mountinfo", str(mountinfo))
    done = subprocess.run(["sh", "-c", stub, "sh", str(root), "echo", "exec", "a b"],
                          capture_output=True, text=True, check=False)
    return [*done.stdout.splitlines(), f"exit {done.returncode}"]


FAKES = """
mkdir() { echo mkdir "$@"; }
mountpoint() { echo mountpoint "$@"; [ "$2" != /run/netns/gone ]; }
mount() {
    [ "$2" = /run/netns/gone ] && { echo "mount $*: failed"; return 32; }
    echo mount "$@"
}
"""


def test_the_script_slaves_every_mount_but_the_netns_dir_binds_then_execs(
        tmp_path: Path) -> None:
    root = Path("/run/uvxlan/docker/lab x-h1")
    assert _run_script(tmp_path, root, FAKES) == [
        f"mkdir -p {root}/etc/plugins {root}/plugins /etc/docker /run/docker/plugins",
        "mount --make-slave /",
        "mount --make-slave /run/netns",
        "mount --make-slave /run/netns/gone: failed",
        "mountpoint -q /run/netns/gone",          # gone: skipped
        "mount --make-slave /mnt/a b",
        f"mount --bind {root}/etc /etc/docker",
        f"mount --bind {root}/plugins /run/docker/plugins",
        "exec a b",
        "exit 0",
    ]


def test_the_script_stops_when_a_mount_that_is_there_cannot_be_made_a_slave(
        tmp_path: Path) -> None:
    # mountpoint says it is still mounted: the second try's failure ends it
    fakes = FAKES.replace('[ "$2" != /run/netns/gone ]', "true")
    lines = _run_script(tmp_path, Path("/run/uvxlan/docker/lab-h1"), fakes)
    assert lines[-3:] == ["mountpoint -q /run/netns/gone",
                          "mount --make-slave /run/netns/gone: failed", "exit 32"]
    assert "exec a b" not in lines


def test_a_root_too_long_for_containerds_socket_is_refused() -> None:
    root = Path("/run/" + "x" * 80)
    with pytest.raises(LabError, match="too long"):
        dockerd_argv(root, "/run/netns/x")
    # the default place fits with the longest lab name
    dockerd_argv(host_root("a" * 12, "h250"), "/run/netns/x")


@pytest.mark.skipif(not os.path.exists(dockerd.BUSYBOX), reason="needs busybox-static")
def test_busybox_rootfs_has_busybox_and_a_link_per_applet() -> None:
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        binary = tar.extractfile("bin/busybox")
        assert binary is not None
        assert binary.read() == Path(dockerd.BUSYBOX).read_bytes()
    assert members["bin/busybox"].mode & 0o111
    for applet in ("bin/sh", "bin/ping", "sbin/ip", "sbin/ifconfig", "bin/sleep", "bin/cat",
                   "usr/bin/nc", "usr/bin/wget"):
        assert members[applet].issym() and members[applet].linkname == "/bin/busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["etc/passwd"].isfile()


def test_busybox_rootfs_names_a_missing_busybox(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="busybox-static"):
        busybox_rootfs(str(tmp_path / "busybox"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are short; pytest's tmp_path may be too long
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="uvxdd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _serve_once(path: Path, answer: bytes) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                assert conn.recv(256).startswith(b"GET /_ping HTTP/1.0\r\n")
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_ping_is_true_only_for_an_http_200(short_dir: Path) -> None:
    sock = short_dir / "ok.sock"
    thread = _serve_once(sock, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    assert dockerd._ping(sock)
    thread.join(5)
    sock = short_dir / "err.sock"
    thread = _serve_once(sock, b"HTTP/1.0 500 Internal Server Error\r\n\r\n")
    assert not dockerd._ping(sock)
    thread.join(5)
    assert not dockerd._ping(short_dir / "none.sock")


def _stand_in(root: Path, *marks: str) -> subprocess.Popen[bytes]:
    """A process whose arguments mark it as one of root's (python -c
    ignores arguments after the program)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *marks])


def test_owned_pids_finds_processes_by_their_marking_argument(short_dir: Path) -> None:
    root = short_dir / "lab-h1"
    other = short_dir / "lab-h10"
    procs = [
        _stand_in(root, "--exec-root", f"{root}/exec"),
        _stand_in(root, "--config", f"{root}/exec/containerd/containerd.toml"),
        _stand_in(root, "-address", f"{root}/exec/containerd/containerd.sock"),
        _stand_in(other, "--exec-root", f"{other}/exec"),   # another host's
        _stand_in(root, f"{root}/exec"),                    # names the path, no flag
    ]
    try:
        found = owned_pids(root)
        assert found == {"dockerd": [procs[0].pid], "containerd": [procs[1].pid],
                         "shim": [procs[2].pid]}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_remove_ends_the_stand_in_processes_and_the_directory(short_dir: Path) -> None:
    root = short_dir / "lab-h1"
    (root / "exec").mkdir(parents=True)
    (root / "data" / "x").mkdir(parents=True)
    bystander = _stand_in(root, f"{root}/exec")
    procs = [_stand_in(root, "--exec-root", f"{root}/exec"),
             _stand_in(root, "--config", f"{root}/exec/containerd/containerd.toml")]
    try:
        remove(root, procs[0])
        assert procs[0].poll() is not None
        assert procs[1].wait(5) is not None
        assert not root.exists()
        assert bystander.poll() is None, "a process that only names the path was killed"
        remove(root)     # again: nothing to do
    finally:
        for p in (*procs, bystander):
            p.kill()
            p.wait()
