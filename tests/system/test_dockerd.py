"""A real dockerd in a lab host (uvxlan.lab.dockerd): started in the
host's netns with its own roots and plugin directories, runs a container
from the busybox image imported without a registry, and leaves nothing
behind when stopped, or when its lab goes down under a running container
after dockerd was killed."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import needs, root
from uvxlan.lab.dockerd import (
    BUSYBOX_IMAGE,
    LabDockerd,
    cgroup_parent,
    is_running,
    owned_pids,
)
from uvxlan.lab.netns import Lab

pytestmark = [root, needs("dockerd", "docker", "nsenter", "unshare", "busybox", "iptables-save")]


def _leftovers(d: LabDockerd) -> list[str]:
    """What a removed dockerd must not have left."""
    left = [f"{kind} {pids}" for kind, pids in owned_pids(d.root).items() if pids]
    if d.root.exists():
        left.append(f"directory {d.root}")
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if str(d.root) in line]
    cgroups = Path("/sys/fs/cgroup")
    left += [f"cgroup {h / cgroup_parent(d.root)}" for h in cgroups.iterdir()
             if (h / cgroup_parent(d.root)).exists()]
    return left


def _in_mount_ns(pid: int, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *argv],
                          capture_output=True, text=True, check=True).stdout


def test_dockerd_in_a_lab_host_runs_busybox_and_stops_clean(lab: Lab) -> None:
    lab.up(2)
    d = LabDockerd(lab, "h1")
    other = LabDockerd(lab, "h2")
    try:
        d.start()
        other.start()
        assert d.proc is not None
        pid = d.proc.pid
        # dockerd itself (nsenter, unshare and sh exec in place) in h1's netns
        assert owned_pids(d.root)["dockerd"] == [pid]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{d.netns}").st_ino
        # each dockerd sees its own host's plugin directories, the machine does not
        (d.plugin_dir / "probe-h1").write_text("")
        (d.spec_dir / "uvxlan.spec").write_text("unix:///nowhere.sock\n")
        (other.plugin_dir / "probe-h2").write_text("")
        assert _in_mount_ns(pid, "ls", "/run/docker/plugins").split() == ["probe-h1"]
        assert _in_mount_ns(pid, "cat", "/etc/docker/plugins/uvxlan.spec") == \
            "unix:///nowhere.sock\n"
        assert "probe-h1" not in os.listdir("/run/docker/plugins")
        info = d.docker("info", "--format", "{{.Driver}} {{.DockerRootDir}}").stdout.split()
        assert info == ["overlay2", str(d.root / "data")]

        d.import_busybox()
        assert BUSYBOX_IMAGE in d.docker("images", "--format",
                                         "{{.Repository}}:{{.Tag}}").stdout.split()
        done = d.docker("run", "--rm", "--network", "none", BUSYBOX_IMAGE,
                        "sh", "-c", "ip -o link; ping -c 1 -W 1 127.0.0.1")
        assert "1: lo:" in done.stdout and "1 packets received" in done.stdout
        assert " eth0" not in done.stdout          # --network none: no bridge, no veth
        d.docker("run", "-d", "--network", "none", "--name", "sleeper", BUSYBOX_IMAGE,
                 "sleep", "600")
        assert owned_pids(d.root)["shim"], "the running container has a shim"
        # its sandbox's netns file, at the path Docker would give a network
        # plugin, opens here (outside dockerd's mount namespace) as the
        # container's netns; dockerd's other mounts (overlays, binds) stay its own
        key, pid1 = d.docker("inspect", "--format",
                             "{{.NetworkSettings.SandboxKey}} {{.State.Pid}}",
                             "sleeper").stdout.split()
        assert key.startswith(f"{d.root}/exec/netns/")
        assert os.stat(key).st_ino == os.stat(f"/proc/{pid1}/ns/net").st_ino
        with open("/proc/self/mountinfo") as f:
            ours = [line.split()[4] for line in f if str(d.root) in line]
        assert sorted(ours) == [f"{d.root}/exec/netns", key]
        assert any((h / cgroup_parent(d.root)).is_dir()
                   for h in Path("/sys/fs/cgroup").iterdir()), "containers under our cgroup"
        # no iptables of its own: the netns's filter table stays empty
        rules = lab.run(d.netns, ["iptables-save"]).stdout
        assert "DOCKER" not in rules
    finally:
        d.stop()
        other.stop()
    assert _leftovers(d) == [] and _leftovers(other) == []


def test_lab_down_removes_a_killed_dockerd_and_its_running_container(lab: Lab) -> None:
    lab.up(1)
    d = LabDockerd(lab, "h1")
    d.start()
    d.import_busybox()
    d.docker("run", "-d", "--network", "none", "--name", "orphan", BUSYBOX_IMAGE,
             "sleep", "600")
    shim = owned_pids(d.root)["shim"]
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)     # a crash: containerd, shim, container stay
    d.proc.wait()
    assert owned_pids(d.root)["shim"] == shim
    lab.down()
    assert _leftovers(d) == []
    assert not any(is_running(p) for p in shim)
