"""Frames too big for the underlay (root only).

A container may raise its MTU above what the underlay carries once
encapsulated (underlay MTU - 50), or send TCP super-frames whose segments
would not fit.  uvxlan must never put outer IP fragments on the wire: such
a frame is dropped and counted (frag_needed, for its network and port), and
its sender is told what fits, as Linux's vxlan does on a bridge: an ICMP
"fragmentation needed" for IPv4 with DF, an ICMPv6 Packet Too Big for IPv6,
from the original destination's MAC and IP, rate-limited per port.

The first tests drive the C switch directly (test_switch.py's harness: local
ports are socketpairs, remote VTEPs UDP sockets on loopback) and decode the
answers with scapy.  The last ones run real agents in a lab: a container
with MTU 9000 on a 1500 underlay.  Traffic goes only to loopback or inside
namespaces the tests made.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from tests.conftest import OverlayFactory, checked_transfer, needs, ping, root, unique_name
from tests.support.capture import start_tshark
from tests.support.codec_vectors import ones_sum
from tests.system.test_switch import Remote, Switch, mac, recv_all
from uvxlan import native
from uvxlan.lab import bench
from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import Overlay, Placement

pytestmark = root

VNI = 1
SRC_IP, DST_IP = "10.0.0.2", "10.0.0.3"
SRC_IP6, DST_IP6 = "fd00::2", "fd00::3"
SRC_MAC, DST_MAC = mac(1), mac(2)
OUTER = 20 + 8 + 8          # outer IPv4 + UDP + VXLAN, before the inner frame
BURST, PER_SEC = native.lib.UVX_PMTUD_BURST, native.lib.UVX_PMTUD_PER_SEC


# --- building frames and reading answers -----------------------------------

def ipv4(size: int, *, df: bool = True, mf: bool = False, ttl: int = 61,
         src: str = SRC_IP, dst: str = DST_IP, inner: Packet | None = None) -> Packet:
    """An IPv4 packet of exactly size bytes (UDP unless inner says)."""
    flags = (2 if df else 0) | (1 if mf else 0)
    l4 = inner if inner is not None else UDP(sport=40000, dport=9)
    pkt = IP(src=src, dst=dst, ttl=ttl, flags=flags, id=7) / l4
    return pkt / Raw(b"\xab" * (size - len(pkt)))


def ipv6(size: int, *, hlim: int = 57, ext: Packet | None = None,
         src: str = SRC_IP6, dst: str = DST_IP6) -> Packet:
    """An IPv6 packet of exactly size bytes (header included)."""
    pkt = IPv6(src=src, dst=dst, hlim=hlim)
    if ext is not None:
        pkt = pkt / ext
    pkt = pkt / UDP(sport=40000, dport=9)
    return pkt / Raw(b"\xcd" * (size - len(pkt)))


def eth(l3: Packet, *, vlan: int | None = None, prio: int = 0, dst: str = DST_MAC) -> bytes:
    e = Ether(src=SRC_MAC, dst=dst)
    return bytes(e / Dot1Q(vlan=vlan, prio=prio) / l3 if vlan is not None else e / l3)


def check_v4_reply(reply: bytes, sent: bytes, mtu: int, vlan: int | None = None) -> None:
    """reply is sent's ICMP fragmentation needed, field by field."""
    r, s = Ether(reply), Ether(sent)
    assert (r.src, r.dst) == (s.dst, s.src), "not back from the original destination MAC"
    l3 = 14
    if vlan is not None:
        assert r[Dot1Q].vlan == vlan and r[Dot1Q].prio == s[Dot1Q].prio
        l3 = 18
    ip, orig = r[IP], s[IP]
    raw, orig_raw = reply[l3:], sent[l3:]
    assert (ip.src, ip.dst) == (orig.dst, orig.src)
    assert ip.proto == 1 and ip.flags == "DF" and ip.ttl == orig.ttl and ip.ihl == 5
    assert ip.len == len(raw) <= 576
    assert ones_sum(raw[:20]) == 0xFFFF, "IPv4 header checksum"
    assert (r[ICMP].type, r[ICMP].code) == (3, 4)
    assert r[ICMP].nexthopmtu == mtu and r[ICMP].reserved == r[ICMP].length == 0
    assert ones_sum(raw[20:]) == 0xFFFF, "ICMP checksum"
    # The quote: the original packet from its IP header, as much as fits.
    assert raw[28:] == orig_raw[:576 - 28]


def check_v6_reply(reply: bytes, sent: bytes, mtu: int) -> None:
    r, s = Ether(reply), Ether(sent)
    assert (r.src, r.dst) == (s.dst, s.src)
    ip, orig = r[IPv6], s[IPv6]
    raw, orig_raw = reply[14:], sent[14:]
    assert (ip.src, ip.dst) == (orig.dst, orig.src)
    assert ip.nh == 58 and ip.hlim == orig.hlim
    body = raw[40:]
    assert ip.plen == len(body) and len(raw) <= 1280
    ptb = r[ICMPv6PacketTooBig]
    assert (ptb.type, ptb.code, ptb.mtu) == (2, 0, mtu)
    pseudo = (socket.inet_pton(socket.AF_INET6, ip.src) + socket.inet_pton(socket.AF_INET6, ip.dst)
              + struct.pack("!I3xB", len(body), 58))
    assert ones_sum(pseudo + body) == 0xFFFF, "ICMPv6 checksum"
    assert body[8:] == orig_raw[:1280 - 48]


# --- the switch --------------------------------------------------------------

@contextmanager
def switch(**kw: object) -> Iterator[Switch]:
    sw = Switch(**kw)
    try:
        sw.dp.add_vni(VNI)
        yield sw
    finally:
        sw.close()


def unicast_rig(sw: Switch, *, vnet_hdr: bool = False) -> tuple[int, Remote]:
    """A port, and a VTEP that DST_MAC is statically behind."""
    a = sw.add_port(VNI, vnet_hdr=vnet_hdr)
    r = sw.add_remote(VNI, "127.0.0.2")
    sw.dp.fdb_add(VNI, DST_MAC, remote="127.0.0.2", remote_port=r.port)
    return a, r


def test_the_largest_frame_that_fits_leaves_whole_one_more_byte_is_answered() -> None:
    with switch() as sw:
        a, r = unicast_rig(sw)
        fits = eth(ipv4(1450))
        sw.send_from_port(a, fits)
        assert r.received() == [(VNI, fits)]        # 20 + 8 + 8 + 1464 = 1500
        assert sw.port_received(a) == []

        big = eth(ipv4(1451))
        sw.send_from_port(a, big)
        assert r.received(0.1) == [], "a frame over the underlay MTU left"
        (reply,) = sw.port_received(a)
        check_v4_reply(reply, big, 1450)
        assert sw.dp.vni_drops(VNI) == {"frag_needed": 1}
        assert sw.dp.port_drops(a) == {"frag_needed": 1}


@pytest.mark.parametrize("mtu", [9000, 1280, 576 + 50])
def test_the_mtu_told_is_what_fits_the_underlay(mtu: int) -> None:
    with switch(underlay_mtu=mtu) as sw:
        a, r = unicast_rig(sw)
        sw.send_from_port(a, eth(ipv4(mtu - 50)))
        assert len(r.received()) == 1
        big = eth(ipv4(mtu - 49))
        sw.send_from_port(a, big)
        (reply,) = sw.port_received(a)
        check_v4_reply(reply, big, mtu - 50)


def test_a_vlan_tagged_frame_counts_its_tag_and_gets_a_tagged_answer() -> None:
    with switch() as sw:
        a, r = unicast_rig(sw)
        fits = eth(ipv4(1446), vlan=42, prio=5)      # 18 + 1446 + 36 = 1500
        sw.send_from_port(a, fits)
        assert r.received() == [(VNI, fits)]
        big = eth(ipv4(1447), vlan=42, prio=5)
        sw.send_from_port(a, big)
        assert r.received(0.1) == []
        (reply,) = sw.port_received(a)
        check_v4_reply(reply, big, 1446, vlan=42)
        assert sw.dp.port_drops(a) == {"frag_needed": 1}


def test_ipv6_gets_a_packet_too_big() -> None:
    with switch() as sw:
        a, r = unicast_rig(sw)
        sw.send_from_port(a, eth(ipv6(1450)))
        assert len(r.received()) == 1
        for big in (eth(ipv6(1451)), eth(ipv6(4000, ext=IPv6ExtHdrFragment(offset=0, m=1))),
                    eth(IPv6(src=SRC_IP6, dst=DST_IP6) / ICMPv6EchoRequest(data=b"p" * 2000))):
            sw.send_from_port(a, big)
            (reply,) = sw.port_received(a)
            check_v6_reply(reply, big, 1450)
        assert r.received(0.1) == []
        assert sw.dp.port_drops(a) == {"frag_needed": 3}


NO_ANSWER = {
    "no DF": eth(ipv4(2000, df=False)),
    "a fragment": eth(ipv4(2000, mf=True)),
    "an ICMP error": eth(ipv4(2000, inner=ICMP(type=3, code=1))),
    "broadcast MAC": eth(ipv4(2000), dst="ff:ff:ff:ff:ff:ff"),
    "multicast IP": eth(ipv4(2000, dst="224.0.0.9")),
    "source 0.0.0.0": eth(ipv4(2000, src="0.0.0.0")),
    "source 127.0.0.1": eth(ipv4(2000, src="127.0.0.1")),
    "IPv6 later fragment": eth(ipv6(2000, ext=IPv6ExtHdrFragment(offset=100))),
    "ICMPv6 error": eth(IPv6(src=SRC_IP6, dst=DST_IP6) / ICMPv6PacketTooBig() / Raw(b"e" * 2000)),
    "IPv6 multicast destination": eth(ipv6(2000, dst="ff02::1")),
    "IPv6 source ::": eth(ipv6(2000, src="::")),
    "not IP": bytes(Ether(src=SRC_MAC, dst=DST_MAC, type=0x88B5) / Raw(b"z" * 2000)),
}


@pytest.mark.parametrize("name", sorted(NO_ANSWER))
def test_dropped_and_counted_but_not_answered(name: str) -> None:
    frame = NO_ANSWER[name]
    with switch() as sw:
        a, r = unicast_rig(sw)
        sw.send_from_port(a, frame)
        assert r.received(0.1) == []
        assert sw.port_received(a) == []
        assert sw.dp.port_drops(a) == {"frag_needed": 1}
        assert sw.dp.vni_drops(VNI) == {"frag_needed": 1}


def test_no_answer_below_the_families_minimum_mtu() -> None:
    # 600 - 50 = 550: below IPv4's 576 and IPv6's 1280, as Linux.
    with switch(underlay_mtu=600) as sw:
        a, r = unicast_rig(sw)
        for big in (eth(ipv4(1000)), eth(ipv6(1000))):
            sw.send_from_port(a, big)
        assert sw.port_received(a) == [] and r.received(0.1) == []
        assert sw.dp.port_drops(a) == {"frag_needed": 2}


def test_answers_are_rate_limited_per_port() -> None:
    with switch() as sw:
        a, r = unicast_rig(sw)
        b = sw.add_port(VNI)
        big = eth(ipv4(3000))
        n = 400
        start = time.monotonic()
        for _ in range(n // 32):
            for _ in range(32):
                sw.ports[a].send(big)
            assert sw.dp.tap_rx(a) == 32
        elapsed = time.monotonic() - start
        replies = recv_all(sw.ports[a], 0.1)
        assert sw.dp.port_drops(a) == {"frag_needed": n // 32 * 32}
        assert BURST <= len(replies) <= BURST + elapsed * PER_SEC + 1, (len(replies), elapsed)
        # Another port has its own bucket.
        sw.send_from_port(b, big)
        assert len(sw.port_received(b)) == 1
        # The bucket refills: after 0.1 s, about 10 more.
        time.sleep(0.1)
        for _ in range(32):
            sw.ports[a].send(big)
        sw.dp.tap_rx(a)
        again = len(recv_all(sw.ports[a], 0.1))
        assert 0.1 * PER_SEC - 3 <= again <= 0.3 * PER_SEC, again
        assert r.received(0.1) == []


# --- super-frames (virtio-net TSO) --------------------------------------------

def vnet_hdr(gso_size: int, hdr_len: int) -> bytes:
    """struct virtio_net_hdr: NEEDS_CSUM, GSO TCPv4, checksum at TCP's."""
    return struct.pack("<BBHHHH", 1, 1, hdr_len, gso_size, 34, 16)


def super_frame(mss: int, nseg: int) -> bytes:
    ip = IP(src=SRC_IP, dst=DST_IP, flags="DF", ttl=64) / TCP(sport=40000, dport=5201, flags="A",
                                                                 seq=1000)
    payload = bytes(i & 0xFF for i in range(mss * nseg))
    return eth(ip / Raw(payload))


def add_pool(sw: Switch, n: int = 2) -> None:
    """UDP sockets to send super-frames from with UDP_SEGMENT, as the agent
    makes them (never fragmenting); closed with the switch."""
    pool = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        native.nofrag(s.fileno())
        pool.append(s)
    sw.own(*pool)
    sw.dp.set_pool([(s.fileno(), s.getsockname()[1]) for s in pool], gso=True, gro=False)


@pytest.mark.parametrize("gso", [False, True])
def test_super_frames_pass_at_full_size_unless_their_segments_do_not_fit(gso: bool) -> None:
    with switch() as sw:
        if gso:
            add_pool(sw)
        a, r = unicast_rig(sw, vnet_hdr=True)
        theirs = sw.ports[a]
        # 14 + 20 + 20 + 1410 = 1464: the largest segment that fits.
        sf = super_frame(1410, 20)
        theirs.send(vnet_hdr(1410, 54) + sf)
        assert sw.dp.tap_rx(a) == 1
        got = r.received()
        assert len(got) == 20 and all(len(f) == 1464 for _, f in got)
        assert b"".join(bytes(Ether(f)[TCP].payload) for _, f in got) == \
            bytes(Ether(sf)[TCP].payload)
        # One byte more per segment: dropped whole, and answered.
        sf = super_frame(1411, 20)
        theirs.send(vnet_hdr(1411, 54) + sf)
        assert sw.dp.tap_rx(a) == 1
        assert r.received(0.1) == []
        (reply,) = recv_all(theirs, 0.1)
        # A port with virtio-net headers gets one first: a plain frame.
        assert reply[:10] == b"\0" * 10
        check_v4_reply(reply[10:], sf, 1450)
        assert sw.dp.port_drops(a) == {"frag_needed": 1}
        assert not sw.dp.gso_failed()


@contextmanager
def netns_of_our_own(lo_mtu: int) -> Iterator[str]:
    name = "uvx-mtu-" + unique_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "mtu", str(lo_mtu), "up"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """This thread in netns: sockets made meanwhile belong to it."""
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        assert libc.setns(target, clone_newnet) == 0, os.strerror(ctypes.get_errno())
        try:
            yield
        finally:
            assert libc.setns(home, clone_newnet) == 0
    finally:
        os.close(home)
        os.close(target)


def test_one_frame_the_kernel_refuses_never_turns_gso_off_nor_leaves_in_fragments() -> None:
    """The underlay's device takes 1400 bytes while the datapath was told
    1500: the kernel refuses a super-frame of 1500-byte datagrams
    (EMSGSIZE).  That super-frame is dropped (tried again with sendmmsg, also
    refused, counted udp_error), nothing leaves in fragments, and GSO stays
    on for the next one."""
    with netns_of_our_own(1400) as ns, entered(ns), switch() as sw:
        add_pool(sw)
        a, r = unicast_rig(sw, vnet_hdr=True)
        theirs = sw.ports[a]
        theirs.send(vnet_hdr(1410, 54) + super_frame(1410, 8))
        assert sw.dp.tap_rx(a) == 1
        assert r.received(0.2) == [], "datagrams over the device MTU left (fragmented)"
        drops = sw.dp.port_drops(a)
        assert set(drops) == {"udp_error"}, drops
        assert not sw.dp.gso_failed(), "one frame's failure turned GSO off"
        # The next super-frame whose datagrams fit the device goes.
        theirs.send(vnet_hdr(1300, 54) + super_frame(1300, 8))
        assert sw.dp.tap_rx(a) == 1
        got = r.received()
        assert len(got) == 8 and all(len(f) == 1354 for _, f in got)
        assert not sw.dp.gso_failed()


def test_a_plain_send_over_the_device_mtu_is_refused_not_fragmented() -> None:
    """The raw socket: a frame that fits the configured underlay MTU but
    not the device's is counted udp_error and never leaves in fragments."""
    with netns_of_our_own(1400) as ns, entered(ns), switch() as sw:
        a, r = unicast_rig(sw)
        sw.send_from_port(a, eth(ipv4(1450)))
        assert r.received(0.2) == []
        assert sw.dp.port_drops(a) == {"udp_error": 1}
        sw.send_from_port(a, eth(ipv4(1350)))
        assert len(r.received()) == 1


def test_a_datagram_bigger_than_the_container_takes_is_delivered_and_counted() -> None:
    """The receive side's mirror case: the wire brings a frame larger than
    the container's MTU.  It is written to the port as it is (the
    container's kernel decides); nothing breaks and the port counts it."""
    with switch() as sw:
        a = sw.add_port(VNI)
        r = sw.add_remote(VNI, "127.0.0.2")
        big = eth(ipv4(9000))
        sw.send_from_remote(r, VNI, big)
        assert sw.port_received(a) == [big]
        c = sw.dp.port_counters(a)
        assert (c.tx_packets, c.tx_bytes) == (1, len(big))
        assert not any(sw.dp.drops().values())


# --- real agents: a container with MTU 9000 on a 1500 underlay ---------------

NETS = {"big": 4301, "other": 4302}
PLACE = [
    Placement("m1", "h1", "big", "10.0.0.2/24"),
    Placement("m2", "h2", "big", "10.0.0.3/24"),
    Placement("o1", "h1", "other", "10.0.1.2/24"),
    Placement("o2", "h2", "other", "10.0.1.3/24"),
]

# Big UDP datagrams with DF, whatever path MTU the sender's kernel learned
# (IP_PMTUDISC_PROBE): every one is too big for the underlay.  Paced (argv:
# destination, seconds, datagrams per second) so that what is measured is
# the agent's cost, not the sender's own CPU.
FLOOD = ("import socket, sys, time\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.setsockopt(socket.IPPROTO_IP, 10, 3)     # IP_MTU_DISCOVER, IP_PMTUDISC_PROBE\n"
         "start = time.monotonic(); end = start + float(sys.argv[2]); rate = int(sys.argv[3])\n"
         "n = 0\n"
         "while (now := time.monotonic()) < end:\n"
         "    while n < (now - start) * rate:\n"
         "        s.sendto(b'x' * 8000, (sys.argv[1], 9)); n += 1\n"
         "    time.sleep(0.005)\n"
         "print(n)\n")


@pytest.fixture
def big(lab: Lab, overlay: OverlayFactory) -> Overlay:
    """Two hosts; m1 (h1) and m2 (h2) raised their MTU to 9000 in network
    "big"; o1 and o2 kept theirs (1450) in "other"."""
    ov = overlay(NETS, PLACE, host_options={"ageing": 2})   # ageing sweeps every 0.2 s
    for c in ("m1", "m2"):
        lab.run(lab.container_netns(c), ["ip", "link", "set", "eth0", "mtu", "9000"], check=True)
    assert ov.query("h1", "status")["features"]["udp_gso"] is True
    return ov


def port_stats(ov: Overlay, host: str, netns: str) -> dict[str, Any]:
    return next(p for p in ov.query(host, "stats")["ports"] if p["netns"] == netns)


def net_stats(ov: Overlay, host: str, name: str) -> dict[str, Any]:
    return next(n for n in ov.query(host, "stats")["networks"] if n["name"] == name)


@needs("ping")
def test_ping_with_df_over_the_underlay_gets_frag_needed(lab: Lab, big: Overlay) -> None:
    m1 = lab.container_netns("m1")
    done = lab.run(m1, ["ping", "-M", "do", "-s", "8000", "-c", "2", "-W", "1", "10.0.0.3"],
                   timeout=20)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert re.search(r"Frag needed.*mtu ?= ?1450", out), out
    # m1's kernel took the answer: its route to m2 now says 1450.
    route = lab.run(m1, ["ip", "route", "get", "10.0.0.3"], check=True).stdout
    assert "mtu 1450" in route, route
    assert port_stats(big, "h1", m1)["drops"].get("frag_needed", 0) >= 1
    assert net_stats(big, "h1", "big")["drops"].get("frag_needed", 0) >= 1
    assert "frag_needed" not in net_stats(big, "h1", "other")["drops"]
    # Small pings still pass.
    assert ping(lab, m1, "10.0.0.3", 2) == 2


@needs("tshark", "ethtool")
def test_tcp_finds_the_path_mtu_and_nothing_fragments_on_the_underlay(
        lab: Lab, big: Overlay, tmp_path: Path) -> None:
    """A transfer from m1 (MTU 9000) completes byte-identical thanks to path
    MTU discovery, one from o1 (MTU 1450) goes at full size as before, and
    the underlay carries no IP fragment and no datagram over 1500."""
    m1, m2 = lab.container_netns("m1"), lab.container_netns("m2")
    o1, o2 = lab.container_netns("o1"), lab.container_netns("o2")
    for h in ("h1", "h2"):
        # The lab's veths pass UDP GSO packets whole, where a NIC would cut
        # them: cut them before the capture point, so tshark sees what a
        # wire would carry.
        lab.run(lab.host(h).netns, ["ethtool", "-K", "ul0", "tx-udp-segmentation", "off"],
                check=True)
    errpath, pcap = tmp_path / "tshark.err", tmp_path / "underlay.pcap"
    # Every VXLAN datagram, every fragment, every frame over 1514 bytes,
    # written to a file as they come (decoding live would fall behind).
    tshark = start_tshark(lab, lab.host("h1").netns, errpath, [
        "-i", "ul0", "-f", "udp port 4789 or (ip[6:2] & 0x3fff != 0) or greater 1515",
        "-w", str(pcap)])
    try:
        checked_transfer(lab, m1, m2, "10.0.0.3", 8 * 1024 * 1024)
        checked_transfer(lab, o1, o2, "10.0.1.3", 8 * 1024 * 1024)
        time.sleep(0.5)
    finally:
        terminate(tshark, sig=signal.SIGINT)
    # VXLAN left undecoded, so each field is the outer header's.
    done = subprocess.run(["tshark", "-n", "-r", str(pcap), "--disable-protocol", "vxlan",
                           "-T", "fields", "-E", "separator=/t", "-e", "frame.len",
                           "-e", "ip.len", "-e", "ip.flags.mf", "-e", "ip.frag_offset"],
                          capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) > 8000, f"tshark saw too little: {len(rows)} {errpath.read_text()}"
    frags = [r for r in rows if r[2] not in ("0", "False") or r[3] not in ("0", "")]
    assert not frags, f"IP fragments on the underlay: {frags[:5]}"
    sizes = [int(r[1]) for r in rows]
    assert max(sizes) == 1500, f"largest outer IP packet {max(sizes)}, not 1500"
    assert sum(1 for n in sizes if n == 1500) > 4000, "segments not at full size"
    assert all(int(r[0]) <= 1514 for r in rows)
    # m1 sent super-frames too big at first: dropped and answered.
    assert port_stats(big, "h1", m1)["drops"].get("frag_needed", 0) >= 1
    assert "frag_needed" not in port_stats(big, "h1", o1)["drops"]


@needs("iperf3")
def test_a_container_sending_big_frames_leaves_the_others_alone(
        lab: Lab, big: Overlay) -> None:
    """o1 -> o2 throughput (iperf3, one stream) alone and while m1 sends
    2000 8000-byte DF datagrams a second, rounds interleaved (the machine is
    shared): medians reported, asserted only not below a third.  Every big
    datagram is dropped as frag_needed, and GSO stays on."""
    m1, o1, o2 = (lab.container_netns(c) for c in ("m1", "o1", "o2"))
    rounds, seconds, rate = 3, 3.0, 2000

    def gbits() -> float:
        data = bench.iperf(lab, o1, o2, "10.0.1.3", seconds, 1)
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9

    alone: list[float] = []
    flooded: list[float] = []
    sent = 0
    before = port_stats(big, "h1", m1)["drops"].get("frag_needed", 0)
    # m1 knows m2's MAC first: datagrams held while ARP is pending are
    # dropped by m1's own kernel past a few, never reaching uvxlan.
    assert ping(lab, m1, "10.0.0.3", 2) >= 1
    for _ in range(rounds):
        alone.append(gbits())
        flood = lab.spawn(m1, [sys.executable, "-c", FLOOD, "10.0.0.3", str(seconds + 1.5),
                               str(rate)], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            flooded.append(gbits())
            out, _ = flood.communicate(timeout=seconds + 20)
            sent += int(out.strip() or 0)
        finally:
            terminate(flood)
    dropped = port_stats(big, "h1", m1)["drops"].get("frag_needed", 0) - before
    a, f = statistics.median(alone), statistics.median(flooded)
    print(f"\no1 -> o2 TCP, median of {rounds} x {seconds:.0f} s: alone {a:.2f} Gbit/s "
          f"{[round(x, 2) for x in alone]}, while m1 sends {rate}/s big frames "
          f"({sent} sent, {dropped} dropped as frag_needed): {f:.2f} Gbit/s "
          f"{[round(x, 2) for x in flooded]} ({f / a:.2f}x)")
    assert dropped == sent > 0
    assert f >= a / 3, (alone, flooded)
    time.sleep(0.5)                                   # an ageing sweep reports GSO events
    assert big.query("h1", "status")["features"]["udp_gso"] is True
    assert "udp_error" not in port_stats(big, "h1", o1)["drops"]
