"""Pure-Python reference for the fast path's segmentation and coalescing
(csrc/offload.c): what a TCP super-frame becomes on the wire, and what the
receive side joins back.  For tests (byte-identical to C) and experiments,
never on the packet path.

Segmentation follows what Linux's TSO does: every segment gets the
headers of the super-frame with the IP length, IPv4 ID (consecutive),
TCP sequence number and flags (FIN and PSH on the last segment only, CWR
on the first only) rewritten, and full IPv4 and TCP checksums.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from uvxlan.reference.wire import csum_add, csum_final, csum_fold16

ETH_HLEN = 14
PROTO_TCP = 6
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP_CWR = 0x80
GSO_TCPV4, GSO_TCPV6 = 1, 4
F_NEEDS_CSUM, F_DATA_VALID = 1, 2


def _pseudo(ip: bytes, v6: bool, tcplen: int) -> int:
    """The folded sum of the TCP pseudo-header (RFC 793 / RFC 8200)."""
    if v6:
        return csum_fold16(csum_add(ip[8:40] + struct.pack("!IxxxB", tcplen, PROTO_TCP)))
    return csum_fold16(csum_add(ip[12:20] + struct.pack("!xBH", PROTO_TCP, tcplen)))


@dataclass(frozen=True)
class Headers:
    l3off: int
    l4off: int
    hdrlen: int
    v6: bool


def parse(frame: bytes) -> Headers:
    """Where the IP and TCP headers of a TCP frame are; ValueError if it
    is not one the fast path segments (as tso_parse)."""
    off = ETH_HLEN
    if len(frame) < off:
        raise ValueError("shorter than Ethernet")
    (proto,) = struct.unpack_from("!H", frame, 12)
    if proto == 0x8100:
        if len(frame) < off + 4:
            raise ValueError("truncated VLAN tag")
        (proto,) = struct.unpack_from("!H", frame, off + 2)
        off += 4
    if len(frame) < off + (40 if proto == 0x86DD else 20):
        raise ValueError("truncated IP header")
    if proto == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        if frame[off] >> 4 != 4 or ihl < 20 or frame[off + 9] != PROTO_TCP:
            raise ValueError("not IPv4/TCP")
        l4 = off + ihl
        v6 = False
    elif proto == 0x86DD:
        if frame[off + 6] != PROTO_TCP:
            raise ValueError("not IPv6/TCP")
        l4 = off + 40
        v6 = True
    else:
        raise ValueError("not IP")
    if len(frame) < l4 + 20:
        raise ValueError("truncated TCP header")
    doff = (frame[l4 + 12] >> 4) * 4
    if doff < 20 or l4 + doff > len(frame):
        raise ValueError("bad TCP header")
    return Headers(off, l4, l4 + doff, v6)


def tcp_checksum(frame: bytes, h: Headers) -> int:
    """The TCP checksum field's value for frame as it is (field zeroed)."""
    tcp = bytearray(frame[h.l4off:])
    tcp[16:18] = b"\0\0"
    return csum_final(csum_add(bytes(tcp), _pseudo(frame[h.l3off:h.l4off], h.v6, len(tcp))))


def tso_segment(frame: bytes, mss: int) -> list[bytes]:
    """Cut a TCP super-frame into segments of at most mss payload bytes."""
    if mss <= 0:
        raise ValueError("mss must be positive")
    h = parse(frame)
    payload = frame[h.hdrlen:]
    seq0, = struct.unpack_from("!I", frame, h.l4off + 4)
    id0 = 0 if h.v6 else struct.unpack_from("!H", frame, h.l3off + 4)[0]
    flags0 = frame[h.l4off + 13]
    n = max(1, -(-len(payload) // mss))
    out = []
    for i in range(n):
        part = payload[i * mss:(i + 1) * mss]
        seg = bytearray(frame[:h.hdrlen]) + part
        tcplen = h.hdrlen - h.l4off + len(part)
        if h.v6:
            struct.pack_into("!H", seg, h.l3off + 4, tcplen)
        else:
            ihl = h.l4off - h.l3off
            struct.pack_into("!HH", seg, h.l3off + 2, ihl + tcplen, (id0 + i) & 0xFFFF)
            seg[h.l3off + 10:h.l3off + 12] = b"\0\0"
            ipsum = csum_final(csum_add(bytes(seg[h.l3off:h.l4off])))
            struct.pack_into("!H", seg, h.l3off + 10, ipsum)
        struct.pack_into("!I", seg, h.l4off + 4, (seq0 + i * mss) & 0xFFFFFFFF)
        fl = flags0
        if i + 1 < n:
            fl &= ~(TCP_FIN | TCP_PSH)
        if i > 0:
            fl &= ~TCP_CWR
        seg[h.l4off + 13] = fl
        struct.pack_into("!H", seg, h.l4off + 16, tcp_checksum(bytes(seg), h))
        out.append(bytes(seg))
    return out


@dataclass(frozen=True)
class Joined:
    """A super-frame as written to the TAP, with its virtio-net header."""

    frame: bytes
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def _same_flow(a: bytes, b: bytes, h: Headers) -> bool:
    """Same Ethernet header, addresses and ports, and the fields Linux's
    tcp_gro_receive wants equal: ACK, window, options; TOS/TTL/DF or
    traffic class/flow label/hop limit."""
    t = h.l4off
    if a[:ETH_HLEN] != b[:ETH_HLEN] or a[t:t + 4] != b[t:t + 4]:
        return False
    if a[t + 8:t + 12] != b[t + 8:t + 12] or a[t + 14:t + 16] != b[t + 14:t + 16]:
        return False
    if a[t + 20:h.hdrlen] != b[t + 20:h.hdrlen]:
        return False
    ip_a, ip_b = a[h.l3off:h.l4off], b[h.l3off:h.l4off]
    if h.v6:
        return ip_a[8:40] == ip_b[8:40] and ip_a[:4] == ip_b[:4] and ip_a[7] == ip_b[7]
    return (ip_a[12:20] == ip_b[12:20] and ip_a[1] == ip_b[1] and ip_a[8] == ip_b[8]
            and ip_a[6] & 0x40 == ip_b[6] & 0x40)


def gro_join(segments: list[bytes]) -> Joined:
    """Join in-order segments of one flow as the receive path does: one
    segment goes as it came (checksum verified: DATA_VALID); several become
    one frame with the first one's headers, lengths rewritten, the TCP
    checksum field holding the pseudo-header sum (NEEDS_CSUM: the kernel
    completes it) and GSO set to the first segment's size.  ValueError for
    what the fast path would not join."""
    if not segments:
        raise ValueError("nothing to join")
    first = parse(segments[0])
    mss = len(segments[0]) - first.hdrlen
    seq = struct.unpack_from("!I", segments[0], first.l4off + 4)[0]
    psh = 0
    for i, seg in enumerate(segments):
        h = parse(seg)
        if h != first or not _same_flow(segments[0], seg, h):
            raise ValueError(f"segment {i}: another flow, or headers that differ")
        fl = seg[h.l4off + 13]
        plen = len(seg) - h.hdrlen
        if fl & ~(TCP_ACK | TCP_PSH) or not fl & TCP_ACK or plen == 0:
            raise ValueError(f"segment {i}: not a plain data segment")
        if tcp_checksum(seg, h) != struct.unpack_from("!H", seg, h.l4off + 16)[0]:
            raise ValueError(f"segment {i}: bad TCP checksum")
        if struct.unpack_from("!I", seg, h.l4off + 4)[0] != seq:
            raise ValueError(f"segment {i}: out of order")
        if i + 1 < len(segments) and (plen != mss or fl & TCP_PSH):
            raise ValueError(f"segment {i}: ends the burst")
        seq = (seq + plen) & 0xFFFFFFFF
        psh |= fl & TCP_PSH
    if len(segments) == 1:
        return Joined(segments[0], F_DATA_VALID, 0, 0, 0, 0, 0)
    h = first
    out = bytearray(segments[0][:h.hdrlen]) + b"".join(s[h.hdrlen:] for s in segments)
    tcplen = len(out) - h.l4off
    if h.v6:
        struct.pack_into("!H", out, h.l3off + 4, tcplen)
    else:
        struct.pack_into("!H", out, h.l3off + 2, h.l4off - h.l3off + tcplen)
        out[h.l3off + 10:h.l3off + 12] = b"\0\0"
        struct.pack_into("!H", out, h.l3off + 10,
                         csum_final(csum_add(bytes(out[h.l3off:h.l4off]))))
    out[h.l4off + 13] |= psh
    struct.pack_into("!H", out, h.l4off + 16, _pseudo(bytes(out[h.l3off:h.l4off]), h.v6, tcplen))
    return Joined(bytes(out), F_NEEDS_CSUM, GSO_TCPV6 if h.v6 else GSO_TCPV4,
                  h.hdrlen, mss, h.l4off, 16)
