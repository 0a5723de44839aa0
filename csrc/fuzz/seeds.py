"""Write the seed inputs of the packet-path fuzz targets (csrc/fuzz/).

    python3 csrc/fuzz/seeds.py rcv DIR     # fuzz_rcv: datagrams from senders
    python3 csrc/fuzz/seeds.py xmit DIR    # fuzz_xmit: frames from a port

A few valid inputs in each target's format (see the comment at the top of
fuzz_rcv.c and fuzz_xmit.c), aimed at the datapath of fuzz_dp.h: TCP
segments of one flow that join, ARP requests, floods, IPv6, VLAN tags,
super-frames with hostile virtio-net headers.  Checksums are left to the
harness (the FZ_FIX_* bits), so the inputs stay short to write.
Standard library only: `make fuzz-rcv` runs it before the venv exists.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

VNI_A, VNI_B, VNI_C, VNI_UNKNOWN = 100, 200, 300, 999
FIX_IP, FIX_L4, FIX_PARTIAL = 1, 2, 4
BCAST = b"\xff" * 6
GSO_TCPV4, GSO_TCPV6 = 1, 4
NEEDS_CSUM = 1


def mac(n: int) -> bytes:
    """02:00:00:00:00:0n, the static MACs of fuzz_dp.h (1-6); others learn."""
    return bytes([2, 0, 0, 0, 0, n])


def eth(dst: bytes, src: bytes, ethertype: int, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", ethertype)


def tcp(seq: int, payload: bytes, flags: int = 0x10, doff: int = 5) -> bytes:
    options = b"\x01" * (doff * 4 - 20)
    return struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, doff << 4, flags, 512, 0, 0) \
        + options + payload


def ipv4(l4: bytes, proto: int = 6, ihl: int = 5) -> bytes:
    options = b"\x01" * (ihl * 4 - 20)
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, 7, 0x4000, 64, proto, 0,
                       bytes([10, 0, 0, 9]), bytes([10, 0, 0, 1])) + options + l4


def ipv6(l4: bytes, proto: int = 6) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, 0, proto, 64,
                       bytes(15) + b"\x09", bytes(15) + b"\x01") + l4


def arp_request(sender: bytes, sip: bytes, tip: bytes) -> bytes:
    return eth(BCAST, sender, 0x0806) + struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sender, sip, bytes(6), tip)


def vxlan(vni: int, frame: bytes, flags: int = 0x08) -> bytes:
    return struct.pack("!B3xI", flags, vni << 8) + frame


def vxlan_gbp(vni: int, frame: bytes, word: int) -> bytes:
    """VXLAN-GBP: the G flag, D and A bits and the group in the first word."""
    return struct.pack("!II", 0x08000000 | word, vni << 8) + frame


def dgram(sender: int, fix: int, payload: bytes, addr: bytes | None = None) -> bytes:
    who = sender | (4 if addr is not None else 0)
    return struct.pack("!BBH", who, fix, len(payload)) + (addr or b"") + payload


def rcv_seeds() -> dict[str, bytes]:
    data = bytes(range(256)) * 6
    flow4 = [eth(mac(1), mac(20), 0x0800) + ipv4(tcp(1000 + i * 1400, data[:1400]))
             for i in range(3)]
    flow6 = [eth(mac(3), mac(21), 0x86DD) + ipv6(tcp(7 + i * 1000, data[:1000]))
             for i in range(2)]
    return {
        "join-v4": b"".join(dgram(0, FIX_IP | FIX_L4, vxlan(VNI_A, f)) for f in flow4),
        "join-v4-partial": b"".join(dgram(1, FIX_IP | FIX_PARTIAL, vxlan(VNI_A, f))
                                    for f in flow4),
        "join-v6": b"".join(dgram(1, FIX_IP | FIX_L4, vxlan(VNI_A, f)) for f in flow6),
        "plain-partial": dgram(0, FIX_IP | FIX_PARTIAL, vxlan(
            VNI_A, eth(mac(2), mac(22), 0x0800) + ipv4(
                struct.pack("!HHHH", 53, 5353, 20, 0) + data[:12], proto=17))),
        "arp-flood": dgram(2, 0, vxlan(VNI_A, arp_request(mac(23), b"\x0a\0\0\x09",
                                                          b"\x0a\0\0\x02"))),
        "unknown-unicast": dgram(0, FIX_IP | FIX_L4, vxlan(
            VNI_A, eth(mac(40), mac(24), 0x0800) + ipv4(tcp(1, data[:100])))),
        "stranger": dgram(3, FIX_IP | FIX_L4, vxlan(
            VNI_B, eth(mac(6), mac(25), 0x0800) + ipv4(tcp(1, data[:64]))),
            addr=bytes([198, 51, 100, 7])),
        "spoofed-static": dgram(1, 0, vxlan(VNI_A, eth(mac(2), mac(1), 0x0800)
                                             + ipv4(tcp(1, data[:64])))),
        "bad-headers": dgram(0, 0, vxlan(VNI_A, eth(mac(1), mac(26), 0x0800), flags=0))
        + dgram(0, 0, vxlan(VNI_A, eth(mac(1), mac(26), 0x0800), flags=0x88))
        + dgram(0, 0, vxlan(VNI_UNKNOWN, eth(mac(1), mac(26), 0x0800)))
        + dgram(0, 0, b"\x08\0\0"),
        # Groups 7 (denied to port 0's 10), 10 (to port 1's 20: denied), 0 with
        # the A bit, and GBP bits in VNI 300, which reads them as reserved.
        "gbp-groups": b"".join(
            dgram(0, FIX_IP | FIX_L4, vxlan_gbp(VNI_A, eth(dst, mac(27), 0x0800)
                                                + ipv4(tcp(1, data[:64])), word))
            for dst, word in [(mac(1), 0x80000007), (mac(2), 0x8000000A),
                              (BCAST, 0x8008000A), (BCAST, 0x80400014)])
        + dgram(2, 0, vxlan_gbp(VNI_C, eth(BCAST, mac(28), 0x0800), 0x8000000A)),
    }


def frame(fix: int, body: bytes, vnet: bytes = b"") -> bytes:
    return struct.pack("!BH", fix, len(vnet) + len(body)) + vnet + body


def vnet_hdr(flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0,
             csum_start: int = 0, csum_offset: int = 0) -> bytes:
    """struct virtio_net_hdr as a TAP gives it: host (little-endian) order."""
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start,
                       csum_offset)


def xmit_seeds() -> dict[str, bytes]:
    data = bytes(range(256)) * 256
    # fuzz_xmit's first byte: the port (low 2 bits), how datagrams leave.
    raw, pool, gso = 0 << 2, 1 << 2, 2 << 2
    tso4 = eth(mac(4), mac(30), 0x0800) + ipv4(tcp(1, data[:8000]))
    tso6 = eth(mac(5), mac(31), 0x86DD) + ipv6(tcp(1, data[:6000]))
    tagged = eth(mac(2), mac(32), 0x0800, vlan=7) + ipv4(tcp(1, data[:5000]))
    big = eth(mac(4), mac(33), 0x0800) + ipv4(tcp(1, data[:65535 - 10 - 54]))
    deep = eth(BCAST, mac(34), 0x0800) + ipv4(tcp(1, data[:3000], doff=15), ihl=15)
    udp = eth(mac(4), mac(35), 0x0800) + ipv4(
        struct.pack("!HHHH", 53, 5353, 8 + 100, 0) + data[:100], proto=17)
    return {
        "tso-v4-gso": bytes([0 | gso]) + frame(FIX_IP, tso4, vnet_hdr(
            NEEDS_CSUM, GSO_TCPV4, 54, 1400, 34, 16)),
        "tso-v4-raw": bytes([0 | raw]) + frame(FIX_IP, tso4, vnet_hdr(
            NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16)),
        "tso-v6-pool": bytes([2 | pool]) + frame(FIX_IP, tso6, vnet_hdr(
            NEEDS_CSUM, GSO_TCPV6, 74, 1000, 54, 16)),
        "tso-vlan-to-plain": bytes([0 | gso]) + frame(FIX_IP, tagged, vnet_hdr(
            NEEDS_CSUM, GSO_TCPV4, 58, 1200, 38, 16)),
        "gso-size-1-flood": bytes([0 | gso]) + frame(FIX_IP, eth(BCAST, mac(36), 0x0800)
                                                     + ipv4(tcp(1, data[:300])),
                                                     vnet_hdr(0, GSO_TCPV4, 54, 1)),
        "gso-size-65535-64k": bytes([2 | gso]) + frame(FIX_IP, big, vnet_hdr(
            NEEDS_CSUM, GSO_TCPV4, 54, 65535, 34, 16)),
        "ihl-doff-15": bytes([0 | pool]) + frame(FIX_IP, deep, vnet_hdr(
            0, GSO_TCPV4, 14 + 60 + 60, 500)),
        "csum-start-past-end": bytes([0 | raw]) + frame(0, udp, vnet_hdr(
            NEEDS_CSUM, 0, 0, 0, 60000, 6)),
        "csum-partial-udp": bytes([2 | raw]) + frame(FIX_IP | FIX_PARTIAL, udp, vnet_hdr(
            NEEDS_CSUM, 0, 0, 0, 34, 6)),
        "arp-plain": bytes([1 | raw])
        + frame(0, arp_request(mac(37), b"\x0a\0\0\x09", b"\x0a\0\0\x02"))
        + frame(0, arp_request(mac(37), b"\x0a\0\0\x09", b"\x0a\0\0\x63"))
        + frame(FIX_IP | FIX_L4, eth(mac(1), mac(37), 0x0800) + ipv4(tcp(1, data[:64])))
        + frame(0, eth(mac(37), mac(37), 0x0800) + ipv4(tcp(1, data[:64]))),
        "answer-only": bytes([3 | raw])
        + frame(0, arp_request(mac(38), b"\x0a\x01\0\x09", b"\x0a\x01\0\x06"))
        + frame(0, arp_request(mac(38), b"\x0a\x01\0\x09", b"\x0a\x01\0\x63"))
        + frame(0, eth(BCAST, mac(38), 0x86DD) + ipv6(b"\x86\0" + data[:30], proto=58)),
    }


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("rcv", "xmit"):
        sys.exit("usage: seeds.py rcv|xmit DIR")
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    seeds = rcv_seeds() if sys.argv[1] == "rcv" else xmit_seeds()
    for name, blob in seeds.items():
        (out / name).write_bytes(blob)


if __name__ == "__main__":
    main()
