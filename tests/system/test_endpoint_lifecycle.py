"""What happens to a container's TAP between agents and when its netns
goes: only root may attach to a TAP no agent holds; an endpoint whose
netns is missing at start does not stop the agent; a TAP whose netns name
is deleted goes with it, even with a process still inside; settle() and
a leave remove exactly the TAPs no longer wanted.

Real agents and real TAPs in lab namespaces; nothing is mocked."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import OverlayFactory, ping, root
from uvxlan import config, netlink
from uvxlan.config import EndpointConfig
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Placement
from uvxlan.node import Node
from uvxlan.state import AgentState, marker

pytestmark = root

PLACEMENTS = [Placement("c1", "h1", "net1", "10.0.0.1/24"),
              Placement("c2", "h2", "net1", "10.0.0.2/24")]

# Run inside a container's netns: /dev/net/tun opened as root (the node is
# 0600 here; on most hosts it is 0666), then every privilege dropped, then
# an attach to its eth0, as any process in a container could try.
ATTACH_AS_NOBODY = r"""
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"eth0", 0x1002))
except OSError as exc:
    print(exc.errno)
else:
    print("attached")
"""

# A persistent TAP eth0 with no owner, as an agent before this fix made.
MAKE_OLD_TAP = r"""
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"eth0", 0x1002))
fcntl.ioctl(fd, 0x400454CB, 1)
"""

# Holds a (not persistent) TAP eth0 in its netns until it is killed.
HOLD_A_TAP = r"""
import fcntl, os, struct, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"eth0", 0x1002))
print("held", flush=True)
time.sleep(60)
"""


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def attach_as_nobody(lab: Lab, ns: str) -> str:
    done = lab.run(ns, [sys.executable, "-c", ATTACH_AS_NOBODY], check=True)
    return done.stdout.strip()


# --- Who may attach to a TAP no agent holds (review item 2) -----------------

@pytest.mark.parametrize("how", ["made", "adopted"])
def test_only_root_attaches_to_a_tap_no_agent_holds(
        overlay: OverlayFactory, lab: Lab, how: str) -> None:
    ov = overlay({"net1": 100}, PLACEMENTS, run=["h2"])
    ns1 = lab.container_netns("c1")
    if how == "adopted":
        # One an older agent left: no owner.  This agent must set one.
        lab.run(ns1, [sys.executable, "-c", MAKE_OLD_TAP], check=True)
        netlink.link_configure("eth0", ns1, alias=marker(f"{lab.name}-h1"))
    ov.start("h1")
    before = netlink.link_state("eth0", ns1)
    assert before is not None and before["alias"] == marker(f"{lab.name}-h1")
    assert ov.stop("h1") == 0                # the TAP stays, no fd attached
    assert attach_as_nobody(lab, ns1) == str(errno.EPERM)
    # Still there, still free for the next agent, which adopts it.
    ov.start("h1")
    assert netlink.link_state("eth0", ns1) == before
    assert len(ov.query("h1", "stats")["ports"]) == 1


# --- Which leftover TAPs a node removes (review items 4 and 10) --------------

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def make_node(lab: Lab, tmp_path: Path) -> Iterator[Callable[[], Node]]:
    """Nodes of one agent name on loopback (no traffic is sent), each with
    the state file the previous one left; closed (TAPs kept) at the end."""
    lab.up(1)
    made: list[Node] = []
    port = free_udp_port()

    def make() -> Node:
        cfg = config.parse({"host": {"name": f"{lab.name}-n", "underlay": "127.0.0.1",
                                     "port": port, "control_dir": str(tmp_path),
                                     "threads": False, "offload": "off"}})
        node = Node(cfg, AgentState.load(str(tmp_path / "n.state")))
        node.start()
        node.add_network("net1", 100)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            node.close()


def endpoint(lab: Lab, container: str, ip: str) -> EndpointConfig:
    return EndpointConfig("net1", lab.add_container(container),
                          ipaddress.IPv4Interface(ip), "02:00:00:00:00:" + ip[-2:])


def test_settle_keeps_the_taps_still_wanted_and_removes_the_others(
        lab: Lab, make_node: Callable[[], Node]) -> None:
    first = make_node()
    e1, e2 = endpoint(lab, "c1", "10.0.0.11/24"), endpoint(lab, "c2", "10.0.0.12/24")
    for e in (e1, e2):
        first.add_endpoint(e, 100, 1450)
    before = netlink.link_state("eth0", e1.netns)
    first.close()                                      # both TAPs stay
    # The next agent: c1's attach failed this round (nothing taken up),
    # c2 was detached while no agent ran.
    second = make_node()
    second.settle(wanted={(e1.netns, "eth0")})
    assert netlink.link_state("eth0", e1.netns) == before
    assert netlink.link_state("eth0", e2.netns) is None
    assert set(second.state.endpoints) == {(e1.netns, "eth0")}
    # Retried later: the same interface, adopted.
    assert second.add_endpoint(e1, 100, 1450).adopted
    assert netlink.link_state("eth0", e1.netns) == before


def test_a_leave_before_the_first_sync_removes_the_taps_not_yet_adopted(
        lab: Lab, make_node: Callable[[], Node], tmp_path: Path) -> None:
    first = make_node()
    e1 = endpoint(lab, "c1", "10.0.0.11/24")
    first.add_endpoint(e1, 100, 1450)
    first.close()
    second = make_node()                               # nothing adopted yet
    assert netlink.link_state("eth0", e1.netns) is not None
    second.close(leave=True)
    assert netlink.link_state("eth0", e1.netns) is None
    assert not (tmp_path / "n.state").exists()


# --- Lost endpoints (review items 11, 12, 18) ---------------------------------

def test_a_missing_netns_at_start_does_not_stop_the_agent(
        overlay: OverlayFactory, lab: Lab) -> None:
    ov = overlay({"net1": 100}, PLACEMENTS)
    ns1, ns2 = lab.container_netns("c1"), lab.container_netns("c2")
    assert ov.stop("h1") == 0
    netlink.netns_remove(ns1)                # the container stopped meanwhile
    ov.start("h1")
    (lost,) = ov.query("h1", "stats")["lost"]
    assert lost["netns"] == ns1 and "does not exist" in lost["error"]
    netlink.netns_create(ns1)
    eventually(lambda: not ov.query("h1", "stats")["lost"], 5, "the endpoint made")
    assert len(ov.query("h1", "stats")["ports"]) == 1
    assert ping(lab, ns2, "10.0.0.1") == 3


def test_a_deleted_netns_with_a_process_inside_loses_its_tap(
        overlay: OverlayFactory, lab: Lab) -> None:
    ov = overlay({"net1": 100}, PLACEMENTS)
    ns1 = lab.container_netns("c1")
    inside = lab.spawn(ns1, [sys.executable, "-c", "import time; print('in', flush=True);"
                             " time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        # Inside before the name goes (else `ip netns exec` finds no netns).
        assert inside.stdout is not None and inside.stdout.readline() == b"in\n"
        netlink.netns_remove(ns1)             # `ip netns del`: the process stays
        eventually(lambda: bool(ov.query("h1", "stats")["lost"]), 5, "the endpoint lost")

        def links() -> str:
            return subprocess.run(["nsenter", "-t", str(inside.pid), "-n", "ip", "-o", "link"],
                                  capture_output=True, text=True, check=True).stdout

        # No agent reaches it by name again: it must not stay, persistent.
        eventually(lambda: "eth0" not in links(), 5, "the TAP gone from the old netns")
    finally:
        inside.kill()
        inside.wait()


def test_an_endpoint_not_made_again_is_logged_once_per_episode(
        lab: Lab, make_node: Callable[[], Node], caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    node = make_node()
    e1 = endpoint(lab, "c1", "10.0.0.11/24")
    node.add_endpoint(e1, 100, 1450)
    netlink.netns_remove(e1.netns)
    assert node.check_endpoints() == [(e1, f"netns {e1.netns} is gone")]
    # Back, with an eth0 of ours that another process holds: adopting it
    # fails with EBUSY at every check, after the state file is looked at.
    netlink.netns_create(e1.netns)
    holder = lab.spawn(e1.netns, [sys.executable, "-c", HOLD_A_TAP], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        netlink.link_configure("eth0", e1.netns, alias=marker(f"{lab.name}-n"))
        written = (tmp_path / "n.state").stat().st_ino
        with caplog.at_level(logging.WARNING, logger="uvxlan.node"):
            for _ in range(3):
                assert node.check_endpoints() == []
        # Nor is the state file written again (fsync'd) at every retry.
        assert (tmp_path / "n.state").stat().st_ino == written
    finally:
        holder.kill()
        holder.wait()
    told = [r for r in caplog.records if "not made again yet" in r.getMessage()]
    assert len(told) == 1, told
    assert "held by another process" in told[0].getMessage()
    assert node.check_endpoints() == [(e1, None)]


# --- A netns given as a path (container runtimes hand out paths) -------------

def test_an_endpoint_in_a_netns_given_as_a_path(
        lab: Lab, make_node: Callable[[], Node]) -> None:
    node = make_node()
    by_mount = endpoint(lab, "c1", "10.0.0.11/24")
    by_mount = EndpointConfig("net1", f"/run/netns/{by_mount.netns}", by_mount.address,
                              by_mount.mac)
    # A process' own netns, as a runtime without a bind mount hands it out.
    inside = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        path = f"/proc/{inside.pid}/ns/net"
        eventually(lambda: netlink.netns_inode(path) != netlink.netns_inode("/proc/self/ns/net"),
                   5, "the process in its own netns")
        by_pid = EndpointConfig("net1", path, ipaddress.IPv4Interface("10.0.0.12/24"),
                                "02:00:00:00:00:12")
        for e in (by_mount, by_pid):
            node.add_endpoint(e, 100, 1450)
            state = netlink.link_state("eth0", e.netns)
            assert state is not None and state["mtu"] == 1450, e.netns
        assert not node.check_endpoints()
        inside.kill()
        inside.wait()
        # The process' netns went with it: the endpoint is lost, not kept.
        eventually(lambda: bool(node.check_endpoints() or node.lost), 5,
                   "the endpoint of the ended process lost")
        assert not netlink.netns_exists(path)
        assert netlink.link_state("eth0", by_mount.netns) is not None
    finally:
        if inside.poll() is None:
            inside.kill()
            inside.wait()
