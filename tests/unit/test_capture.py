"""Live capture's pure parts: the C ring (wrap, overflow counted, snap
length, two threads), the C filter (each field, and never a read past a
short frame), the outer headers --outer shows (scapy decodes them), and
the request, pcap and stream helpers of uvxlan.capture."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import signal
import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import PcapNgReader, rdpcap

from tests.support import native_testing as t
from uvxlan import capture, capture_agent
from uvxlan.errors import ConfigError, NativeError, UvxlanError
from uvxlan.native import CAPTURE_POINTS

PORT_IN, PORT_OUT = CAPTURE_POINTS["port-in"], CAPTURE_POINTS["port-out"]
WIRE_IN, WIRE_OUT = CAPTURE_POINTS["wire-in"], CAPTURE_POINTS["wire-out"]
F_VNI, F_PORT, F_MAC, F_ETHERTYPE = 1, 2, 4, 8      # UVX_CAP_F_* (checked below)
A, B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def record(rec: bytes) -> tuple[int, int, int, int, bytes]:
    """A record: seconds, nanoseconds, bytes kept, length, the bytes."""
    sec, ns, caplen, origlen, _, _, _ = capture.RECORD.unpack_from(rec)
    assert len(rec) == capture.RECORD.size + caplen
    return sec, ns, caplen, origlen, rec[capture.RECORD.size:]


def test_record_header_is_the_c_one() -> None:
    from uvxlan.native import lib
    assert capture.RECORD.size == lib.UVX_CAPTURE_REC_HLEN
    # A record's point is its bit's position: POINTS' order is the bits'.
    assert [CAPTURE_POINTS[p] for p in capture.POINTS] == [1, 2, 4, 8]


def test_record_names_point_vni_and_port() -> None:
    r = t.CapRing(2, 64)
    r.put(b"a" * 20, point=3, vni=0xABCDEF, port=-1)
    r.put(b"b" * 20, point=0, vni=7, port=12)
    assert capture.RECORD.unpack_from(r.take())[4:] == (3, 0xABCDEF, -1)
    assert capture.RECORD.unpack_from(r.take())[4:] == (0, 7, 12)


def test_filter_bits_are_the_c_ones() -> None:
    from uvxlan.native import lib
    assert (F_VNI, F_PORT, F_MAC, F_ETHERTYPE) == (
        lib.UVX_CAP_F_VNI, lib.UVX_CAP_F_PORT, lib.UVX_CAP_F_MAC, lib.UVX_CAP_F_ETHERTYPE)


def test_ring_wraps_in_order() -> None:
    r = t.CapRing(4, 256)
    for i in range(3):
        assert r.put(bytes([i]) * 60, ts_ns=i)
    assert [record(r.take())[4][0] for _ in range(2)] == [0, 1]
    # Three more: the slots of 0 and 1 are used again (head passes the end).
    for i in range(3, 6):
        assert r.put(bytes([i]) * 60, ts_ns=i)
    got = []
    while rec := r.take():
        got.append(record(rec))
    assert [g[4][0] for g in got] == [2, 3, 4, 5]
    assert all(g[4] == bytes([g[4][0]]) * 60 for g in got)
    assert r.counts() == (6, 0)
    assert r.take() == b""


def test_ring_full_counts_missed_and_never_overwrites() -> None:
    r = t.CapRing(4, 64)
    assert [r.put(bytes([i]) * 20) for i in range(6)] == [True] * 4 + [False] * 2
    assert r.counts() == (4, 2)
    # The oldest frames are kept, not the newest: a full ring drops arrivals.
    assert record(r.take())[4] == bytes([0]) * 20
    assert r.put(bytes([9]) * 20)
    assert [record(r.take())[4][0] for _ in range(4)] == [1, 2, 3, 9]
    assert r.counts() == (5, 2)


def test_snaplen_keeps_the_head_and_the_length() -> None:
    r = t.CapRing(2, 64)
    frame = bytes(range(200))
    r.put(frame, ts_ns=3_000_000_007)
    sec, ns, caplen, origlen, data = record(r.take())
    assert (sec, ns, caplen, origlen) == (3, 7, 64, 200)
    assert data == frame[:64]
    # Outer headers come first and count in both lengths.
    r.put(frame[:40], outer=b"\xee" * 50)
    _, _, caplen, origlen, data = record(r.take())
    assert (caplen, origlen) == (64, 90)
    assert data == b"\xee" * 50 + frame[:14]


def test_take_leaves_a_record_that_does_not_fit() -> None:
    r = t.CapRing(2, 128)
    r.put(b"x" * 100)
    assert r.take(cap=capture.RECORD.size + 99) == b""
    assert len(r.take(cap=capture.RECORD.size + 100)) == capture.RECORD.size + 100


def test_one_producer_one_consumer_on_two_threads() -> None:
    n = 300_000
    taken, missed, in_order = t.capring_race(1024, n)
    assert in_order, "a frame came torn, twice or out of order"
    assert taken + missed == n
    assert taken >= 1024


def frame(src: bytes = A, dst: bytes = B, ethertype: int = 0x0800, vlan: int | None = None,
          size: int = 64) -> bytes:
    head = dst + src
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    head += struct.pack("!H", ethertype)
    return head + bytes(max(0, size - len(head)))


def test_filter_points_vni_port() -> None:
    f = frame()
    assert t.capture_match(f, point=PORT_IN, f_points=PORT_IN | WIRE_IN)
    assert not t.capture_match(f, point=PORT_OUT, f_points=PORT_IN | WIRE_IN)
    assert t.capture_match(f, point=WIRE_IN, vni=42, f_points=WIRE_IN, f_match=F_VNI, f_vni=42)
    assert not t.capture_match(f, point=WIRE_IN, vni=43, f_points=WIRE_IN, f_match=F_VNI,
                               f_vni=42)
    assert t.capture_match(f, point=PORT_OUT, port=3, f_points=PORT_OUT, f_match=F_PORT,
                           f_port=3)
    assert not t.capture_match(f, point=WIRE_IN, port=-1, f_points=WIRE_IN, f_match=F_PORT,
                               f_port=3)


def test_filter_mac_source_or_destination() -> None:
    c = bytes.fromhex("020000000003")
    kw = dict(point=PORT_IN, f_points=PORT_IN, f_match=F_MAC)
    assert t.capture_match(frame(src=A, dst=B), f_mac=A, **kw)
    assert t.capture_match(frame(src=B, dst=A), f_mac=A, **kw)
    assert not t.capture_match(frame(src=B, dst=c), f_mac=A, **kw)


def test_filter_ethertype_also_behind_a_vlan_tag() -> None:
    kw = dict(point=PORT_IN, f_points=PORT_IN, f_match=F_ETHERTYPE, f_ethertype=0x0806)
    assert t.capture_match(frame(ethertype=0x0806), **kw)
    assert t.capture_match(frame(ethertype=0x0806, vlan=10), **kw)
    assert not t.capture_match(frame(ethertype=0x0800), **kw)
    assert not t.capture_match(frame(ethertype=0x0800, vlan=10), **kw)


@pytest.mark.parametrize("size", range(0, 19))
def test_filter_reads_only_what_a_short_frame_has(size: int) -> None:
    """A frame too short for a field (both MACs; the EtherType behind the
    tag) never matches on it.  The bytes past
    the frame would match if they were read: the test module's buffers are
    exact, so a read past the end would also be seen by a sanitizer build."""
    full = frame(src=A, dst=A, ethertype=0x0806, vlan=5)[:18]   # VLAN tag, then ARP
    short = full[:size]
    assert t.capture_match(short, point=PORT_IN, f_points=PORT_IN, f_match=F_MAC,
                           f_mac=A) == (size >= 12)
    assert t.capture_match(short, point=PORT_IN, f_points=PORT_IN, f_match=F_ETHERTYPE,
                           f_ethertype=0x0806) == (size >= 18)
    # No field asked: anything matches, even an empty frame.
    assert t.capture_match(short, point=PORT_IN, f_points=PORT_IN)


def test_outer_headers_decode_as_vxlan() -> None:
    inner = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                  / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    vxh = bytes.fromhex("0800000000012c00")          # I flag, VNI 300
    outer = t.capture_outer("10.77.0.1", "10.77.0.2", 40001, 4789, vxh, len(inner))
    eth = Ether(outer + inner)
    assert (eth.src, eth.dst, eth.type) == ("00:00:00:00:00:00", "00:00:00:00:00:00", 0x0800)
    pkt = eth[IP]
    assert (pkt.src, pkt.dst, pkt.flags, pkt.ttl, pkt.len) == (
        "10.77.0.1", "10.77.0.2", "DF", 64, 36 + len(inner))
    fresh = IP(bytes(pkt))
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == pkt.chksum        # the IPv4 checksum is right
    assert (pkt[UDP].sport, pkt[UDP].dport, pkt[UDP].len, pkt[UDP].chksum) == (
        40001, 4789, 16 + len(inner), 0)
    assert pkt[VXLAN].vni == 300
    assert pkt[ARP].pdst == "10.0.0.2"


# uvxlan.capture: the request and the stream ---------------------------------


def test_ring_sizes_are_checked_before_anything_is_allocated() -> None:
    """On a datapath without sockets or ports: no root needed."""
    from uvxlan.config import DatapathConfig
    from uvxlan.native import Datapath
    dp = Datapath(DatapathConfig(local_ip="127.0.0.1"))
    try:
        for kw, why in [(dict(snaplen=10), "--snaplen 10: 64 to 65585"),
                        (dict(snaplen=2048, slots=70000), "--slots 70000: at most 65536"),
                        (dict(snaplen=65535, slots=65536),
                         "--slots 65536 of --snaplen 65535: more than 256 MiB per")]:
            with pytest.raises(ConfigError, match=why):
                dp.capture_start(["port-in"], **kw)  # type: ignore[arg-type]
        assert dp.capture_stop() is None            # none was started
        st = dp.capture_start(["port-in"], snaplen=2048)
        assert (st.slots, st.snaplen, st.captured, st.missed) == (4032, 2048, 0, 0)
        with pytest.raises(NativeError):
            dp.capture_start(["port-in"], snaplen=2048)   # one at a time
        assert dp.capture_stop() is not None
    finally:
        dp.close()


def test_points_by_default_and_by_name() -> None:
    assert capture.CaptureRequest().points() == ("port-in", "wire-in")
    assert capture.CaptureRequest(outer=True).points() == ("wire-in", "wire-out")
    assert capture.CaptureRequest(port="c1").points() == ("port-in", "port-out")
    assert capture.parse_at("wire-out,port") == ("port-in", "port-out", "wire-out")
    assert capture.parse_at("all") == tuple(capture.POINTS)
    with pytest.raises(ConfigError, match="--at 'tap'"):
        capture.parse_at("tap")
    assert set(capture.POINTS) == set(CAPTURE_POINTS)


def test_ethertype_names_and_numbers() -> None:
    assert capture.parse_ethertype("ARP") == 0x0806
    assert capture.parse_ethertype("0x86dd") == 0x86DD
    assert capture.parse_ethertype("2048") == 0x0800
    for bad in ("ip", "0x05ff", "70000"):
        with pytest.raises(ConfigError, match="--ethertype"):
            capture.parse_ethertype(bad)


def test_request_round_trip_and_refusals() -> None:
    req = capture.CaptureRequest(network="net1", port="c1/eth0", mac="02:00:00:00:00:01",
                                 ethertype=0x0806, outer=True, snaplen=128,
                                 at=("wire-out",), slots=64)
    assert capture.CaptureRequest.from_json(req.to_json()) == req
    for bad, field in [({"mac": "02:00:00:00:00"}, "mac"), ({"snaplen": -1}, "snaplen"),
                       ({"snaplen": "big"}, "snaplen"), ({"ethertype": 12}, "ethertype"),
                       ({"at": "wire"}, "at"), ({"network": 5}, "network"),
                       ({"outer": 1}, "outer"), ({"slots": True}, "slots")]:
        with pytest.raises(ConfigError, match=field):
            capture.CaptureRequest.from_json({"cmd": "capture", **bad})


def test_pcap_header_and_records() -> None:
    magic, major, minor, zone, sigfigs, snaplen, link = capture.PCAP_HEADER.unpack(
        capture.pcap_header(2048))
    assert (magic, major, minor, zone, sigfigs, snaplen, link) == (
        0xA1B23C4D, 2, 4, 0, 0, 2048, 1)
    r = t.CapRing(8, 64)
    for n in (10, 100, 64):
        r.put(b"z" * n)
    data = b"".join(r.take() for _ in range(3))
    assert capture.count_records(data) == 3
    assert capture.count_records(b"") == 0


# The stream between uvxlan capture and the agent, with a fake node -------------


class FakeNode:
    """What capture_agent asks of a Node: networks, endpoints, the capture
    calls.  Hands out `frames` records over a few drains, then nothing."""

    def __init__(self, frames: list[bytes], busy: bool = False) -> None:
        self.cfg = SimpleNamespace(host=SimpleNamespace(name="h1"))
        self.networks = {300: "net1"}
        self.endpoints = [
            SimpleNamespace(port=0, cfg=SimpleNamespace(netns="c1", ifname="eth0")),
            SimpleNamespace(port=1, cfg=SimpleNamespace(netns="/proc/77/ns/net", ifname="eth0")),
            SimpleNamespace(port=2, cfg=SimpleNamespace(netns="/proc/77/ns/net", ifname="eth1")),
        ]
        self.records = [capture.RECORD.pack(1, i, len(f), len(f), i % 4, 300, i - 1) + f
                        for i, f in enumerate(frames)]
        self.busy = busy
        self.started: dict[str, Any] | None = None
        self.stopped = False

    def capture_start(self, points: Any, **match: Any) -> SimpleNamespace:
        if self.busy:
            raise NativeError(errno.EBUSY, "starting a capture: busy")
        self.started = dict(points=tuple(points), **match)
        return self.capture_stats()

    def capture_drain(self) -> bytes:
        out, self.records = b"".join(self.records[:2]), self.records[2:]
        return out

    def capture_stats(self) -> SimpleNamespace:
        return SimpleNamespace(captured=7, missed=2, drained=5, slots=64, snaplen=2048)

    def capture_stop(self) -> SimpleNamespace:
        self.stopped = True
        return self.capture_stats()


def run_against(node: FakeNode, req: capture.CaptureRequest, tmp_path: Path,
                stop_after: float, pcapng: bool = False) -> tuple[capture.CaptureResult, bytes]:
    """run_capture against capture_agent.serve on a thread's event loop;
    SIGINT after stop_after seconds, as Ctrl-C."""
    path = str(tmp_path / "a.sock")
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        await capture_agent.serve(node, json.loads(line), 0, reader, writer)  # type: ignore[arg-type]
        writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path)
        ready.set()
        async with server:
            while not stopping.is_set():
                await asyncio.sleep(0.02)

    stopping = threading.Event()
    t = threading.Thread(target=loop.run_until_complete, args=(main(),))
    t.start()
    ready.wait(5)
    timer = threading.Timer(stop_after, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    out = io.BytesIO()
    try:
        result = capture.run_capture(path, req, lambda: out, pcapng=pcapng)
    finally:
        timer.cancel()
        stopping.set()
        t.join(5)
        loop.close()
    return result, out.getvalue()


def test_stream_to_a_valid_pcap_and_final_counts(tmp_path: Path) -> None:
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / UDP()
                    / (bytes([i]) * 10)) for i in range(5)]
    node = FakeNode(frames)
    req = capture.CaptureRequest(network="net1", port="c1", mac="02:00:00:00:00:01")
    result, data = run_against(node, req, tmp_path, 0.5)
    assert node.started == dict(points=("port-in", "port-out"), vni=300, port=0,
                                mac="02:00:00:00:00:01", ethertype=None, outer=False,
                                snaplen=2048, slots=0)
    assert node.stopped
    # Drained 5, captured 7: the 2 never drained count as missed, with the 2 missed.
    assert (result.frames, result.missed, result.ended_by) == (5, 4, "you")
    assert capture.report(result) == "5 frames captured, 4 missed by the capture"
    pcap = tmp_path / "x.pcap"
    pcap.write_bytes(data)
    assert [bytes(p) for p in rdpcap(str(pcap))] == frames


def test_pcapng_says_where_each_frame_was_taken(tmp_path: Path) -> None:
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / UDP()
                    / (bytes([i]) * (10 + i))) for i in range(5)]
    result, data = run_against(FakeNode(frames), capture.CaptureRequest(), tmp_path, 0.5,
                               pcapng=True)
    assert result.frames == 5
    pcap = tmp_path / "x.pcapng"
    pcap.write_bytes(data)
    got = list(PcapNgReader(str(pcap)))
    assert [bytes(p) for p in got] == frames
    # Record i: point i % 4 (an interface each), VNI 300 (net1), port i - 1.
    assert [p.sniffed_on for p in got] == [
        f"h1:{tuple(capture.POINTS)[i % 4]}" for i in range(5)]
    assert [p.comment for p in got] == [
        b"net1 (VNI 300)", b"net1 (VNI 300), port 0 (c1/eth0)",
        b"net1 (VNI 300), port 1 (/proc/77/ns/net/eth0)",
        b"net1 (VNI 300), port 2 (/proc/77/ns/net/eth1)", b"net1 (VNI 300), port 3"]
    assert [p.time for p in got] == [1 + i / 1e9 for i in range(5)]


@pytest.mark.parametrize("spec, port", [("c1", 0), ("c1/eth0", 0), ("2", 2),
                                        ("/proc/77/ns/net/eth1", 2)])
def test_port_by_number_netns_or_path(spec: str, port: int) -> None:
    node = FakeNode([])
    assert capture_agent.resolve(node, capture.CaptureRequest(port=spec)) == (None, port)  # type: ignore[arg-type]


@pytest.mark.parametrize("req, busy, error", [
    (capture.CaptureRequest(network="net9"), False, "--network net9: not served by this "
     "agent (its networks: net1)"),
    (capture.CaptureRequest(port="7"), False, "--port 7: no such port on this agent"),
    (capture.CaptureRequest(port="c2"), False, "--port c2: no endpoint in that netns"),
    (capture.CaptureRequest(port="/proc/77/ns/net"), False, "--port /proc/77/ns/net: several "
     "endpoints in that netns: name one as NETNS/IFNAME"),
    (capture.CaptureRequest(), True, "capture: another capture runs on this agent "
     "(one at a time)"),
])
def test_refusals_are_one_line(tmp_path: Path, req: capture.CaptureRequest, busy: bool,
                               error: str) -> None:
    node = FakeNode([], busy=busy)
    with pytest.raises(UvxlanError) as err:
        run_against(node, req, tmp_path, 5.0)
    assert str(err.value).startswith(f"agent: {error}")
    assert not node.stopped
