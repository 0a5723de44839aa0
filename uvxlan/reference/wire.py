"""Pure-Python reference codec for VXLAN (RFC 7348).

The C fast path (csrc/vxlan.c) must give byte-identical results: the
tests compare the two on random frames.  This module is for tests and
protocol experiments; nothing on the forwarding path calls it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from uvxlan.proto import (  # noqa: F401  (re-exported for the tests)
    ETH_HLEN,
    FLAG_GBP,
    FLAG_I,
    PORT_IANA,
    PORT_LINUX_LEGACY,
    UDP_HLEN,
    VNI_MAX,
    VXLAN_HLEN,
    mac_to_bytes,
    mac_to_str,
)

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_PORT_PROTOS = (6, 17, 132)  # TCP, UDP, SCTP


@dataclass(frozen=True)
class Parsed:
    reason: str               # "pass" or a drop reason, named as in C
    vni: int | None
    inner_offset: int | None


def check_inner(frame: bytes) -> str:
    """An inner frame must hold an Ethernet header and a unicast,
    non-zero source MAC."""
    if len(frame) < ETH_HLEN:
        return "bad_inner_frame"
    src = frame[6:12]
    if src[0] & 1 or not any(src):
        return "bad_inner_frame"
    return "pass"


def parse(pkt: bytes, accept_reserved: bool = False) -> Parsed:
    """Parse a VXLAN payload as the fast path's vxlan_parse does."""
    if len(pkt) < VXLAN_HLEN:
        return Parsed("truncated", None, None)
    flags = pkt[0]
    if not flags & FLAG_I:
        return Parsed("bad_flags", None, None)
    reserved = (flags & ~FLAG_I) | pkt[1] | pkt[2] | pkt[3] | pkt[7]
    # Dropped by default, as Linux does; see csrc/vxlan.c for why.
    if reserved and not accept_reserved:
        return Parsed("reserved_bits", None, None)
    vni = int.from_bytes(pkt[4:7], "big")
    reason = check_inner(pkt[VXLAN_HLEN:])
    if reason != "pass":
        return Parsed(reason, None, None)
    return Parsed("pass", vni, VXLAN_HLEN)


def build_header(vni: int, group: int = 0) -> bytes:
    """The VXLAN header; a group other than 0 sets the GBP G flag and ID
    (csrc/vxlan.h: vxlan_gbp_put)."""
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} is outside 0..{VNI_MAX}")
    if not 0 <= group <= 0xFFFF:
        raise ValueError(f"group {group} is outside 0..65535")
    flags = FLAG_I | (FLAG_GBP if group else 0)
    return bytes([flags, 0]) + group.to_bytes(2, "big") + vni.to_bytes(3, "big") + b"\x00"


def _fnv1a(h: int, data: bytes) -> int:
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def flow_hash(frame: bytes) -> int:
    """FNV-1a over the inner flow's fields, in the order csrc/vxlan.c uses."""
    n = len(frame)
    if n < ETH_HLEN:
        return _fnv1a(_FNV_OFFSET, frame)
    h = _fnv1a(_FNV_OFFSET, frame[:ETH_HLEN])
    off = ETH_HLEN
    proto = int.from_bytes(frame[12:14], "big")
    if proto == 0x8100 and n >= off + 4:
        proto = int.from_bytes(frame[off + 2:off + 4], "big")
        off += 4
    if proto == 0x0800 and n >= off + 20:
        ip = frame[off:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[0] >> 4 != 4 or ihl < 20 or n < off + ihl:
            return h
        h = _fnv1a(h, ip[12:20])
        h = _fnv1a(h, ip[9:10])
        fragmented = int.from_bytes(ip[6:8], "big") & 0x3FFF
        if not fragmented and ip[9] in _PORT_PROTOS and n >= off + ihl + 4:
            h = _fnv1a(h, ip[ihl:ihl + 4])
    elif proto == 0x86DD and n >= off + 40:
        ip = frame[off:]
        h = _fnv1a(h, ip[8:40])
        h = _fnv1a(h, ip[6:7])
        if ip[6] in _PORT_PROTOS and n >= off + 44:
            h = _fnv1a(h, ip[40:44])
    return h


def src_port(hash_: int, lo: int, hi: int) -> int:
    """Map a flow hash onto [lo, hi] by multiply-shift, as C does."""
    return lo + ((hash_ * (hi - lo + 1)) >> 32)


# The Internet checksum (RFC 1071), named as in csrc/csum.h.

def csum_add(data: bytes, acc: int = 0) -> int:
    """acc plus data's 16-bit big-endian words (odd length: zero-padded)."""
    if len(data) % 2:
        data += b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    return acc + sum(words)


def csum_fold16(acc: int) -> int:
    """The one's complement sum folded to 16 bits."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def csum_final(acc: int) -> int:
    """What goes in a checksum field: the folded sum, complemented."""
    return ~csum_fold16(acc) & 0xFFFF


def build_datagram(
    vni: int, frame: bytes, sport: int, dport: int,
    saddr: str, daddr: str, csum: bool = False,
) -> bytes:
    """UDP header + VXLAN header + frame: what goes on the raw socket."""
    length = UDP_HLEN + VXLAN_HLEN + len(frame)
    if length > 0xFFFF:
        raise ValueError(f"frame of {len(frame)} bytes is too big")
    body = build_header(vni) + frame
    udp = struct.pack("!HHHH", sport, dport, length, 0)
    if csum:
        pseudo = (socket.inet_aton(saddr) + socket.inet_aton(daddr)
                  + struct.pack("!BBH", 0, 17, length))
        value = csum_final(csum_add(pseudo + udp + body)) or 0xFFFF
        udp = struct.pack("!HHHH", sport, dport, length, value)
    return udp + body
