"""The VXLAN codec: the C fast path (through its test hooks,
tests/support/native_testing.py) against the pure-Python
reference (uvxlan.reference.wire), against scapy's VXLAN layer, and against tshark.

Every C-vs-Python comparison is byte-for-byte.  The hypothesis tests are
derandomized, so a run is repeatable; a failure prints the minimal input.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from tests.support import native_testing as native
from tests.support.codec_vectors import (
    DST_MAC,
    IMPLS,
    SRC_MAC,
    UNDER_DST,
    UNDER_SRC,
    verifies,
    zero_sum_frame,
)
from uvxlan.errors import NativeError
from uvxlan.proto import mac_to_str
from uvxlan.reference import wire

FUZZ = settings(
    derandomize=True,
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

def parsed(p: Any) -> tuple[str, int | None, int | None]:
    """native.Parsed and wire.Parsed are distinct classes: compare fields."""
    return (p.reason, p.vni, p.inner_offset)


def inner_frame(**ip: Any) -> bytes:
    return bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2", **ip)
                 / ICMP())


# --- independent checksum and hash helpers (not the code under test) ------


def fnv1a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


# --- strategies ---------------------------------------------------------------

macs = st.binary(min_size=6, max_size=6).map(mac_to_str)
ipv4s = st.integers(0, 2**32 - 1).map(lambda i: socket.inet_ntoa(i.to_bytes(4, "big")))
ipv6s = st.binary(min_size=16, max_size=16).map(
    lambda b: socket.inet_ntop(socket.AF_INET6, b))
ports = st.integers(0, 65535)
vnis = st.integers(0, wire.VNI_MAX)
payloads = st.binary(max_size=64)

KINDS = ["ipv4-tcp", "ipv4-udp", "ipv4-sctp", "ipv4-icmp", "ipv4-options", "ipv4-frag",
         "ipv4-later-frag", "ipv6-tcp", "ipv6-udp", "ipv6-sctp", "ipv6-frag-ext",
         "vlan-ipv4-udp", "vlan-ipv6-tcp", "qinq-ipv4", "dot1ad-ipv4", "arp",
         "ipv4-bad-vihl", "vlan-ipv4-bad-vihl"]


@st.composite
def scapy_frames(draw: st.DrawFn) -> bytes:
    """Well-formed frames of many kinds, then maybe truncated or with one
    byte overwritten (a bad IP version, a short IHL, a lying ethertype)."""
    kind = draw(st.sampled_from(KINDS))
    eth = Ether(src=draw(macs), dst=draw(macs))
    sport, dport, data = draw(ports), draw(ports), Raw(draw(payloads))
    l4: Any
    if kind.endswith("tcp"):
        l4 = TCP(sport=sport, dport=dport)
    elif kind.endswith("udp"):
        l4 = UDP(sport=sport, dport=dport)
    elif kind.endswith("sctp"):
        l4 = SCTP(sport=sport, dport=dport)
    else:
        l4 = ICMP()
    v4 = IP(src=draw(ipv4s), dst=draw(ipv4s), ttl=draw(st.integers(1, 255)),
            id=draw(ports))
    v6 = IPv6(src=draw(ipv6s), dst=draw(ipv6s))
    pkt: Any
    if kind in ("ipv4-tcp", "ipv4-udp", "ipv4-sctp", "ipv4-icmp"):
        pkt = eth / v4 / l4 / data
    elif kind.endswith("bad-vihl"):
        # Any version/IHL byte: not 4, shorter than 20, longer than the frame.
        tagged = kind.startswith("vlan")
        l3 = Dot1Q(vlan=1) / v4 if tagged else v4
        raw = bytearray(bytes(eth / l3 / UDP(sport=sport) / data))
        raw[18 if tagged else 14] = draw(st.integers(0, 255))
        pkt = Raw(bytes(raw))
    elif kind == "ipv4-options":
        nops = draw(st.integers(1, 40))
        pkt = eth / IP(src=v4.src, dst=v4.dst, options=[IPOption_NOP()] * nops) \
            / TCP(sport=sport, dport=dport) / data
    elif kind == "ipv4-frag":
        v4.flags = "MF"
        pkt = eth / v4 / UDP(sport=sport, dport=dport) / data
    elif kind == "ipv4-later-frag":
        v4.frag = draw(st.integers(1, 0x1FFF))
        v4.proto = 6
        pkt = eth / v4 / data
    elif kind in ("ipv6-tcp", "ipv6-udp", "ipv6-sctp"):
        pkt = eth / v6 / l4 / data
    elif kind == "ipv6-frag-ext":
        pkt = eth / v6 / IPv6ExtHdrFragment() / UDP(sport=sport, dport=dport) / data
    elif kind == "vlan-ipv4-udp":
        pkt = eth / Dot1Q(vlan=draw(st.integers(0, 4095))) / v4 \
            / UDP(sport=sport, dport=dport) / data
    elif kind == "vlan-ipv6-tcp":
        pkt = eth / Dot1Q(vlan=draw(st.integers(0, 4095))) / v6 \
            / TCP(sport=sport, dport=dport) / data
    elif kind == "qinq-ipv4":
        pkt = eth / Dot1Q(vlan=100) / Dot1Q(vlan=200) / v4 / TCP(sport=sport, dport=dport)
    elif kind == "dot1ad-ipv4":
        pkt = eth / Dot1AD(vlan=100) / Dot1Q(vlan=200) / v4 / UDP(sport=sport, dport=dport)
    else:
        pkt = eth / ARP(psrc=v4.src, pdst=v4.dst)
    frame = bytearray(bytes(pkt))
    how = draw(st.sampled_from(["whole", "truncated", "mutated"]))
    if how == "truncated":
        frame = frame[:draw(st.integers(0, len(frame)))]
    elif how == "mutated":
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    return bytes(frame)


frames = st.one_of(scapy_frames(), st.binary(max_size=128))


@st.composite
def src_ranges(draw: st.DrawFn) -> tuple[int, int]:
    lo = draw(ports)
    return lo, draw(st.integers(lo, 65535))


# --- known vectors ------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_documented_header_vector(impl: Any) -> None:
    dgram = impl.build_datagram(42, b"", 1024, 4789, UNDER_SRC, UNDER_DST)
    assert dgram.hex(" ") == "04 00 12 b5 00 10 00 00 08 00 00 00 00 00 2a 00"
    assert dgram == bytes(UDP(sport=1024, dport=4789) / VXLAN(flags=0x08, vni=42))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("vni", "sport", "dport"), [
    (42, 1024, 4789), (0, 49152, 4789), (1, 65535, 8472), (wire.VNI_MAX, 0, 4789),
    (0x123456, 54321, 8472),
])
def test_scapy_vectors_without_checksum(impl: Any, vni: int, sport: int, dport: int) -> None:
    inner = Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    expect = bytes(UDP(sport=sport, dport=dport, chksum=0) / VXLAN(flags=0x08, vni=vni) / inner)
    assert impl.build_datagram(vni, bytes(inner), sport, dport, UNDER_SRC, UNDER_DST) == expect


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("inner", [
    Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
    # Odd length: the last byte is padded for the sum.
    Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b"abc"),
    Ether(src="0a:bb:cc:dd:ee:ff", dst="ff:ff:ff:ff:ff:ff") / ARP(),
    Ether(src=SRC_MAC, dst=DST_MAC) / IPv6() / TCP() / Raw(b"\xff" * 999),
], ids=["icmp", "odd", "arp", "ipv6-big"])
@pytest.mark.parametrize(("saddr", "daddr"), [
    (UNDER_SRC, UNDER_DST), ("10.255.0.1", "172.16.254.3"), ("255.255.255.254", "1.0.0.1"),
])
def test_scapy_vectors_with_checksum(impl: Any, inner: Any, saddr: str, daddr: str) -> None:
    outer = IP(src=saddr, dst=daddr) / UDP(sport=50000, dport=4789) \
        / VXLAN(flags=0x08, vni=4242) / inner
    raw = bytes(outer)
    expect = raw[(raw[0] & 0x0F) * 4:]
    got = impl.build_datagram(4242, bytes(inner), 50000, 4789, saddr, daddr, csum=True)
    assert got == expect
    assert got[6:8] != b"\x00\x00"
    assert verifies(got, saddr, daddr)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dport", [4789, 8472])
def test_scapy_decodes_our_datagrams(impl: Any, dport: int) -> None:
    inner = Ether(src="0a:00:00:00:00:07", dst="0a:00:00:00:00:08") \
        / IP(src="10.9.8.7", dst="10.9.8.6") / TCP(sport=1234, dport=80)
    for vni in (1, 42, 0xABCDEF, wire.VNI_MAX):
        for csum in (False, True):
            dgram = impl.build_datagram(vni, bytes(inner), 49999, dport,
                                        UNDER_SRC, UNDER_DST, csum=csum)
            pkt = IP(src=UNDER_SRC, dst=UNDER_DST, proto=17) / Raw(dgram)
            got = IP(bytes(pkt))
            assert got.haslayer(VXLAN), got.summary()
            vx = got[VXLAN]
            assert vx.vni == vni
            assert int(vx.flags) == 0x08
            assert vx.reserved1 == 0 and vx.reserved2 == 0
            assert got[UDP].dport == dport and got[UDP].sport == 49999
            assert got[UDP].len == len(dgram)
            assert got[Ether].src == "0a:00:00:00:00:07"
            assert got[Ether].dst == "0a:00:00:00:00:08"
            assert vx[IP].dst == "10.9.8.6"
            assert got[TCP].dport == 80
            assert bytes(vx.payload) == bytes(inner)
            if csum:
                # scapy recomputes the checksum on a copy with it cleared.
                again = got.copy()
                del again[UDP].chksum
                assert IP(bytes(again))[UDP].chksum == got[UDP].chksum
            else:
                assert got[UDP].chksum == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_udp_length_and_vni_fields(impl: Any) -> None:
    for n in (0, 1, 14, 15, 1500, 9000):
        frame = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        dgram = impl.build_datagram(0x010203, frame, 7, 8, UNDER_SRC, UNDER_DST)
        assert len(dgram) == 16 + n
        assert struct.unpack("!HHHH", dgram[:8]) == (7, 8, 16 + n, 0)
        assert dgram[8:16] == bytes([0x08, 0, 0, 0, 1, 2, 3, 0])
        assert dgram[16:] == frame


def test_oversized_frame_is_refused() -> None:
    biggest = bytes(0xFFFF - 16)
    for csum in (False, True):
        a = native.build_datagram(1, biggest, 1, 2, UNDER_SRC, UNDER_DST, csum)
        b = wire.build_datagram(1, biggest, 1, 2, UNDER_SRC, UNDER_DST, csum)
        assert a == b and len(a) == 0xFFFF
        assert a[4:6] == b"\xff\xff"
        if csum:
            assert verifies(a, UNDER_SRC, UNDER_DST)
    with pytest.raises(NativeError):
        native.build_datagram(1, biggest + b"x", 1, 2, UNDER_SRC, UNDER_DST)
    with pytest.raises(ValueError):
        wire.build_datagram(1, biggest + b"x", 1, 2, UNDER_SRC, UNDER_DST)


def test_vni_out_of_range_is_refused_by_both() -> None:
    for vni in (1 << 24, -1):
        with pytest.raises(ValueError):
            wire.build_datagram(vni, inner_frame(), 1, 2, UNDER_SRC, UNDER_DST)
        with pytest.raises(ValueError):
            native.build_datagram(vni, inner_frame(), 1, 2, UNDER_SRC, UNDER_DST)


# --- C and Python agree -------------------------------------------------------


@FUZZ
@given(vni=vnis, frame=frames, sport=ports, dport=ports, saddr=ipv4s, daddr=ipv4s,
       csum=st.booleans())
def test_build_datagram_c_equals_python(vni: int, frame: bytes, sport: int, dport: int,
                                        saddr: str, daddr: str, csum: bool) -> None:
    c = native.build_datagram(vni, frame, sport, dport, saddr, daddr, csum)
    py = wire.build_datagram(vni, frame, sport, dport, saddr, daddr, csum)
    assert c == py
    assert c[16:] == frame and c[8:16] == wire.build_header(vni)
    if csum:
        assert c[6:8] != b"\x00\x00"
        assert verifies(c, saddr, daddr)
    else:
        assert c[6:8] == b"\x00\x00"


@FUZZ
@given(frame=frames)
def test_flow_hash_and_check_inner_c_equals_python(frame: bytes) -> None:
    assert native.flow_hash(frame) == wire.flow_hash(frame)
    assert native.check_inner(frame) == wire.check_inner(frame)


@FUZZ
@given(hash_=st.integers(0, 2**32 - 1), rng=src_ranges())
def test_src_port_c_equals_python_and_in_range(hash_: int, rng: tuple[int, int]) -> None:
    lo, hi = rng
    port = native.src_port(hash_, lo, hi)
    assert port == wire.src_port(hash_, lo, hi)
    assert lo <= port <= hi


@st.composite
def vxlan_payloads(draw: st.DrawFn) -> bytes:
    """Valid headers, then maybe one reserved bit set or the I flag
    cleared, then an inner frame, then maybe truncated anywhere up to 8+14."""
    hdr = bytearray(wire.build_header(draw(vnis)))
    change = draw(st.sampled_from(["none", "reserved", "clear-i", "random-flags"]))
    if change == "reserved":
        byte = draw(st.sampled_from([0, 1, 2, 3, 7]))
        bits = [0, 1, 2, 4, 5, 6, 7] if byte == 0 else list(range(8))
        hdr[byte] |= 1 << draw(st.sampled_from(bits))
    elif change == "clear-i":
        hdr[0] &= ~0x08
    elif change == "random-flags":
        hdr[0] = draw(st.integers(0, 255))
    pkt = bytes(hdr) + draw(frames)
    if draw(st.booleans()):
        pkt = pkt[:draw(st.integers(0, 8 + 14))]
    return pkt


@FUZZ
@given(pkt=st.one_of(st.binary(max_size=64), vxlan_payloads()), accept=st.booleans())
def test_parse_c_equals_python(pkt: bytes, accept: bool) -> None:
    c = native.parse(pkt, accept_reserved=accept)
    py = wire.parse(pkt, accept_reserved=accept)
    assert parsed(c) == parsed(py)
    if c.reason == "pass":
        assert c.inner_offset == 8
        assert c.vni == int.from_bytes(pkt[4:7], "big")


# --- parse rules --------------------------------------------------------------

RESERVED_BITS = [(0, bit) for bit in (0, 1, 2, 4, 5, 6, 7)] + [
    (byte, bit) for byte in (1, 2, 3, 7) for bit in range(8)]


def good_payload(vni: int = 0x123456) -> bytes:
    return wire.build_header(vni) + inner_frame()


@pytest.mark.parametrize("impl", IMPLS)
def test_good_payload_passes(impl: Any) -> None:
    for vni in (0, 1, 0x123456, wire.VNI_MAX):
        assert parsed(impl.parse(good_payload(vni))) == ("pass", vni, 8)
    # Exactly a header and a bare Ethernet header is enough.
    assert impl.parse(good_payload()[:8 + 14]).reason == "pass"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("accept", [False, True])
def test_every_truncated_length_is_truncated(impl: Any, accept: bool) -> None:
    for source in (good_payload(), b"\xff" * 8, b"\x00" * 8):
        for n in range(8):
            assert parsed(impl.parse(source[:n], accept)) == ("truncated", None, None), n


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("accept", [False, True])
def test_i_flag_clear_is_bad_flags(impl: Any, accept: bool) -> None:
    for flags in (0x00, 0x80, 0x01, 0xF7):
        pkt = bytes([flags]) + good_payload()[1:]
        assert impl.parse(pkt, accept).reason == "bad_flags", hex(flags)
    # Checked before the inner frame and before the reserved fields.
    assert impl.parse(b"\x00" * 8, accept).reason == "bad_flags"
    assert impl.parse(b"\xf7" + b"\xff" * 7, accept).reason == "bad_flags"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("byte", "bit"), RESERVED_BITS,
                         ids=[f"byte{b}-bit{i}" for b, i in RESERVED_BITS])
def test_each_reserved_bit(impl: Any, byte: int, bit: int) -> None:
    pkt = bytearray(good_payload(0xABCDEF))
    pkt[byte] |= 1 << bit
    assert parsed(impl.parse(bytes(pkt))) == ("reserved_bits", None, None)
    assert parsed(impl.parse(bytes(pkt), accept_reserved=False)) == ("reserved_bits", None, None)
    # The VNI is bytes 4..6 only, whatever the reserved byte 7 holds.
    assert parsed(impl.parse(bytes(pkt), accept_reserved=True)) == ("pass", 0xABCDEF, 8)


@pytest.mark.parametrize("impl", IMPLS)
def test_all_reserved_bits_with_accept_reserved(impl: Any) -> None:
    pkt = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0xFF]) + inner_frame()
    assert parsed(impl.parse(pkt, True)) == ("pass", 1, 8)
    assert impl.parse(pkt, False).reason == "reserved_bits"
    # The reserved check comes before the inner frame's.
    assert impl.parse(pkt[:8], False).reason == "reserved_bits"
    assert impl.parse(pkt[:8], True).reason == "bad_inner_frame"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("accept", [False, True])
def test_short_inner_frame(impl: Any, accept: bool) -> None:
    pkt = good_payload()
    for n in range(8, 8 + 14):
        assert parsed(impl.parse(pkt[:n], accept)) == ("bad_inner_frame", None, None), n
        assert impl.check_inner(pkt[8:n]) == "bad_inner_frame"
    assert impl.parse(pkt[:8 + 14], accept).reason == "pass"


BAD_SOURCES = ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01",
               "03:00:00:00:00:00", "00:00:00:00:00:00"]
GOOD_SOURCES = ["02:00:00:00:00:01", "00:00:00:00:00:01", "00:00:00:00:01:00",
                "00:01:00:00:00:00", "fe:ff:ff:ff:ff:ff", "00:00:00:01:00:00"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("src", BAD_SOURCES)
def test_bad_source_mac_is_bad_inner_frame(impl: Any, src: str) -> None:
    frame = bytes(Ether(src=src, dst=DST_MAC) / IP() / ICMP())
    assert impl.check_inner(frame) == "bad_inner_frame"
    assert parsed(impl.parse(wire.build_header(7) + frame)) == ("bad_inner_frame", None, None)
    assert impl.parse(wire.build_header(7) + frame, True).reason == "bad_inner_frame"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("src", GOOD_SOURCES)
def test_unicast_source_mac_passes(impl: Any, src: str) -> None:
    # A multicast or broadcast destination is fine: that is flooding.
    for dst in (DST_MAC, "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb"):
        frame = bytes(Ether(src=src, dst=dst) / IP() / ICMP())
        assert impl.check_inner(frame) == "pass"
        assert parsed(impl.parse(wire.build_header(7) + frame)) == ("pass", 7, 8)


# --- flow hash and source port ------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_flow_hash_is_fnv1a(impl: Any) -> None:
    # Frames shorter than an Ethernet header hash as plain FNV-1a (the
    # published 32-bit test vectors).
    assert impl.flow_hash(b"") == 0x811C9DC5
    assert impl.flow_hash(b"a") == 0xE40C292C
    assert impl.flow_hash(b"foobar") == 0xBF9CF968


def tcp4(sport: int, dport: int = 80, payload: bytes = b"", **ip: Any) -> bytes:
    fields = {"src": "10.0.0.1", "dst": "10.0.0.2", **ip}
    return bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(**fields)
                 / TCP(sport=sport, dport=dport) / Raw(payload))


@pytest.mark.parametrize("impl", IMPLS)
def test_flow_hash_covers_documented_fields(impl: Any) -> None:
    """MACs + ethertype, then saddr/daddr, protocol, then the L4 ports."""
    f4 = tcp4(1111, 2222, b"xyz")
    assert impl.flow_hash(f4) == fnv1a(f4[:14] + f4[26:34] + f4[23:24] + f4[34:38])
    f6 = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2")
               / UDP(sport=3333, dport=4444) / Raw(b"q"))
    assert impl.flow_hash(f6) == fnv1a(f6[:14] + f6[22:54] + f6[20:21] + f6[54:58])
    fv = bytes(Ether(src=SRC_MAC, dst=DST_MAC) / Dot1Q(vlan=5) / IP(src="1.2.3.4", dst="5.6.7.8")
               / UDP(sport=5, dport=6))
    assert impl.flow_hash(fv) == fnv1a(fv[:14] + fv[30:38] + fv[27:28] + fv[38:42])
    icmp = inner_frame()
    assert impl.flow_hash(icmp) == fnv1a(icmp[:14] + icmp[26:34] + icmp[23:24])
    arp = bytes(Ether(src=SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP())
    assert impl.flow_hash(arp) == fnv1a(arp[:14])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("vihl", [0x65, 0x55, 0x44, 0x40, 0x4F, 0x00], ids=hex)
def test_flow_hash_skips_a_bad_ipv4_header(impl: Any, vihl: int) -> None:
    """Ethertype IPv4 but version not 4, IHL under 5 words, or IHL past the
    end of the frame: only MACs and ethertype are hashed."""
    frame = bytearray(tcp4(1234, 80))
    frame[14] = vihl
    assert impl.flow_hash(bytes(frame)) == fnv1a(bytes(frame[:14]))
    frame[14] = 0x46   # 24 bytes of header: fits, ports move along
    assert impl.flow_hash(bytes(frame)) == fnv1a(
        bytes(frame[:14] + frame[26:34] + frame[23:24] + frame[38:42]))


@pytest.mark.parametrize("impl", IMPLS)
def test_same_flow_same_port(impl: Any) -> None:
    """Only flow fields count: payload, TTL, IP id, TCP seq do not."""
    variants = [
        tcp4(40000),
        tcp4(40000, payload=b"hello world"),
        tcp4(40000, ttl=3, id=999),
        tcp4(40000, flags="DF"),   # DF is not a fragment: ports still count
        bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
              / TCP(sport=40000, dport=80, seq=12345, flags="PA") / Raw(b"x" * 500)),
    ]
    hashes = {impl.flow_hash(f) for f in variants}
    assert len(hashes) == 1
    assert len({impl.src_port(h, 49152, 65535) for h in hashes}) == 1
    # ...but the flow fields do.
    assert impl.flow_hash(tcp4(40001)) not in hashes
    assert impl.flow_hash(tcp4(40000, dport=81)) not in hashes
    assert impl.flow_hash(tcp4(40000, dst="10.0.0.3")) not in hashes
    assert impl.flow_hash(tcp4(40000, src="10.0.0.9")) not in hashes


def spread(impl: Any, flows: list[bytes], lo: int = 49152, hi: int = 65535) -> set[int]:
    got = {impl.src_port(impl.flow_hash(f), lo, hi) for f in flows}
    assert all(lo <= p <= hi for p in got)
    return got


@pytest.mark.parametrize("impl", IMPLS)
def test_l4_ports_spread_over_source_ports(impl: Any) -> None:
    assert len(spread(impl, [tcp4(30000 + i) for i in range(64)])) >= 16
    assert len(spread(impl, [tcp4(5555, dport=1 + i) for i in range(64)])) >= 16
    v6 = [bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IPv6(src="fd00::1", dst="fd00::2")
                / UDP(sport=20000 + i, dport=53)) for i in range(64)]
    assert len(spread(impl, v6)) >= 16
    tagged = [bytes(Ether(src=SRC_MAC, dst=DST_MAC) / Dot1Q(vlan=10)
                    / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53))
              for i in range(64)]
    assert len(spread(impl, tagged)) >= 16
    sctp = [bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
                  / SCTP(sport=7000 + i, dport=9)) for i in range(64)]
    assert len(spread(impl, sctp)) >= 16
    # A small range is honoured and still used.
    assert spread(impl, [tcp4(30000 + i) for i in range(64)], 1000, 1003) == {
        1000, 1001, 1002, 1003}


@pytest.mark.parametrize("impl", IMPLS)
def test_ports_of_icmp_and_fragments_are_not_hashed(impl: Any) -> None:
    """All fragments of one datagram must take one path (ports are only in
    the first), and protocols without ports hash on addresses alone."""
    big = (Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.0.0.1", dst="10.0.0.2", id=7)
           / UDP(sport=1234, dport=5678) / Raw(b"z" * 3000))
    frags = fragment(big[IP], fragsize=1000)
    assert len(frags) >= 3
    hashes = {impl.flow_hash(bytes(Ether(src=SRC_MAC, dst=DST_MAC) / f)) for f in frags}
    assert len(hashes) == 1
    assert impl.flow_hash(bytes(big)) not in hashes
    v6 = [bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IPv6(src="fd00::1", dst="fd00::2")
                / IPv6ExtHdrFragment(id=1) / UDP(sport=1000 + i)) for i in range(8)]
    assert len({impl.flow_hash(f) for f in v6}) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_src_port_range_edges(impl: Any) -> None:
    for lo, hi in [(49152, 65535), (0, 65535), (1000, 1000), (4789, 4790), (0, 0),
                   (65535, 65535)]:
        assert impl.src_port(0, lo, hi) == lo
        assert impl.src_port(0xFFFFFFFF, lo, hi) == hi
        assert impl.src_port(0x80000000, lo, hi) == lo + (hi - lo + 1) // 2
    # Multiply-shift, not modulo: neighbouring hashes land together.
    assert impl.src_port(1, 0, 65535) == 0
    assert impl.src_port(0x00010000, 0, 65535) == 1


@FUZZ
@given(frame=frames, rng=src_ranges())
def test_flow_port_always_in_range(frame: bytes, rng: tuple[int, int]) -> None:
    lo, hi = rng
    for impl in (native, wire):
        assert lo <= impl.src_port(impl.flow_hash(frame), lo, hi) <= hi


# --- checksum -----------------------------------------------------------------




@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("saddr", "daddr", "vni", "sport"), [
    (UNDER_SRC, UNDER_DST, 42, 50000), ("10.0.0.1", "10.0.0.2", 0, 49152),
    ("172.31.255.255", "203.0.113.77", wire.VNI_MAX, 65535),
])
def test_zero_checksum_is_sent_as_ffff(impl: Any, saddr: str, daddr: str, vni: int,
                                       sport: int) -> None:
    frame = zero_sum_frame(saddr, daddr, vni, sport, 4789)
    dgram = impl.build_datagram(vni, frame, sport, 4789, saddr, daddr, csum=True)
    assert dgram[6:8] == b"\xff\xff"
    assert verifies(dgram, saddr, daddr)
    # scapy applies the same RFC 768 rule.
    outer = IP(src=saddr, dst=daddr) / UDP(sport=sport, dport=4789) \
        / VXLAN(flags=0x08, vni=vni) / Raw(frame)
    assert bytes(outer)[20:] == dgram
    # Without csum the field stays zero ("no checksum").
    assert impl.build_datagram(vni, frame, sport, 4789, saddr, daddr)[6:8] == b"\x00\x00"


@pytest.mark.parametrize("impl", IMPLS)
def test_checksum_covers_addresses_and_every_byte(impl: Any) -> None:
    frame = inner_frame()
    ref = impl.build_datagram(9, frame, 50000, 4789, UNDER_SRC, UNDER_DST, csum=True)
    others = [
        impl.build_datagram(9, frame, 50000, 4789, "192.0.2.3", UNDER_DST, csum=True),
        impl.build_datagram(9, frame, 50000, 4789, UNDER_SRC, "192.0.2.3", csum=True),
        impl.build_datagram(10, frame, 50000, 4789, UNDER_SRC, UNDER_DST, csum=True),
        impl.build_datagram(9, frame, 50001, 4789, UNDER_SRC, UNDER_DST, csum=True),
        impl.build_datagram(9, frame[:-1] + b"\x01", 50000, 4789, UNDER_SRC, UNDER_DST,
                            csum=True),
        impl.build_datagram(9, frame + b"\x01", 50000, 4789, UNDER_SRC, UNDER_DST, csum=True),
    ]
    for other in others:
        assert other[6:8] != ref[6:8]
    # A datagram checked against the wrong addresses does not verify.
    assert verifies(ref, UNDER_SRC, UNDER_DST)
    assert not verifies(ref, UNDER_DST, "192.0.2.9")
