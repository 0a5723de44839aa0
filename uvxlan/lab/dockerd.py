"""A private dockerd per lab host: Docker as a user runs it, one per host.

Each dockerd runs inside its lab host's network namespace with everything
of its own under ``/run/uvxlan/docker/LAB-HOST/`` (short: containerd's
socket path must fit in 108 bytes)::

    data/         --data-root (images, containers, containerd's root)
    exec/         --exec-root (containerd's socket, state, netns files)
    docker.sock   the API socket (``docker -H unix://…``)
    docker.pid    --pidfile
    dockerd.log   its output
    etc/          bound over /etc/docker: daemon.json, key.json, and
                  etc/plugins/ (spec files, ``uvxlan.spec``)
    plugins/      bound over /run/docker/plugins (plugin sockets:
                  ``uvxlan.sock``)
    cli/          DOCKER_CONFIG of the docker CLI run against it

dockerd finds remote plugins by name in /run/docker/plugins (sockets) and
/etc/docker/plugins (spec files), fixed paths; so that each lab host's
dockerd finds its own host's agent, dockerd runs in a mount namespace of
its own (``unshare -m``, every mount made a slave: it sees the machine's
mounts, its own stay private) where the host's ``plugins/`` and ``etc/``
are bound over them.  One exception: ``exec/netns``, where Docker makes
its sandboxes' netns files, is shared with the machine, so the paths
Docker hands a network plugin (SandboxKey) open anywhere.  ``nsenter
--net`` enters the host's netns: ``ip netns exec`` would remount /sys for
the netns and dockerd then finds no cgroups ("Devices cgroup isn't
mounted").  No bridge, no iptables
(``--bridge=none --iptables=false --ip6tables=false``): the lab's
namespaces and the machine's firewall stay untouched.  Containers go under
the cgroup parent ``uvxlan-LAB-HOST``.

:func:`remove` (and :meth:`LabDockerd.stop`) removes everything: the
containers, dockerd, its containerd and shims (found by pid and their own
argument naming this root, never by name alone), mounts left under the
root, the cgroup parent and the directory; :meth:`Lab.down` calls
:func:`remove_lab` so ``uvxlan lab down`` removes a lab's dockerds too.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from uvxlan.errors import LabError

__all__ = [
    "BUSYBOX_IMAGE",
    "DOCKER_ROOT",
    "LabDockerd",
    "busybox_rootfs",
    "cgroup_parent",
    "dockerd_argv",
    "host_root",
    "is_running",
    "owned_pids",
    "remove",
    "remove_lab",
]

DOCKER_ROOT = Path("/run/uvxlan/docker")
DOCKERD = "dockerd"
BUSYBOX = "/bin/busybox"          # Debian's busybox-static: no libraries needed
BUSYBOX_IMAGE = "busybox:uvx"
SOCKADDR_MAX = 107                # sun_path is 108 bytes with its NUL
# containerd's longest socket under the exec root
_CONTAINERD_SOCK = "exec/containerd/containerd.sock.ttrpc"
_STOP_GRACE = 15.0                # dockerd stops its containers and containerd


def host_root(lab: str, host: str, base: Path = DOCKER_ROOT) -> Path:
    """Where lab host ``host`` of lab ``lab`` keeps its dockerd's files."""
    return base / f"{lab}-{host}"


def cgroup_parent(root: Path) -> str:
    return f"uvxlan-{root.name}"


# Run as ``sh -c SCRIPT sh ROOT DOCKERD ARGS…`` in dockerd's new mount
# namespace (a copy of the machine's, propagation unchanged).  Every mount
# becomes a slave (sees the machine's changes, shows none of its own: the
# plugin binds, the containers' overlays), except ROOT/exec/netns, a shared
# mount made by share_netns_dir(): the netns files of Docker's sandboxes
# appear there for the whole machine, as /run/docker/netns does for a
# system dockerd, so a network plugin opens a sandbox by the path Docker
# gives it.  /run/docker/plugins and /etc/docker(/plugins) are where
# dockerd looks for plugins, fixed (moby pkg/plugins/discovery.go).
# mountinfo writes a space in a mount point as \040; printf %b
# reads it back.  A mount gone since mountinfo was read (another lab's
# netns, another runtime's) is skipped.  mkdir: docker.io makes the two
# places; a machine where dockerd never ran may lack them.
_MOUNTS_SCRIPT = r"""set -e
root=$1; shift
mkdir -p "$root/etc/plugins" "$root/plugins" /etc/docker /run/docker/plugins
cut -d ' ' -f 5 /proc/self/mountinfo | while read -r m; do
    m=$(printf '%b' "$m")
    [ "$m" = "$root/exec/netns" ] || mount --make-slave "$m" 2>/dev/null ||
        ! mountpoint -q "$m" || mount --make-slave "$m"
done
mount --bind "$root/etc" /etc/docker
mount --bind "$root/plugins" /run/docker/plugins
exec "$@"
"""


def share_netns_dir(root: Path) -> None:
    """Make ROOT/exec/netns a shared mount of its own (in our mount
    namespace): dockerd's netns files made under it show here too."""
    netns = root / "exec" / "netns"
    netns.mkdir(parents=True, exist_ok=True)
    for args in (["--bind", str(netns), str(netns)], ["--make-private", str(netns)],
                 ["--make-shared", str(netns)]):
        done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"mount {' '.join(args)}: {' '.join(done.stderr.split())}")


def dockerd_argv(root: Path, netns_path: str, dockerd: str = DOCKERD) -> list[str]:
    """The command line that starts dockerd for ``root`` in the netns at
    ``netns_path``: enter the netns, unshare the mounts, bind the plugin
    directories, exec dockerd (same pid throughout: nsenter, unshare and sh
    exec in place)."""
    sock = root / _CONTAINERD_SOCK
    if len(str(sock)) > SOCKADDR_MAX:
        raise LabError(f"docker root {root} is too long: containerd's socket {sock}"
                       f" exceeds {SOCKADDR_MAX} bytes")
    return [
        "nsenter", f"--net={netns_path}", "--",
        "unshare", "--mount", "--propagation", "unchanged", "--",
        "sh", "-c", _MOUNTS_SCRIPT, "sh", str(root),
        dockerd,
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--host", f"unix://{root / 'docker.sock'}",
        "--pidfile", str(root / "docker.pid"),
        "--config-file", str(root / "etc" / "daemon.json"),
        "--cgroup-parent", cgroup_parent(root),
        "--iptables=false", "--ip6tables=false", "--bridge=none",
    ]


def busybox_rootfs(busybox: str = BUSYBOX) -> bytes:
    """A tar of a root file system holding busybox and a link per applet
    (``busybox --list-full``: bin/sh, bin/ping, sbin/ip, …), for
    ``docker import``: an image without a registry."""
    try:
        listed = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.split()
        with open(busybox, "rb") as f:
            binary = f.read()
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"cannot read busybox at {busybox} (apt-get install "
                       f"busybox-static): {exc}") from None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "var",
                "proc", "sys", "dev"}
        dirs |= {os.path.dirname(p) for p in listed if os.path.dirname(p)}
        for d in sorted(dirs):
            add_dir(d)
        add_dir("tmp", 0o1777)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
        for path in listed:
            if path == "bin/busybox":
                continue
            link = tarfile.TarInfo(path)
            link.type = tarfile.SYMTYPE
            link.linkname = "/bin/busybox"
            tar.addfile(link)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Host(Protocol):
    @property
    def netns(self) -> str: ...


class LabLike(Protocol):
    """What a dockerd needs of its lab (:class:`uvxlan.lab.netns.Lab`,
    which calls this module at down: no import back)."""

    @property
    def name(self) -> str: ...

    def host(self, name: str) -> _Host: ...

    def record_pid(self, netns: str, pid: int) -> None: ...


class LabDockerd:
    """The dockerd of one lab host: start, run the docker CLI against it,
    stop."""

    def __init__(self, lab: LabLike, host: str, base: Path = DOCKER_ROOT) -> None:
        self.lab = lab
        self.host = host
        self.netns: str = lab.host(host).netns
        self.root = host_root(lab.name, host, base)
        self.proc: subprocess.Popen[bytes] | None = None

    # --- paths ----------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def plugin_dir(self) -> Path:
        """Seen by this dockerd as /run/docker/plugins: an agent serving the
        plugin puts ``uvxlan.sock`` here."""
        return self.root / "plugins"

    @property
    def spec_dir(self) -> Path:
        """Seen by this dockerd as /etc/docker/plugins: ``uvxlan.spec``
        holding ``unix:///path/to/socket`` names a socket anywhere."""
        return self.root / "etc" / "plugins"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def host_url(self) -> str:
        return f"unix://{self.socket}"

    # --- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd in the host's netns; return when its API answers."""
        if shutil.which(DOCKERD) is None:
            raise LabError("dockerd not found: install docker.io (scripts/setup.sh --docker)")
        argv = dockerd_argv(self.root, f"/run/netns/{self.netns}")
        if self.root.exists():
            remove(self.root)      # a crashed run's leftovers
        for sub in ("data", "exec", "etc/plugins", "plugins", "cli"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        (self.root / "etc" / "daemon.json").write_text("{}\n")
        try:
            share_netns_dir(self.root)
            with open(self.log, "ab") as log:
                # its own session: a Ctrl-C meant for us must not stop it mid-way
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            self.lab.record_pid(self.netns, self.proc.pid)   # lab down ends it too
            deadline = time.monotonic() + timeout
            while not _ping(self.socket):
                if self.proc.poll() is not None:
                    raise LabError(f"dockerd of {self.host} exited with {self.proc.returncode}:"
                                   f" {self.log_tail()}")
                if time.monotonic() > deadline:
                    raise LabError(f"dockerd of {self.host} not ready within {timeout:.0f} s:"
                                   f" {self.log_tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove the containers, stop dockerd, remove everything it left."""
        remove(self.root, self.proc)
        self.proc = None

    # --- the docker CLI -------------------------------------------------------

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0,
               input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://ROOT/docker.sock ARGS``; LabError with docker's
        own message if it fails and check is set."""
        return _docker(self.root, list(args), check=check, timeout=timeout, input=input)

    def import_busybox(self, tag: str = BUSYBOX_IMAGE, busybox: str = BUSYBOX) -> str:
        """Import the busybox image (no registry); its id."""
        return self.docker("import", "-", tag, input=busybox_rootfs(busybox)).stdout.strip()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


def _docker(root: Path, args: list[str], *, check: bool = True, timeout: float = 60.0,
            input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["docker", "--host", f"unix://{root / 'docker.sock'}", *args]
    env = {**os.environ, "DOCKER_CONFIG": str(root / "cli")}
    data = input.encode() if isinstance(input, str) else input
    try:
        done = subprocess.run(argv, input=data, capture_output=True, timeout=timeout,
                              env=env, check=False)
    except FileNotFoundError:
        raise LabError("docker CLI not found: install docker.io"
                       " (scripts/setup.sh --docker)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"docker {' '.join(args)} timed out after {timeout:.0f} s") from None
    result = subprocess.CompletedProcess(argv, done.returncode,
                                         done.stdout.decode(errors="replace"),
                                         done.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise LabError(f"docker {' '.join(args)}: {' '.join(result.stderr.split())[:300]}")
    return result


def _ping(sock: Path) -> bool:
    """True if a dockerd answers GET /_ping on sock."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = s.recv(64).split(b"\r\n", 1)[0]     # HTTP/1.0 200 OK
            return status.startswith(b"HTTP/1.") and status.split()[1:2] == [b"200"]
    except OSError:
        return False


# --- removal ----------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(p) for p in f.read().split()]
    return kids


def owned_pids(root: Path) -> dict[str, list[int]]:
    """The processes serving ``root``, each recognised by an argument only
    it has: dockerd (``--exec-root ROOT/exec``), its containerd (``--config
    ROOT/exec/containerd/containerd.toml``) and the shims (``-address
    ROOT/exec/containerd/containerd.sock``)."""
    exec_root = str(root / "exec")
    marks = {
        "dockerd": ("--exec-root", exec_root),
        "containerd": ("--config", f"{exec_root}/containerd/containerd.toml"),
        "shim": ("-address", f"{exec_root}/containerd/containerd.sock"),
    }
    found: dict[str, list[int]] = {k: [] for k in marks}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _cmdline(int(entry))
        pairs = set(zip(argv, argv[1:], strict=False))
        for kind, mark in marks.items():
            if mark in pairs:
                found[kind].append(int(entry))
    return found


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_running(p)]
    return alive


def is_running(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(root) or p.startswith(prefix)]


def remove(root: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Remove a lab dockerd and all it made: its containers (through its
    API while it answers), dockerd (SIGTERM, then SIGKILL), its containerd
    and shims and the containers they still run, mounts left under root,
    its cgroup parent and the directory.  Safe to repeat."""
    if _ping(root / "docker.sock"):
        with suppress(LabError):
            ids = _docker(root, ["ps", "-aq"], timeout=30).stdout.split()
            if ids:
                _docker(root, ["rm", "--force", "--volumes", *ids], timeout=60)
    pids = owned_pids(root)
    _signal(pids["dockerd"], signal.SIGTERM)    # it stops its containerd itself
    left = _wait_gone(pids["dockerd"], _STOP_GRACE)
    _signal(left, signal.SIGKILL)
    _wait_gone(left, 2.0)
    if proc is not None:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(2.0)      # reap our own child
    pids = owned_pids(root)
    # containers whose dockerd died: the shims' children are their inits
    inits = [c for shim in pids["shim"] for c in _children(shim)]
    _signal(inits, signal.SIGKILL)
    _wait_gone(inits, 2.0)
    rest = pids["containerd"] + pids["shim"]
    _signal(rest, signal.SIGTERM)
    _signal(_wait_gone(rest, 5.0), signal.SIGKILL)
    _wait_gone(rest, 2.0)
    # dockerd's mounts live in its own mount namespace and went with it;
    # anything under root in ours (a bind by hand, a crash) goes now
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "--recursive", "--lazy", point], capture_output=True,
                       check=False)
    _remove_cgroup(cgroup_parent(root))
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        raise LabError(f"cannot remove {root}: {_busy(root)}")
    with suppress(OSError):
        root.parent.rmdir()     # only if no other lab host's dockerd is there


def _busy(root: Path) -> str:
    mounts = _mounts_under(root)
    return f"still mounted: {', '.join(mounts)}" if mounts else "files left"


def _remove_cgroup(name: str, base: Path = Path("/sys/fs/cgroup")) -> None:
    """rmdir the cgroup parent in every hierarchy, deepest first (empty
    once its containers are gone)."""
    for top in _cgroup_dirs(base, name):
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with suppress(OSError):
                os.rmdir(dirpath)


def _cgroup_dirs(base: Path, name: str) -> Iterator[Path]:
    for path in (base / name, *(h / name for h in base.iterdir() if h.is_dir())):
        if path.is_dir():
            yield path


def remove_lab(lab: str, base: Path = DOCKER_ROOT) -> list[str]:
    """Remove every dockerd of lab ``lab`` (``ROOT/LAB-*``); the hosts whose
    dockerd was there."""
    if not base.is_dir():
        return []
    removed = []
    for root in sorted(base.glob(f"{lab}-h*")):
        remove(root)
        removed.append(root.name)
    return removed
