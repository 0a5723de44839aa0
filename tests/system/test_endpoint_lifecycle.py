"""What happens to a container's TAP between agents and when its netns
goes: only root may attach to a TAP no agent holds; an endpoint whose
netns is missing at start does not stop the agent; a TAP whose netns name
is deleted goes with it, even with a process still inside; settle() and
a leave remove exactly the TAPs no longer wanted.

Real agents and real TAPs in lab namespaces; nothing is mocked."""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import OverlayFactory, root
from uvxlan import netlink
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Placement
from uvxlan.state import marker

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
