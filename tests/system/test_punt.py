"""The punt queue in C (csrc/punt.c), driven directly as test_switch drives
the switch: ports are socketpairs, VTEPs UDP sockets on loopback.  Frames
that match a rule wait for a verdict and go on from where they were taken,
never taken twice; the rest never leave C; a full queue drops and counts."""

from __future__ import annotations

import select
from collections.abc import Iterator

import pytest

from tests.conftest import root
from uvxlan.native import HOOK_SLOTS

from .test_switch import Switch, frame, mac

pytestmark = root

ARP = 0x0806


def arp_like(dst: str, src: str) -> bytes:
    return frame(dst, src)[:12] + b"\x08\x06" + b"a" * 46


@pytest.fixture
def sw() -> Iterator[Switch]:
    s = Switch(ageing_ms=300_000)
    s.dp.add_vni(1)
    s.dp.add_vni(2)
    yield s
    s.close()


def test_only_matching_frames_are_punted_and_pass_goes_on(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    dp = sw.dp
    dp.hook_add(7, 1, ethertype=ARP)
    ip4 = frame(mac(2), mac(1))
    sw.send_from_port(a, ip4)                         # IPv4: not taken
    assert sw.port_received(b) == [ip4] and r.received() == [(1, ip4)]
    assert dp.hook_take() == [] and dp.hook_punted() == 0

    arp = arp_like("ff:ff:ff:ff:ff:ff", mac(1))
    sw.send_from_port(a, arp)
    assert sw.port_received(b) == [] and r.received() == []   # waits for its verdict
    [p] = dp.hook_take()
    assert (p.hook, p.vni, p.port, p.from_wire, p.data) == (7, 1, a, False, arp)
    dp.hook_verdict(p.token, drop=False)
    dp.hook_kick()                                    # no threads: runs here
    assert sw.port_received(b) == [arp]               # flooded, as it would have been
    assert r.received() == [(1, arp)]
    assert dp.hook_take() == [] and dp.hook_punted() == 1   # not taken twice


def test_drop_rewrite_and_frames_from_the_wire(sw: Switch) -> None:
    a = sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    dp = sw.dp
    dp.hook_add(1, 1, mac=mac(5), from_port=False)
    f = frame(mac(1), mac(5))
    sw.send_from_remote(r, 1, f)
    [p] = dp.hook_take()
    assert (p.from_wire, p.port, p.remote, p.data) == (True, -1, "127.0.0.2", f)
    dp.hook_verdict(p.token, drop=True)
    dp.hook_kick()
    assert sw.port_received(a) == []
    assert sw.dp.drops()["hook_drop"] == 1
    assert sw.dp.vni_drops(1)["hook_drop"] == 1

    sw.send_from_remote(r, 1, f)
    [p] = dp.hook_take()
    new = f[:14] + b"rewritten" + f[23:]
    dp.hook_verdict(p.token, drop=False, data=new)
    dp.hook_kick()
    assert sw.port_received(a) == [new]
    # A rewrite is checked again: a multicast source is refused.
    sw.send_from_remote(r, 1, f)
    [p] = dp.hook_take()
    dp.hook_verdict(p.token, drop=False, data=f[:6] + b"\x01" * 6 + f[12:])
    dp.hook_kick()
    assert sw.port_received(a) == []
    assert sw.dp.drops()["bad_inner_frame"] == 1


def test_rules_are_per_vni_and_leave_with_their_hook(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    c, d = sw.add_port(2), sw.add_port(2)
    dp = sw.dp
    dp.hook_add(3, 1)
    f = frame(mac(9), mac(8))
    sw.send_from_port(c, f)
    assert sw.port_received(d) == [f]                  # VNI 2: untouched
    sw.send_from_port(a, f)
    assert sw.port_received(b) == [] and len(dp.hook_take()) == 1
    assert dp.hook_del(3) == 1
    sw.send_from_port(a, f)
    assert sw.port_received(b) == [f]                  # forwarding restored
    assert dp.hook_take() == []


def test_a_full_queue_drops_and_counts(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    dp = sw.dp
    dp.hook_add(1, 1, ethertype=ARP)
    for _ in range(HOOK_SLOTS + 5):
        sw.send_from_port(a, arp_like(mac(2), mac(1)))
    assert sw.dp.drops()["hook_queue_full"] == 5
    assert sw.dp.port_drops(a)["hook_queue_full"] == 5
    ip4 = frame(mac(2), mac(1))
    sw.send_from_port(a, ip4)                          # unmatched: unaffected
    assert sw.port_received(b) == [ip4]
    waiting = dp.hook_take()
    assert len(waiting) == HOOK_SLOTS
    for p in waiting:
        dp.hook_verdict(p.token, drop=True)
    dp.hook_kick()
    sw.send_from_port(a, arp_like(mac(2), mac(1)))     # slots are back
    assert len(dp.hook_take()) == 1


def test_inject_to_and_from_a_port(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    dp = sw.dp
    dp.hook_add(1, 2)                                  # slots exist once a hook does
    f = frame("ff:ff:ff:ff:ff:ff", mac(1))
    assert dp.hook_inject(a, f, to_container=True)
    dp.hook_kick()
    assert sw.port_received(a) == [f] and sw.port_received(b) == []
    assert dp.hook_inject(a, f, to_container=False)
    dp.hook_kick()
    assert sw.port_received(b) == [f] and r.received() == [(1, f)]
    assert sw.port_received(a) == []


@pytest.mark.parametrize("first", ["hook", "threads"])
def test_verdicts_run_on_the_worker_threads(sw: Switch, first: str) -> None:
    """With the datapath's threads: the eventfd says frames wait, and a
    kick wakes the worker that took them (a hook added before or after
    the threads start)."""
    a, b = sw.add_port(1), sw.add_port(1)
    dp = sw.dp
    if first == "hook":
        dp.hook_add(1, 1, ethertype=ARP)
    dp.start_threads()
    try:
        if first == "threads":
            dp.hook_add(1, 1, ethertype=ARP)
        arp = arp_like("ff:ff:ff:ff:ff:ff", mac(1))
        sw.ports[a].send(arp)
        assert select.select([dp.hook_fd()], [], [], 2.0)[0], "no wake-up for the loop"
        [p] = dp.hook_take()
        assert sw.port_received(b) == []
        dp.hook_verdict(p.token, drop=False)
        dp.hook_kick()
        assert sw.port_received(b, wait=2.0) == [arp]
    finally:
        dp.stop_threads()
