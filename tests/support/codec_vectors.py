"""Codec test vectors both the unit tests and the system tests use: the two
implementations (C through the test module, the Python reference), fixed
addresses, checksum helpers and a frame whose UDP checksum sums to zero."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.support import native_testing as native
from uvxlan.reference import wire

IMPLS = [pytest.param(native, id="c"), pytest.param(wire, id="py")]

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"
UNDER_SRC = "192.0.2.1"
UNDER_DST = "192.0.2.2"


def ones_sum(data: bytes) -> int:
    """16-bit ones'-complement sum (folded, not complemented)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(saddr: str, daddr: str, udp_len: int) -> bytes:
    return (socket.inet_aton(saddr) + socket.inet_aton(daddr)
            + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len))


def verifies(dgram: bytes, saddr: str, daddr: str) -> bool:
    """RFC 768/1071: the sum over pseudo header + datagram is all ones."""
    return ones_sum(pseudo_header(saddr, daddr, len(dgram)) + dgram) == 0xFFFF


def zero_sum_frame(saddr: str, daddr: str, vni: int, sport: int, dport: int,
                   size: int = 60) -> bytes:
    """A frame whose datagram's computed checksum is exactly zero: the last
    16-bit word is chosen to bring the sum to all ones."""
    base = bytearray(bytes(Ether(src=SRC_MAC, dst=DST_MAC) / Raw(b"\x5a" * (size - 14))))
    assert len(base) % 2 == 0
    base[-2:] = b"\x00\x00"
    udp_len = 16 + len(base)
    head = struct.pack("!HHHH", sport, dport, udp_len, 0) + wire.build_header(vni)
    s = ones_sum(pseudo_header(saddr, daddr, udp_len) + head + bytes(base))
    base[-2:] = ((~s) & 0xFFFF).to_bytes(2, "big")
    full = ones_sum(pseudo_header(saddr, daddr, udp_len) + head + bytes(base))
    assert full == 0xFFFF  # so ~sum == 0: the checksum computes to zero
    return bytes(base)
