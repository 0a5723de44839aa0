"""What overlay users keep hitting (Docker, flannel and weave issues), on
real agents in a lab (root only): the MTU derived from each host's
underlay interface, and a network that cannot fit refused; multicast within
a network reaching every member on every host and no other network;
endpoints whose container is gone collected; an automatically chosen subnet
that overlaps no route of the host.  Traffic stays inside the lab's
namespaces."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOOLS, ping, root
from tests.support.cluster import eventually
from uvxlan import cluster, netlink
from uvxlan.cluster import EndpointRecord
from uvxlan.errors import LabError
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay
from uvxlan.store import open_store

pytestmark = root


@pytest.fixture
def agents(lab: Lab, tmp_path: Path) -> Iterator[list[ClusterOverlay]]:
    """Overlays the test makes on one SQLite store; every agent stopped at
    the end, each must exit cleanly."""
    made: list[ClusterOverlay] = []
    yield made
    codes: dict[str, int] = {}
    for ov in made:
        codes.update(ov.stop_all())
    assert not {h: c for h, c in codes.items() if c != 0}, f"agents did not exit cleanly: {codes}"


def overlay(lab: Lab, tmp_path: Path, made: list[ClusterOverlay], tag: str,
            **options: Any) -> ClusterOverlay:
    ov = ClusterOverlay(lab, tmp_path / f"agents-{tag}", f"sqlite://{tmp_path}/state/state.db",
                        host_options={"lease_ttl": 2, "resync": 5, **options})
    made.append(ov)
    return ov


def cli_json(ov: ClusterOverlay, *args: str) -> Any:
    return json.loads(ov.cli(*args, "--json").stdout)


def endpoint(ov: ClusterOverlay, network: str, name: str) -> dict[str, Any] | None:
    return next((e for e in cli_json(ov, "endpoint", "ls", "--network", network)
                 if e["name"] == name), None)


def put(ov: ClusterOverlay, key: str, value: bytes) -> None:
    """A record straight into the store, past the CLI's checks."""
    async def write() -> None:
        store = open_store(ov.store_url)
        try:
            await store.put(key, value)
        finally:
            await store.close()
    asyncio.run(write())


# --- the MTU, from the underlay -----------------------------------------------

def test_the_underlay_interface_sets_the_mtu_and_a_network_too_big_is_refused(
        lab: Lab, tmp_path: Path, agents: list[ClusterOverlay]) -> None:
    """Agents started without [host] mtu take their underlay interface's:
    two on 1500, one on 1400.  A network made while only the 1500 hosts
    run gets 1450, one made after the third joined 1350; a larger one is
    refused naming both numbers, an attach of the 1450 network to the
    1400 host too, and an agent told an MTU its interface cannot carry
    does not start."""
    lab.up(3)
    subprocess.run(["ip", "-n", lab.host("h3").netns, "link", "set", "ul0", "mtu", "1400"],
                   check=True)
    ov = overlay(lab, tmp_path, agents, "derived", mtu=None)
    ov.start("h1")
    ov.start("h2")
    ov.cli("network", "create", "big")
    assert cli_json(ov, "network", "inspect", "big")["mtu"] == 1450
    ov.start("h3")
    mtus = {h["name"]: h["mtu"] for h in cli_json(ov, "host", "ls")}
    assert mtus == {"h1": 1500, "h2": 1500, "h3": 1400}
    ov.cli("network", "create", "small")
    assert cli_json(ov, "network", "inspect", "small")["mtu"] == 1350
    done = ov.cli("network", "create", "huge", "--mtu", "1400", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "uvxlan: error: MTU 1400 is larger than the underlay allows (1350): host h3's "
        "underlay MTU is 1400, less 50 for VXLAN"]

    c1, c3 = lab.add_container("c1"), lab.add_container("c3")
    done = ov.cli("attach", "big", "--host", "h3", "--netns", c3, check=False)
    assert done.returncode == 1
    assert "host h3's underlay MTU 1400 cannot carry network big's MTU 1450" in done.stderr
    ov.cli("attach", "small", "--host", "h1", "--netns", c1)
    ov.cli("attach", "small", "--host", "h3", "--netns", c3)
    assert netlink.link_info("eth0", c1)["mtu"] == netlink.link_info("eth0", c3)["mtu"] == 1350
    far = endpoint(ov, "small", c3)
    assert far is not None
    ip3 = str(far["ip"]).split("/")[0]
    # The largest ping that fits 1350 crosses the 1400 underlay whole.
    done = lab.run(c1, ["ping", "-c", "2", "-W", "2", "-M", "do", "-s", str(1350 - 28), ip3],
                   timeout=15)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ping(lab, c1, ip3) == 3

    # Written past the CLI's check (an older record, or by hand): h3's
    # agent gives it an error status naming both MTUs, and makes nothing.
    big = cli_json(ov, "network", "inspect", "big")
    ip = str(ipaddress.IPv4Network(big["subnet"]).network_address + 9)
    c3big = lab.add_container("c3big")
    hand = EndpointRecord(name="c3big", network="big", host="h3", netns=c3big, ifname="eth0",
                          mac="02:42:0a:00:00:99", ip=f"{ip}/24", created=time.time())
    put(ov, cluster.endpoint_key("big", "c3big"), cluster.encode(hand))

    def status() -> str:
        ep = endpoint(ov, "big", "c3big") or {}
        return str((ep.get("status") or {}).get("error", ""))
    why = "network big is refused: MTU 1450 needs an underlay MTU of 1500; host h3's is 1400"
    eventually(lambda: why in status(), 10,
               f"an error status for the endpoint h3 cannot carry ({status()!r})")
    assert netlink.link_index("eth0", c3big) is None

    ov.stop("h3")
    told = overlay(lab, tmp_path, agents, "told", mtu=1500)
    with pytest.raises(LabError, match=r"\[host\] mtu 1500 is larger than the MTU of ul0 "
                       r"\(1400\), the interface of underlay 10\.77\.0\.\d+"):
        told.start("h3", timeout=10)
    assert told.stop("h3") == 1


# --- subnets chosen around the host's routes ----------------------------------

def test_an_automatic_subnet_overlaps_no_route_of_the_host(
        lab: Lab, tmp_path: Path, agents: list[ClusterOverlay]) -> None:
    """Routes in the asking host's main table over the first candidates
    (a device route over two /24s, a blackhole, a /25 inside a /24) are
    skipped; the default route is not (it would leave nothing); a subnet
    given by hand over a route is created with a warning naming it."""
    lab.up(1)
    ns = lab.host("h1").netns
    for r in (["10.0.0.0/23", "dev", "ul0"], ["blackhole", "10.0.2.0/24"],
              ["10.0.3.128/25", "dev", "ul0"], ["default", "via", "10.77.0.254"]):
        subprocess.run(["ip", "-n", ns, "route", "add", *r], check=True)
    ov = overlay(lab, tmp_path, agents, "routes")
    ov.cli("network", "create", "auto")
    assert cli_json(ov, "network", "inspect", "auto")["subnet"] == "10.0.4.0/24"
    done = ov.cli("network", "create", "byhand", "--subnet", "10.0.2.0/24")
    assert done.stderr.strip().splitlines() == [
        "uvxlan: warning: subnet 10.0.2.0/24 overlaps this host's route 10.0.2.0/24"]
    ov.cli("network", "create", "next")
    assert cli_json(ov, "network", "inspect", "next")["subnet"] == "10.0.5.0/24"


# --- endpoints of containers that are gone ------------------------------------

def test_an_endpoint_whose_netns_is_gone_is_collected_after_the_grace_period(
        lab: Lab, tmp_path: Path, agents: list[ClusterOverlay]) -> None:
    """collect_after = 4: c1's netns deleted for good loses its record
    (its address free, its MAC gone from the other host's FDB, logged
    once); c3's netns deleted and made again within the grace period
    keeps its endpoint, made again and reachable (issue 11's behaviour)."""
    lab.up(2)
    ov = overlay(lab, tmp_path, agents, "collect", collect_after=4)
    ov.start("h1")
    ov.start("h2")
    ov.cli("network", "create", "net1")
    ns = {c: lab.add_container(c) for c in ("c1", "c2", "c3")}
    for c, h in (("c1", "h1"), ("c2", "h2"), ("c3", "h1")):
        ov.cli("attach", "net1", "--host", h, "--netns", ns[c], "--name", c)
    eps = {c: endpoint(ov, "net1", c) for c in ns}
    ip = {c: str(e["ip"]).split("/")[0] for c, e in eps.items() if e is not None}
    mac1 = eps["c1"]["mac"] if eps["c1"] else ""
    assert ping(lab, ns["c2"], ip["c1"]) == 3

    gone_at = time.monotonic()
    lab.remove_container("c1")
    lab.remove_container("c3")
    lab.add_container("c3")                      # back within the grace period
    eventually(lambda: netlink.link_index("eth0", ns["c3"]) is not None, 10, "c3 made again")
    eventually(lambda: endpoint(ov, "net1", "c1") is None, 20, "c1 collected")
    took = time.monotonic() - gone_at
    assert took >= 4, f"collected {took:.1f} s after its netns went: before the grace period"
    print(f"\nc1 collected {took:.1f} s after its netns went (collect_after = 4)")
    eventually(lambda: not any(e["mac"] == mac1 for e in ov.query("h2", "fdb")["fdb"]), 10,
               "c1's MAC gone from h2")
    c3 = endpoint(ov, "net1", "c3")
    assert c3 is not None and c3["status"]["state"] == "ready"
    assert ping(lab, ns["c2"], ip["c3"]) == 3
    collected = [line for line in ov.file("h1", ".log").read_text().splitlines()
                 if "collected" in line]
    assert len(collected) == 1 and "endpoint net1/c1: netns" in collected[0], collected
    ov.cli("attach", "net1", "--host", "h2", "--netns", lab.add_container("c4"), "--name", "c4")
    c4 = endpoint(ov, "net1", "c4")
    assert c4 is not None and str(c4["ip"]).split("/")[0] == ip["c1"]   # free again



def test_an_endpoint_in_a_process_netns_goes_with_the_process(
        lab: Lab, tmp_path: Path, agents: list[ClusterOverlay]) -> None:
    """A netns given as /proc/PID/ns/net (a runtime without a bind mount)
    is collected as soon as its process ends, long before collect_after
    (600 s here): that path can never name that netns again."""
    lab.up(2)
    ov = overlay(lab, tmp_path, agents, "proc", collect_after=600)
    ov.start("h1")
    ov.start("h2")
    ov.cli("network", "create", "net1")
    c2 = lab.add_container("c2")
    ov.cli("attach", "net1", "--host", "h2", "--netns", c2, "--name", "c2")
    inside = lab.spawn(lab.add_container("base"), ["unshare", "--net", "sleep", "120"])
    try:
        path = f"/proc/{inside.pid}/ns/net"
        eventually(lambda: netlink.netns_inode(path) != netlink.netns_inode(
            lab.container_netns("base")), 5, "the process in a netns of its own")
        ov.cli("attach", "net1", "--host", "h1", "--netns", path, "--name", "p1")
        p1 = endpoint(ov, "net1", "p1")
        assert p1 is not None and ping(lab, c2, str(p1["ip"]).split("/")[0]) == 3
        inside.kill()
        inside.wait()
        took = eventually(lambda: endpoint(ov, "net1", "p1") is None, 15, "p1 collected")
        print(f"\np1 collected {took:.1f} s after its process ended (collect_after = 600)")
    finally:
        if inside.poll() is None:
            inside.kill()
            inside.wait()
    assert "its process is gone: collected" in ov.file("h1", ".log").read_text()

# --- multicast inside a network -----------------------------------------------

GROUP, MPORT = "239.1.2.3", 5007


def test_multicast_reaches_every_member_of_its_network_and_no_other(
        lab: Lab, tmp_path: Path, agents: list[ClusterOverlay]) -> None:
    """A container of net1 on h1 sends to 239.1.2.3 (MAC 01:00:5e:01:02:03):
    every other member of net1, on h1, h2 and h3, receives each datagram
    once; no member of net2, on any of the three hosts and joined to the
    same group, sees even one frame of it at layer 2."""
    lab.up(3)
    ov = overlay(lab, tmp_path, agents, "mcast")
    for h in ("h1", "h2", "h3"):
        ov.start(h)
    ov.cli("network", "create", "net1")
    ov.cli("network", "create", "net2")
    places = {"m1": ("net1", "h1"), "m2": ("net1", "h1"), "m3": ("net1", "h2"),
              "m4": ("net1", "h3"), "o1": ("net2", "h1"), "o2": ("net2", "h2"),
              "o3": ("net2", "h3")}
    ns = {}
    for c, (net, h) in places.items():
        ns[c] = lab.add_container(c)
        ov.cli("attach", net, "--host", h, "--netns", ns[c], "--name", c)
    tool = [sys.executable, str(TOOLS / "mcast.py")]
    receivers: dict[str, subprocess.Popen[str]] = {}
    try:
        for c in places:
            if c != "m1":
                receivers[c] = lab.spawn(ns[c], [*tool, "recv", GROUP, str(MPORT), "8"],
                                         stdout=subprocess.PIPE, text=True)
        for c, p in receivers.items():
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", c
        sent = lab.run(ns["m1"], [*tool, "send", GROUP, str(MPORT), "5", "hello"], timeout=20)
        assert sent.returncode == 0, sent.stderr
        heard = {c: json.loads(p.communicate(timeout=30)[0]) for c, p in receivers.items()}
    finally:
        for p in receivers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    want = [f"hello-{i}" for i in range(5)]
    for c in ("m2", "m3", "m4"):
        assert heard[c] == {"udp": want, "frames": 5}, (c, heard[c])
    for c in ("o1", "o2", "o3"):
        assert heard[c] == {"udp": [], "frames": 0}, (c, heard[c])
