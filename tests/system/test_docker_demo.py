"""``uvxlan demo --docker`` (as `make demo-docker` runs it), under a lab
name of its own: real dockerds in two lab hosts, the agents' Docker
plugin, containers across hosts.  It must pass every check and leave
nothing behind: no namespace, dockerd, containerd, shim, mount, docker
root, cgroup or work file."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs, root
from uvxlan.lab import dockerdemo
from uvxlan.lab.dockerd import DOCKER_ROOT, cgroup_parent, host_root, owned_pids
from uvxlan.lab.netns import Lab

pytestmark = [root, needs("dockerd", "docker", "nsenter", "unshare", "busybox")]

CHECKS = (
    "docker network ls is the same on h1 and h2",
    "one store network each for net1 and net2, with their own VNIs",
    "net1c1 eth0 has MTU 1450", "net1c2 eth0 has MTU 1450",
    "net2c1 eth0 has MTU 1450", "net2c2 eth0 has MTU 1450",
    "net1c1 reaches net1c2 across hosts",
    "net1c2 answered within 10 s of docker run",
    "net1c1 cannot reach net2c2 (isolated)", "net1c1 cannot reach net2c1 (isolated)",
    "docker rm removed every endpoint from the store",
    "h1's dockerd, containerd and files removed", "h2's dockerd, containerd and files removed",
    "agents stopped cleanly on SIGTERM",
    "every namespace removed",
)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A work directory short enough for the agents' control sockets."""
    path = Path(tempfile.mkdtemp(prefix="dd", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_docker_demo_passes_and_leaves_nothing_behind(short_tmp: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    name = "dd" + secrets.token_hex(3)
    tmp_path = short_tmp
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # where its work dir goes
    try:
        code = dockerdemo.run(lab_name=name)
    finally:
        out = capsys.readouterr().out
        leftovers = Lab(name).namespaces()
        Lab(name).down()      # even after a crash: dockerds, agents, namespaces
    print(out)
    assert code == 0, out
    assert "demo passed" in out and "FAILED" not in out
    for check in CHECKS:
        assert f"[ok] {check}" in out
    # it printed what a user types, on each host
    for host in ("h1", "h2"):
        for net in ("net1", "net2"):
            assert (f"{host}$ docker network create --driver uvxlan --ipam-driver uvxlan"
                    f" --opt uvxlan.network={net} --ipam-opt uvxlan.network={net} {net}") in out
    assert "h2$ docker run --detach --network net1 --name net1c2 busybox:uvx" in out
    assert leftovers == []
    assert list(tmp_path.iterdir()) == []      # agent logs and the store file removed
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    for host in ("h1", "h2"):
        hroot = host_root(name, host)
        assert not hroot.exists()
        assert not any(owned_pids(hroot).values())
        assert str(hroot) not in mounts
        assert not any((h / cgroup_parent(hroot)).exists()
                       for h in Path("/sys/fs/cgroup").iterdir())
    assert not list(DOCKER_ROOT.glob(f"{name}-*"))


def test_docker_demo_that_fails_says_so_and_still_leaves_nothing(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The agents serve the plugin where dockerd does not look for it:
    # `docker network create -d uvxlan` fails as it would for a user
    # whose agent runs without --docker-plugin.
    name = "df" + secrets.token_hex(3)
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    monkeypatch.setattr(dockerdemo, "PLUGIN_SOCKET", "elsewhere.sock")
    try:
        code = dockerdemo.run(lab_name=name)
    finally:
        out = capsys.readouterr().out
        leftovers = Lab(name).namespaces()
        Lab(name).down()
    print(out)
    assert code == 1
    assert "demo FAILED" in out and "demo passed" not in out
    failed = [line for line in out.splitlines() if "[FAILED]" in line]
    assert len(failed) == 1 and "docker network create" in failed[0]
    assert "uvxlan" in failed[0] and "not found" in failed[0]
    for check in ("h1's dockerd, containerd and files removed",
                  "h2's dockerd, containerd and files removed",
                  "agents stopped cleanly on SIGTERM", "every namespace removed"):
        assert f"[ok] {check}" in out
    assert leftovers == []
    assert not list(DOCKER_ROOT.glob(f"{name}-*"))
    kept = list(short_tmp.iterdir())      # the logs and store, kept to look at
    assert len(kept) == 1 and "kept in" in out and str(kept[0]) in out
