"""The ICMP answers to frames too big for the underlay (csrc/pmtud.c), byte
for byte against the same answers built by scapy, and every read kept
within the frame: each truncation of a frame, and random bytes, get either
no answer or a well-formed one.  No root: the test module's hook calls
pmtud_build_reply alone.  tests/system/test_mtu.py checks the same answers
coming out of a real datapath."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from tests.support import native_testing as native
from tests.support.codec_vectors import ones_sum

SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
ROOM = 1500 - 36           # the largest inner frame a 1500 underlay carries


def ipv4(size: int, ttl: int = 61) -> Packet:
    pkt = IP(src="10.0.0.2", dst="10.0.0.3", ttl=ttl, flags="DF", id=9) / UDP(sport=1, dport=2)
    return pkt / Raw(bytes(i & 0xFF for i in range(size - len(pkt))))


def ipv6(size: int, hlim: int = 57) -> Packet:
    pkt = IPv6(src="fd00::2", dst="fd00::3", hlim=hlim) / UDP(sport=1, dport=2)
    return pkt / Raw(bytes(i & 0xFF for i in range(size - len(pkt))))


@pytest.mark.parametrize("vlan", [None, 100])
def test_ipv4_answer_is_what_scapy_builds(vlan: int | None) -> None:
    orig = ipv4(2000)
    head = Ether(src=SRC_MAC, dst=DST_MAC)
    frame = bytes(head / Dot1Q(vlan=vlan, prio=3) / orig if vlan else head / orig)
    mtu = ROOM - (18 if vlan else 14)
    back = Ether(src=DST_MAC, dst=SRC_MAC)
    icmp = (IP(src="10.0.0.3", dst="10.0.0.2", ttl=61, flags="DF", id=0, tos=0)
            / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(bytes(orig)[:548]))
    want = bytes(back / Dot1Q(vlan=vlan, prio=3) / icmp if vlan else back / icmp)
    assert native.pmtud_reply(frame, ROOM) == want


def test_ipv6_answer_is_what_scapy_builds() -> None:
    orig = ipv6(2000)
    frame = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / orig)
    want = bytes(Ether(src=DST_MAC, dst=SRC_MAC)
                 / IPv6(src="fd00::3", dst="fd00::2", hlim=57)
                 / ICMPv6PacketTooBig(mtu=1450) / Raw(bytes(orig)[:1232]))
    assert native.pmtud_reply(frame, ROOM) == want


def test_a_short_packet_is_quoted_whole_and_its_padding_not() -> None:
    orig = ipv4(100)
    frame = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / orig) + b"\0" * 30   # Ethernet padding
    reply = native.pmtud_reply(frame, 60)     # an underlay of 96 takes 60-byte frames
    assert reply == b"", "an MTU under 576 is never told"
    reply = native.pmtud_reply(frame, 14 + 576)
    assert reply[14 + 28:] == bytes(orig)


def well_formed(reply: bytes) -> None:
    """An answer's headers and checksums hold together."""
    r = Ether(reply)
    l3 = 18 if Dot1Q in r else 14
    raw = reply[l3:]
    if IP in r:
        assert r[IP].len == len(raw) <= 576
        assert ones_sum(raw[:20]) == 0xFFFF and ones_sum(raw[20:]) == 0xFFFF
        assert (r[ICMP].type, r[ICMP].code) == (3, 4) and r[ICMP].nexthopmtu >= 576
    else:
        ip6 = r[IPv6]
        assert ip6.plen == len(raw) - 40 and len(raw) <= 1280
        pseudo = raw[24:40] + raw[8:24] + struct.pack("!I3xB", ip6.plen, 58)
        assert ones_sum(pseudo + raw[40:]) == 0xFFFF
        assert r[ICMPv6PacketTooBig].mtu >= 1280


@pytest.mark.parametrize("v6", [False, True])
def test_every_truncation_gets_no_answer_or_a_well_formed_one(v6: bool) -> None:
    frame = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / (ipv6(1600) if v6 else ipv4(1600)))
    replies = [native.pmtud_reply(frame[:n], ROOM) for n in range(len(frame) + 1)]
    # Answered from the end of the IP header (and, for IPv6, of the first
    # 8 bytes after it, where an extension header could be) on...
    first = next(n for n, r in enumerate(replies) if r)
    assert first <= 14 + 40 + 8 and all(replies[first:])
    # ...and each answer well-formed (scapy is slow: the short ones, where
    # bounds matter, then a sample).
    for n in [*range(first, first + 100), *range(first + 100, len(frame) + 1, 97)]:
        well_formed(replies[n])


@settings(max_examples=600, deadline=None)
@given(st.binary(min_size=0, max_size=1700), st.integers(min_value=15, max_value=65535 - 36))
def test_random_bytes_never_make_a_bad_answer(data: bytes, room: int) -> None:
    reply = native.pmtud_reply(data, room)
    if reply:
        well_formed(reply)


@settings(max_examples=600, deadline=None)
@given(st.booleans(), st.binary(min_size=0, max_size=1600), st.booleans(),
       st.integers(min_value=0, max_value=15))
def test_random_ip_headers_never_make_a_bad_answer(v6: bool, body: bytes, tagged: bool,
                                                   ihl: int) -> None:
    """Random headers behind the version (and, for IPv4, DF alone in the
    fragment field, so that most are answered): every IHL, every next
    header chain, every length."""
    head = bytes.fromhex("020000000002" "020000000001")
    if tagged:
        head += struct.pack("!HH", 0x8100, 7)
    b = bytearray(body)
    if b:
        b[0] = (0x60 | (b[0] & 0x0F)) if v6 else (0x40 | ihl)
    if not v6 and len(b) >= 8:
        b[6:8] = b"\x40\x00"
    frame = head + struct.pack("!H", 0x86DD if v6 else 0x0800) + bytes(b)
    reply = native.pmtud_reply(frame, 1464)
    if reply:
        well_formed(reply)
        assert reply[:12] == frame[6:12] + frame[:6]
