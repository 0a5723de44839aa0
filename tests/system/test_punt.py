"""The punt queue in C (csrc/punt.c), driven directly as test_switch drives
the switch: ports are socketpairs, VTEPs UDP sockets on loopback.  Frames
that match a rule wait for a verdict and go on from where they were taken,
never taken twice; the rest never leave C; a full queue drops and counts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import root
from uvxlan.punt import DROP, FROM_PORT, FROM_WIRE, PASS, SLOTS, TO_PORT, Punt

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
    punt = Punt(sw.dp)
    punt.add(7, 1, ethertype=ARP)
    ip4 = frame(mac(2), mac(1))
    sw.send_from_port(a, ip4)                         # IPv4: not taken
    assert sw.port_received(b) == [ip4] and r.received() == [(1, ip4)]
    assert punt.take() == [] and punt.punted() == 0

    arp = arp_like("ff:ff:ff:ff:ff:ff", mac(1))
    sw.send_from_port(a, arp)
    assert sw.port_received(b) == [] and r.received() == []   # waits for its verdict
    [p] = punt.take()
    assert (p.hook, p.vni, p.port, p.direction, p.data) == (7, 1, a, FROM_PORT, arp)
    punt.verdict(p.token, PASS)
    punt.kick()                                       # no threads: runs here
    assert sw.port_received(b) == [arp]               # flooded, as it would have been
    assert r.received() == [(1, arp)]
    assert punt.take() == [] and punt.punted() == 1   # not taken twice


def test_drop_rewrite_and_frames_from_the_wire(sw: Switch) -> None:
    a = sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    punt = Punt(sw.dp)
    punt.add(1, 1, mac=mac(5), directions=FROM_WIRE)
    f = frame(mac(1), mac(5))
    sw.send_from_remote(r, 1, f)
    [p] = punt.take()
    assert (p.direction, p.port, p.remote, p.data) == (FROM_WIRE, -1, "127.0.0.2", f)
    punt.verdict(p.token, DROP)
    punt.kick()
    assert sw.port_received(a) == []
    assert sw.dp.drops()["hook_drop"] == 1
    assert sw.dp.vni_drops(1)["hook_drop"] == 1

    sw.send_from_remote(r, 1, f)
    [p] = punt.take()
    new = f[:14] + b"rewritten" + f[23:]
    punt.verdict(p.token, PASS, new)
    punt.kick()
    assert sw.port_received(a) == [new]
    # A rewrite is checked again: a multicast source is refused.
    sw.send_from_remote(r, 1, f)
    [p] = punt.take()
    punt.verdict(p.token, PASS, f[:6] + b"\x01" * 6 + f[12:])
    punt.kick()
    assert sw.port_received(a) == []
    assert sw.dp.drops()["bad_inner_frame"] == 1


def test_rules_are_per_vni_and_leave_with_their_hook(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    c, d = sw.add_port(2), sw.add_port(2)
    punt = Punt(sw.dp)
    punt.add(3, 1)
    f = frame(mac(9), mac(8))
    sw.send_from_port(c, f)
    assert sw.port_received(d) == [f]                  # VNI 2: untouched
    sw.send_from_port(a, f)
    assert sw.port_received(b) == [] and len(punt.take()) == 1
    assert punt.delete(3) == 1
    sw.send_from_port(a, f)
    assert sw.port_received(b) == [f]                  # forwarding restored
    assert punt.take() == []


def test_a_full_queue_drops_and_counts(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    punt = Punt(sw.dp)
    punt.add(1, 1, ethertype=ARP)
    for _ in range(SLOTS + 5):
        sw.send_from_port(a, arp_like(mac(2), mac(1)))
    assert sw.dp.drops()["hook_queue_full"] == 5
    assert sw.dp.port_drops(a)["hook_queue_full"] == 5
    ip4 = frame(mac(2), mac(1))
    sw.send_from_port(a, ip4)                          # unmatched: unaffected
    assert sw.port_received(b) == [ip4]
    waiting = punt.take()
    assert len(waiting) == SLOTS
    for p in waiting:
        punt.verdict(p.token, DROP)
    punt.kick()
    sw.send_from_port(a, arp_like(mac(2), mac(1)))     # slots are back
    assert len(punt.take()) == 1


def test_inject_to_and_from_a_port(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    punt = Punt(sw.dp)
    punt.add(1, 2)                                     # slots exist once a hook does
    f = frame("ff:ff:ff:ff:ff:ff", mac(1))
    assert punt.inject(a, TO_PORT, f)
    punt.kick()
    assert sw.port_received(a) == [f] and sw.port_received(b) == []
    assert punt.inject(a, FROM_PORT, f)
    punt.kick()
    assert sw.port_received(b) == [f] and r.received() == [(1, f)]
    assert sw.port_received(a) == []
