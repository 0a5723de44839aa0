"""Inner checksums left partial, and ones that are wrong (root only).

A Linux vxlan host sending over a veth with offloads on leaves the inner TCP
checksum partial: the field holds the pseudo-header sum only.  uvxlan
completes such a checksum (csrc/rcv.c, partial_csum_rule); a segment with a
full checksum that no longer matches its bytes (corrupted after it was
computed) must still be dropped by the container's stack.

h2 plays the sending VTEP by hand: crafted VXLAN datagrams from a UDP socket
in its namespace, each carrying a TCP segment with data from a made-up peer
10.0.0.2 to a closed port on container c1.  c1's /proc/net/snmp tells what
its stack did: a segment it accepts is answered with a reset (OutRsts), one
whose checksum fails counts InCsumErrors and is answered by nothing.  The
same for UDP datagrams (NoPorts when accepted).  Both
ways c1's port can be built: with virtio-net headers (offload auto, the
segment goes through receive coalescing) and plain (offload none).

Traffic goes only to addresses inside namespaces this test made.
"""

from __future__ import annotations

import ipaddress
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.conftest import OverlayFactory, needs, root
from uvxlan import netlink
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Placement

VNI = 4243
PORT = 4789
C1_ADDR, PEER_ADDR = "10.0.0.1", "10.0.0.2"
PEER_MAC = "02:00:0a:00:00:02"
CLOSED_PORT = 9

pytestmark = [root, needs("ip")]

SEND = ("import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], int(sys.argv[3])))\n")


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return _fold(sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)))


def _segment(c1_mac: str, checksum: str, seq: int, proto: str = "tcp") -> bytes:
    """An Ethernet frame: a TCP data segment (or a UDP datagram) for c1's
    closed port, whose checksum is "full" (right), "partial" (the
    pseudo-header sum, as a CHECKSUM_PARTIAL skb leaves it) or "corrupt"
    (right, then a payload byte changed)."""
    payload = bytes(range(100))
    l4 = (TCP(sport=40000, dport=CLOSED_PORT, seq=seq, ack=1, flags="PA", window=502)
          if proto == "tcp" else UDP(sport=40000, dport=CLOSED_PORT))
    pkt = (Ether(src=PEER_MAC, dst=c1_mac) / IP(src=PEER_ADDR, dst=C1_ADDR, ttl=64)
           / l4 / Raw(payload))
    frame = bytearray(bytes(Ether(bytes(pkt))))       # scapy fills the checksums
    at = 14 + 20 + (16 if proto == "tcp" else 6)
    if checksum == "partial":
        l4len = len(frame) - 14 - 20
        pseudo = (bytes(frame[14 + 12:14 + 20]) + bytes([0, 6 if proto == "tcp" else 17])
                  + l4len.to_bytes(2, "big"))
        frame[at:at + 2] = _sum16(pseudo).to_bytes(2, "big")
    elif checksum == "corrupt":
        frame[-1] ^= 0x40
    else:
        assert checksum == "full"
    return bytes(frame)


def _vxlan(frame: bytes) -> bytes:
    return bytes([0x08, 0, 0, 0]) + VNI.to_bytes(3, "big") + b"\0" + frame


def _snmp(lab: Lab, netns: str, proto: str = "Tcp") -> dict[str, int]:
    lines = [line.split() for line in
             lab.run(netns, ["cat", "/proc/net/snmp"], timeout=10, check=True).stdout.splitlines()
             if line.startswith(proto + ":")]
    names, values = lines[0][1:], lines[1][1:]
    return {n: int(v) for n, v in zip(names, values, strict=True)}


def _send(lab: Lab, frame: bytes, count: int) -> None:
    h2 = lab.host("h2")
    for _ in range(count):
        lab.run(h2.netns, [sys.executable, "-c", SEND, _vxlan(frame).hex(),
                           lab.host("h1").underlay_ip, str(PORT)], timeout=10, check=True)


def _after(lab: Lab, netns: str, before: dict[str, int], key: str, want: int,
           proto: str = "Tcp") -> dict[str, int]:
    deadline = time.monotonic() + 5
    while True:
        now = _snmp(lab, netns, proto)
        if now[key] - before[key] >= want or time.monotonic() > deadline:
            return {k: now[k] - before[k] for k in now}
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_partial_checksum_completed_and_corrupt_segment_dropped(
    lab: Lab, overlay: OverlayFactory, mode: str
) -> None:
    # h2 sends as a VTEP of net1: a member (a remote of h1), or h1 would
    # refuse its datagrams (unknown_vtep).  Lab hosts are numbered from .1.
    h2_ip = str(ipaddress.IPv4Network(lab.subnet).network_address + 2)
    overlay({"net1": VNI}, [Placement("c1", "h1", "net1", f"{C1_ADDR}/24")],
            hosts=2, run=["h1"], port=PORT, host_options={"offload": mode},
            extra_remotes={"net1": [h2_ip]})
    assert lab.host("h2").underlay_ip == h2_ip
    c1 = lab.container_netns("c1")
    c1_mac = netlink.link_info("eth0", netns=c1)["mac"]
    # c1 answers without asking ARP of a peer that is not there
    lab.run(c1, ["ip", "neigh", "replace", PEER_ADDR, "lladdr", PEER_MAC, "dev", "eth0"],
            timeout=10, check=True)
    n = 3

    # A right checksum: accepted (a reset for the closed port), no error.
    before = _snmp(lab, c1)
    _send(lab, _segment(c1_mac, "full", 1000), n)
    d = _after(lab, c1, before, "OutRsts", n)
    assert d["InSegs"] >= n and d["OutRsts"] >= n and d["InCsumErrors"] == 0, d

    # Left partial, as a Linux host over a veth sends it: completed, accepted.
    before = _snmp(lab, c1)
    _send(lab, _segment(c1_mac, "partial", 2000), n)
    d = _after(lab, c1, before, "OutRsts", n)
    assert d["InSegs"] >= n and d["OutRsts"] >= n and d["InCsumErrors"] == 0, (
        f"a partial checksum was not completed ({mode}): {d}")

    # Corrupted after its checksum was computed: dropped by c1's stack.
    before = _snmp(lab, c1)
    _send(lab, _segment(c1_mac, "corrupt", 3000), n)
    d = _after(lab, c1, before, "InCsumErrors", n)
    assert d["InCsumErrors"] == n and d["OutRsts"] == 0, (
        f"a corrupted segment was accepted ({mode}): {d}")

    # The same for UDP (checksum at offset 6): a datagram c1 accepts finds
    # no socket (NoPorts), one it refuses counts InCsumErrors.
    before = _snmp(lab, c1, "Udp")
    _send(lab, _segment(c1_mac, "partial", 0, "udp"), n)
    d = _after(lab, c1, before, "NoPorts", n, "Udp")
    assert d["NoPorts"] >= n and d["InCsumErrors"] == 0, (
        f"a partial UDP checksum was not completed ({mode}): {d}")
    before = _snmp(lab, c1, "Udp")
    _send(lab, _segment(c1_mac, "corrupt", 0, "udp"), n)
    d = _after(lab, c1, before, "InCsumErrors", n, "Udp")
    assert d["InCsumErrors"] == n and d["NoPorts"] == 0, (
        f"a corrupted UDP datagram was accepted ({mode}): {d}")
