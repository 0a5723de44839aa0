"""uvxlan on Linux 3.10, as far as the jail (tests/support/jail) can show:
with offload left at its default (auto) the agents start, log one line per
missing feature with what they use instead, and the demo (embedded store),
an end-to-end overlay and the interop with Linux's vxlan all pass."""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OverlayFactory, checked_transfer, needs, ping, root
from tests.support.capture import ping_run
from tests.support.jail import REPO, JailBuildError, build_jail, jailed
from tests.system.test_e2e import NETS, PLACE
from uvxlan.lab.kvxlan import kernel_vxlan_host
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import AGENT_PREFIX_ENV, AgentProcs, Overlay, Placement

pytestmark = root

# What 3.10 lacks that uvxlan would use in auto mode, and the line the agent
# logs for each (it must say what it uses instead).
FALLBACKS = {
    "UDP_SEGMENT": "UDP_SEGMENT refused by this kernel: sending with sendmmsg",
    "UDP_GRO": "UDP_GRO refused by this kernel: receiving with recvmmsg",
}
NO_FALLBACK_NEEDED = ("TUNSETOFFLOAD", "IFF_VNET_HDR", "TUNGETFEATURES")


@pytest.fixture(scope="module")
def jail_prefix() -> list[str]:
    try:
        build_jail()
    except JailBuildError as exc:
        pytest.skip(str(exc))
    return jailed([])


def assert_fallback_lines(log: str) -> None:
    """One line per missing feature, none for what 3.10 has (TAP offloads)."""
    lines = log.splitlines()
    for feature, text in FALLBACKS.items():
        hits = [ln for ln in lines if feature in ln]
        assert len(hits) == 1 and text in hits[0], f"{feature}: {hits}\n{log}"
    for ok in NO_FALLBACK_NEEDED:
        assert not any(ok in ln for ln in lines), f"{ok} refused under the jail:\n{log}"


def agent_logs(ov: AgentProcs, hosts: list[str]) -> dict[str, str]:
    return {h: ov.file(h, ".log").read_text() for h in hosts}


# The whole demo runs in the jail (CLI, agents, everything they start).  It
# removes its work dir, agent logs included, when it passes: so the agents'
# logs are printed just before they are stopped.
DEMO = """
import sys
from uvxlan.lab import demo
from uvxlan.lab.overlay import ClusterOverlay

stop_all = ClusterOverlay.stop_all

def logged_stop_all(self):
    for host in list(self._procs):
        print(f"=== agent log of {host}")
        print(self.file(host, ".log").read_text())
        print(f"=== end of agent log of {host}")
    return stop_all(self)

ClusterOverlay.stop_all = logged_stop_all
sys.exit(demo.run(lab_name=sys.argv[1]))
"""


def test_demo_passes_in_the_jail(jail_prefix: list[str], tmp_path: Path) -> None:
    name = "dj" + secrets.token_hex(3)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    try:
        res = subprocess.run([*jail_prefix, sys.executable, "-c", DEMO, name], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        leftovers = Lab(name).namespaces()
        Lab(name).down()
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "demo passed" in res.stdout and "FAILED" not in res.stdout
    assert leftovers == []
    for host in ("h1", "h2"):
        log = res.stdout.split(f"=== agent log of {host}\n")[1]
        assert_fallback_lines(log.split(f"=== end of agent log of {host}")[0])


TRANSFER = 16 * 1024 * 1024


def test_overlay_with_jailed_agents(lab: Lab, overlay: OverlayFactory,
                                    jail_prefix: list[str]) -> None:
    ov = overlay(NETS, PLACE, agent_prefix=jail_prefix)       # offload: auto
    for h in ("h1", "h2"):
        assert ov.query(h, "status")["features"] == {
            "tap_vnet_hdr": True, "udp_gso": False, "udp_gro": False}
    a1, a2 = lab.container_netns("a1"), lab.container_netns("a2")
    assert ping(lab, a1, "10.0.0.3", 3) == 3
    assert ping(lab, a2, "10.0.0.2", 3) == 3
    checked_transfer(lab, a1, a2, "10.0.0.3", TRANSFER)
    checked_transfer(lab, a2, a1, "10.0.0.2", TRANSFER)
    assert ping(lab, a1, "10.0.0.5", 2) == 0                  # isolated
    assert ping(lab, a1, "10.0.0.4", 2) == 0
    assert ping(lab, lab.container_netns("b1"), "10.0.0.5", 2) == 2
    stats = ov.query("h1", "stats")
    assert not any(stats["drops"].values()), stats["drops"]
    for log in agent_logs(ov, ["h1", "h2"]).values():
        print(log)
        assert_fallback_lines(log)


@needs("ip", "bridge", "ethtool", "ping")
def test_interop_with_linux_vxlan_with_a_jailed_agent(
        lab: Lab, overlay: OverlayFactory, jail_prefix: list[str]) -> None:
    vni, port = 4242, 4789
    h2_ip = str(ipaddress.IPv4Network(lab.subnet).network_address + 2)   # lab's 2nd host
    ov = overlay({"net1": vni}, [Placement("c1", "h1", "net1", "10.0.0.1/24")],
                 hosts=2, run=["h1"], port=port, agent_prefix=jail_prefix,
                 extra_remotes={"net1": [h2_ip]})
    c1, c2 = lab.container_netns("c1"), lab.add_container("c2")
    # As in test_interop: checksums the veth leaves partial are filled.
    lab.run(lab.host("h2").netns, ["ethtool", "-K", "ul0", "tx", "off"], check=True)
    kernel_vxlan_host(lab, "h2", vni=vni, port=port, peers=[lab.host("h1").underlay_ip],
                      container="c2", address="10.0.0.2/24", mtu=1450)
    done = ping_run(lab, c1, "10.0.0.2")
    assert done.returncode == 0, done.stdout + ov.log_tail("h1", 20)
    done = ping_run(lab, c2, "10.0.0.1")
    assert done.returncode == 0, done.stdout + ov.log_tail("h1", 20)
    checked_transfer(lab, c1, c2, "10.0.0.2", TRANSFER)
    checked_transfer(lab, c2, c1, "10.0.0.1", TRANSFER)
    log = agent_logs(ov, ["h1"])["h1"]
    print(log)
    assert_fallback_lines(log)


def test_agent_prefix_comes_from_the_overlay_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ov = Overlay(Lab("envtest"), tmp_path, {}, [])
    monkeypatch.delenv(AGENT_PREFIX_ENV, raising=False)
    assert ov.prefix() == []                      # unset: the agent alone
    monkeypatch.setenv(AGENT_PREFIX_ENV, "/opt/jail310 --log --")
    assert ov.prefix() == ["/opt/jail310", "--log", "--"]
    ov.agent_prefix = ["nice", "-n", "5"]         # the overlay's own wins
    assert ov.prefix() == ["nice", "-n", "5"]
