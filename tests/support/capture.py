"""Watch the underlay while traffic flows: tshark decodes VXLAN on a lab
host's interface during a ping between containers (the interop tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from uvxlan.capture import CHUNK, END, CaptureRequest
from uvxlan.lab.netns import Lab, terminate


def ping_run(lab: Lab, netns: str, dst: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return lab.run(netns, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", dst],
                   timeout=count + 15)


def start_tshark(lab: Lab, netns: str, errpath: Path,
                 args: list[str]) -> subprocess.Popen[str]:
    """tshark ARGS in netns, stdout piped, stderr to errpath; returns once it
    is capturing (so nothing sent after this is missed).  The caller ends
    it with terminate()."""
    with open(errpath, "w") as err:
        tshark = lab.spawn(netns, ["tshark", "-n", "-l", *args],
                           stdout=subprocess.PIPE, stderr=err, text=True)
    deadline = time.monotonic() + 15
    try:
        while "Capturing on" not in errpath.read_text():
            assert tshark.poll() is None, f"tshark exited: {errpath.read_text().strip()}"
            assert time.monotonic() < deadline, "tshark did not start capturing"
            time.sleep(0.05)
    except BaseException:
        terminate(tshark)
        raise
    return tshark


def capture_vxlan(lab: Lab, netns: str, iface: str, port: int, workdir: Path, src_ns: str,
             dst: str) -> tuple[list[list[str]], str]:
    """tshark on netns's iface while src_ns pings dst; rows of (vni, eth.src, eth.dst)."""
    count = 6
    errpath = workdir / "tshark.err"
    tshark = start_tshark(
        lab, netns, errpath,
        ["-i", iface, "-f", f"udp port {port}", "-d", f"udp.port=={port},vxlan",
         "-a", "duration:20", "-c", str(count), "-T", "fields", "-E", "separator=/t",
         "-e", "vxlan.vni", "-e", "eth.src", "-e", "eth.dst"])
    try:
        ping = ping_run(lab, src_ns, dst, count=4)
        try:
            out, _ = tshark.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("tshark did not finish")
    finally:
        terminate(tshark)
    assert ping.returncode == 0, f"ping during capture failed: {ping.stdout}"
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return rows, errpath.read_text()


def assert_learned_remote(fdb: list[dict[str, object]], mac: str, vni: int, remote: str,
                          port: int) -> None:
    """A uvxlan agent's FDB (the control socket's "fdb" answer) learned mac
    behind the VTEP remote:port in vni."""
    entries = [e for e in fdb if e["mac"] == mac]
    assert len(entries) == 1, f"uvxlan has no FDB entry for {mac}: {entries}"
    (entry,) = entries
    assert entry["vni"] == vni
    assert entry["static"] is False
    assert entry["remote"] == remote
    assert entry["remote_port"] == port, (
        f"uvxlan learned {mac} at {entry['remote']}:{entry['remote_port']}, not port {port}")


def assert_wire_carries(rows: list[list[str]], err: str, port: int, vni: int,
                        mac1: str, mac2: str) -> None:
    """capture_vxlan's rows hold only vni, and frames mac1 -> mac2 and back
    as inner Ethernet (eth.src and eth.dst are "outer,inner")."""
    assert rows, f"tshark captured nothing on udp port {port}: {err.strip()}"
    vnis = {r[0] for r in rows}
    assert vnis == {str(vni)}, f"captured VNIs {vnis}, expected {vni}: {rows}"
    inner = [(r[1].split(",")[-1], r[2].split(",")[-1]) for r in rows
             if len(r) == 3 and "," in r[1] and "," in r[2]]
    assert (mac1, mac2) in inner, f"no frame {mac1} -> {mac2} on the wire: {rows}"
    assert (mac2, mac1) in inner, f"no frame {mac2} -> {mac1} on the wire: {rows}"


def vxlan_segments(pcap: Path) -> list[tuple[int, int, bytes]]:
    """Every VXLAN segment in a pcap of outer IPv4/UDP frames: (flags byte,
    group field, inner frame).  A datagram captured before the kernel cut it
    (UDP_SEGMENT on a veth that passes GSO on) holds several segments back to
    back; each is walked by its inner IPv4 total length, so a header missing
    from any segment but the first is seen, which tshark (first only) misses."""
    from scapy.utils import RawPcapReader

    segments: list[tuple[int, int, bytes]] = []
    for frame, _meta in RawPcapReader(str(pcap)):
        ihl = (frame[14] & 0x0F) * 4
        payload = bytes(frame[14 + ihl + 8:])
        while len(payload) >= 8 + 14:
            flags, group = payload[0], int.from_bytes(payload[2:4], "big")
            inner = payload[8:]
            length = len(inner)
            if inner[12:14] == b"\x08\x00" and len(inner) >= 14 + 4:
                length = min(length, 14 + int.from_bytes(inner[16:18], "big"))
            segments.append((flags, group, inner[:length]))
            payload = inner[length:]
    return segments


def tcp_payload_len(frame: bytes) -> int:
    """TCP payload bytes of an Ethernet/IPv4/TCP frame; 0 for anything else."""
    if frame[12:14] != b"\x08\x00" or len(frame) < 34 or frame[23] != 6:
        return 0
    ihl = (frame[14] & 0x0F) * 4
    if len(frame) < 14 + ihl + 13:
        return 0
    doff = (frame[14 + ihl + 12] >> 4) * 4
    return int.from_bytes(frame[16:18], "big") - ihl - doff


def stalled_client(sock_path: str, request: CaptureRequest) -> socket.socket:
    """A capture client that sends its request and then never reads."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(sock_path)
    s.sendall(json.dumps(request.to_json()).encode() + b"\n")
    return s


def read_end(s: socket.socket, timeout: float = 30.0) -> dict[str, int]:
    """Stop a capture client's capture and read its stream to the final counts."""
    s.shutdown(socket.SHUT_WR)
    s.settimeout(timeout)
    data = bytearray()
    while chunk := s.recv(1 << 20):
        data += chunk
    at = data.index(b"\n") + 1
    assert "capture" in json.loads(data[:at])
    end = None
    while at < len(data):
        kind, size = CHUNK.unpack_from(data, at)
        if kind == END:
            end = json.loads(data[at + CHUNK.size:at + CHUNK.size + size])
        at += CHUNK.size + size
    assert end is not None, "no end chunk"
    return end
