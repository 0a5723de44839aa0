"""ARP suppression in the C switch: requests for addresses in the VNI's
table are answered to the asking port and go nowhere else; unknown ones
flood (or are dropped in answer-only mode); probes and announcements are
never answered.  Ports are socketpairs, remotes UDP sockets on loopback,
as in test_switch."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from tests.conftest import root
from uvxlan import native
from uvxlan.errors import NativeError
from uvxlan.reference import wire

from .test_switch import Switch, mac

pytestmark = root

VNI = 7


def arp_request(src_mac: str, src_ip: str, target_ip: str, *, op: int = 1) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src_mac)
                 / ARP(op=op, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00",
                       pdst=target_ip))


@pytest.fixture
def sw() -> Iterator[Switch]:
    s = Switch()
    s.dp.add_vni(VNI)
    s.dp.add_vni(VNI + 1)
    yield s
    s.close()


def test_known_address_answered_locally_and_nothing_floods(sw: Switch) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    r = sw.add_remote(VNI, "127.0.0.2")
    sw.dp.set_arp(VNI, "answer")
    sw.dp.arp_add(VNI, "10.0.0.3", mac(3))

    sw.send_from_port(a, arp_request(mac(1), "10.0.0.2", "10.0.0.3"))

    replies = sw.port_received(a)
    assert len(replies) == 1
    eth = Ether(replies[0])
    assert eth.dst == mac(1) and eth.src == mac(3) and eth.type == 0x0806
    assert (eth[ARP].op, eth[ARP].hwsrc, eth[ARP].psrc) == (2, mac(3), "10.0.0.3")
    assert (eth[ARP].hwdst, eth[ARP].pdst) == (mac(1), "10.0.0.2")
    assert sw.port_received(b) == []
    assert r.received() == []
    assert sw.dp.arp_replies(VNI) == 1


def test_unknown_address_floods_in_answer_mode(sw: Switch) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    r = sw.add_remote(VNI, "127.0.0.2")
    sw.dp.set_arp(VNI, "answer")
    sw.dp.arp_add(VNI, "10.0.0.3", mac(3))
    req = arp_request(mac(1), "10.0.0.2", "10.0.0.9")
    sw.send_from_port(a, req)
    assert sw.port_received(b) == [req]
    assert [d for _, d in r.received()] == [req]
    assert sw.port_received(a) == []
    assert sw.dp.arp_replies(VNI) == 0


def test_unknown_address_dropped_and_counted_in_answer_only_mode(sw: Switch) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    sw.dp.set_arp(VNI, "answer-only")
    before = sw.dp.drops()["arp_unknown"]
    sw.send_from_port(a, arp_request(mac(1), "10.0.0.2", "10.0.0.9"))
    assert sw.port_received(b) == []
    assert sw.dp.drops()["arp_unknown"] == before + 1


def test_off_mode_switches_arp_like_any_frame(sw: Switch) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    sw.dp.arp_add(VNI, "10.0.0.3", mac(3))          # a table, but mode off
    req = arp_request(mac(1), "10.0.0.2", "10.0.0.3")
    sw.send_from_port(a, req)
    assert sw.port_received(b) == [req]
    assert sw.port_received(a) == []


@pytest.mark.parametrize("sender", ["0.0.0.0", "10.0.0.3"], ids=["probe", "announcement"])
def test_probes_and_announcements_are_never_answered(sw: Switch, sender: str) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    sw.dp.set_arp(VNI, "answer")
    sw.dp.arp_add(VNI, "10.0.0.3", mac(3))
    req = arp_request(mac(1), sender, "10.0.0.3")
    sw.send_from_port(a, req)
    assert sw.port_received(a) == []
    assert sw.port_received(b) == [req]


def test_replies_and_other_ops_pass_through(sw: Switch) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    sw.dp.set_arp(VNI, "answer")
    sw.dp.arp_add(VNI, "10.0.0.3", mac(3))
    reply = arp_request(mac(1), "10.0.0.2", "10.0.0.3", op=2)
    sw.send_from_port(a, reply)
    assert sw.port_received(b) == [reply]


def test_tables_are_per_vni(sw: Switch) -> None:
    a = sw.add_port(VNI + 1)
    b = sw.add_port(VNI + 1)
    sw.dp.set_arp(VNI, "answer")
    sw.dp.set_arp(VNI + 1, "answer")
    sw.dp.arp_add(VNI, "10.0.0.3", mac(3))           # known in VNI, not VNI+1
    req = arp_request(mac(1), "10.0.0.2", "10.0.0.3")
    sw.send_from_port(a, req)
    assert sw.port_received(a) == []
    assert sw.port_received(b) == [req]


def test_truncated_arp_is_switched_not_parsed(sw: Switch) -> None:
    a, b = sw.add_port(VNI), sw.add_port(VNI)
    sw.dp.set_arp(VNI, "answer-only")
    full = arp_request(mac(1), "10.0.0.2", "10.0.0.3")
    for n in range(14, 42):
        sw.send_from_port(a, full[:n])
    # Too short to be an ARP request: never answered, switched as frames.
    assert len(sw.port_received(b)) == 42 - 14
    assert sw.port_received(a) == []


def test_bad_arguments(sw: Switch) -> None:
    with pytest.raises(NativeError):
        sw.dp.set_arp(99, "answer")                  # no such VNI
    with pytest.raises(NativeError):
        sw.dp.set_arp(VNI, "sometimes")
    with pytest.raises(NativeError):
        sw.dp.arp_add(VNI, "0.0.0.0", mac(1))
    with pytest.raises(NativeError):
        sw.dp.arp_del(VNI, "10.9.9.9")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=400),
       st.integers(0, 2**32 - 1))
def test_table_matches_a_dict(ops: list[tuple[bool, int]], seed: int) -> None:
    """Open addressing with backward-shift deletion against a dict: the
    addresses are clustered (one /20) so probe runs wrap and overlap."""
    s = Switch()
    try:
        s.dp.add_vni(VNI)
        ref: dict[str, str] = {}
        rnd = random.Random(seed)
        for add, n in ops:
            ip = f"10.0.{n >> 8}.{n & 0xFF}" if n & 0xFF else "10.1.0.1"
            if add:
                m = mac(rnd.randrange(1, 60000))
                s.dp.arp_add(VNI, ip, m)
                ref[ip] = m
            elif ip in ref:
                s.dp.arp_del(VNI, ip)
                del ref[ip]
        for n in range(0, 3001, 7):
            ip = f"10.0.{n >> 8}.{n & 0xFF}"
            assert s.dp.arp_lookup(VNI, ip) == ref.get(ip)
        for ip, m in ref.items():
            assert s.dp.arp_lookup(VNI, ip) == m
    finally:
        s.close()


def test_the_table_grows_to_its_limit_and_a_full_one_says_so(sw: Switch) -> None:
    """A VNI's table starts small and grows (10,000 endpoints in one
    network fit: the fixed table held 3,072) up to UVX_VNI_ARP_MAX; then an
    add is refused and counted."""
    limit = native.lib.UVX_VNI_ARP_MAX
    added = 0
    with pytest.raises(NativeError):
        for n in range(1, limit + 2):
            sw.dp.arp_add(VNI, f"10.{n >> 16}.{(n >> 8) & 0xFF}.{n & 0xFF}", mac(n & 0xFFFF))
            added += 1
    assert added == limit
    assert sw.dp.limits(VNI).arp_full == 1
    for n in (1, 3073, 10000, limit):
        got = sw.dp.arp_lookup(VNI, f"10.{n >> 16}.{(n >> 8) & 0xFF}.{n & 0xFF}")
        assert wire.mac_to_bytes(got or "") == wire.mac_to_bytes(mac(n & 0xFFFF))
    assert wire.mac_to_bytes(sw.dp.arp_lookup(VNI, "10.0.0.1") or "") == wire.mac_to_bytes(mac(1))
