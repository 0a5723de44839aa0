"""Live capture: what ``uvxlan capture`` and the agent share, and the client.

The agent's C fast path copies the frames a filter matches into a bounded
ring per datapath thread (csrc/capture.c); the agent drains the rings while
a client reads (``uvxlan.capture_agent``) and streams them over its control
socket; the client writes pcap (LINKTYPE_ETHERNET, nanosecond timestamps)
to a file or to stdout, or pcapng, where each frame also says where it was
taken (an interface per point), its network and its port (a comment).  A
client that reads slowly, or not at all, never slows forwarding: the agent
stops draining, the rings fill, and the frames that find them full are
counted as missed.

On the control socket, after the request line ``{"cmd": "capture", ...}``
(``CaptureRequest.to_json``) the agent answers one JSON line,
``{"capture": {...}}`` (what it captures: points, VNI, port, snaplen,
slots) or ``{"error": "..."}``; then chunks, each a type byte and a length
(``CHUNK``) before its payload:

    P  records (whole ones, ``RECORD`` then the bytes kept), oldest first
    S  {"captured": n, "missed": n} so far, about every STATS_S seconds
    E  the same, final: the capture is over (the agent closes after it)

The client ends a capture by shutting its side down (SIGINT, SIGTERM, a
closed pipe); the agent then sends what is left, E, and closes.  A client
that goes away ends the capture too.

Only root (or the agent's own user) may capture: inner frames are the
containers' private traffic, so a ``control_group`` member, who may read
the counters, may not read the frames.

This module loads no C: the command line imports it to run a capture.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any, BinaryIO

from uvxlan.errors import ConfigError, UvxlanError

#: Where the switch sees a frame, by the names ``--at`` takes, each with its
#: C name (UVX_CAP_<name> in csrc/uvx.h; uvxlan.native maps them).
POINTS: dict[str, str] = {
    "port-in": "TAP_RX",      # read from a container's port
    "port-out": "TAP_TX",     # written to a container's port
    "wire-in": "WIRE_RX",     # decapsulated from the wire (once admitted)
    "wire-out": "WIRE_TX",    # encapsulated for the wire (each datagram)
}
#: Names for sets of points.
POINT_SETS: dict[str, tuple[str, ...]] = {
    "in": ("port-in", "wire-in"),      # each frame once, as it enters the switch
    "out": ("port-out", "wire-out"),
    "port": ("port-in", "port-out"),
    "wire": ("wire-in", "wire-out"),
    "all": tuple(POINTS),
}
#: EtherTypes by name for --ethertype (a number works too).
ETHERTYPES: dict[str, int] = {"ipv4": 0x0800, "arp": 0x0806, "ipv6": 0x86DD,
                              "vlan": 0x8100, "lldp": 0x88CC}

SNAPLEN_DEFAULT = 2048        # a whole 1514-byte frame, with --outer's 50 bytes
PCAP_MAGIC_NS = 0xA1B23C4D    # pcap with nanosecond timestamps, in our byte order
LINKTYPE_ETHERNET = 1
PCAP_HEADER = struct.Struct("=IHHiIII")
# A record as the agent sends it (UVX_CAPTURE_REC_HLEN in csrc/uvx.h):
# seconds, nanoseconds, bytes kept, length (a pcap record header), then
# the point (its index in POINTS), the VNI, the port (-1: none).
RECORD = struct.Struct("=IIIIIIi")
PCAP_RECORD = 16                    # the pcap record header's part of it
CHUNK = struct.Struct("!cI")
DATA, STATS, END = b"P", b"S", b"E"
STATS_S = 0.5

# How long the client waits for the agent's last chunk after it asked to stop.
END_WAIT_S = 5.0


def parse_at(text: str) -> tuple[str, ...]:
    """--at: point names and set names, comma-separated, in POINTS' order."""
    chosen: set[str] = set()
    for word in filter(None, (w.strip() for w in text.split(","))):
        if word in POINTS:
            chosen.add(word)
        elif word in POINT_SETS:
            chosen.update(POINT_SETS[word])
        else:
            raise ConfigError(f"--at {word!r}: not one of "
                              f"{', '.join([*POINTS, *POINT_SETS])}")
    if not chosen:
        raise ConfigError("--at: name at least one point")
    return tuple(p for p in POINTS if p in chosen)


def parse_ethertype(text: str) -> int:
    """--ethertype: a name (ipv4, arp, ...) or a number (0x0806, 2054)."""
    if text.lower() in ETHERTYPES:
        return ETHERTYPES[text.lower()]
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(f"--ethertype {text!r}: a number (0x0806) or one of "
                          f"{', '.join(ETHERTYPES)}") from None
    if not 0x0600 <= value <= 0xFFFF:
        raise ConfigError(f"--ethertype {text}: an EtherType is 0x0600 to 0xffff")
    return value


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class CaptureRequest:
    """What to capture: a client's request, checked again by the agent."""

    network: str | None = None     # a network's name or VNI
    port: str | None = None        # a port number, or an endpoint's NETNS[/IFNAME]
    mac: str | None = None         # source or destination
    ethertype: int | None = None
    outer: bool = False            # with the outer IPv4/UDP/VXLAN headers
    snaplen: int = SNAPLEN_DEFAULT
    at: tuple[str, ...] = field(default=())   # empty: chosen by points()
    slots: int = 0                 # per datapath thread; 0: the agent's default

    def points(self) -> tuple[str, ...]:
        """The points asked for; by default, where each frame is seen once:
        the wire with --outer (only there are outer headers), both
        directions of --port's port, else where frames enter the switch."""
        if self.at:
            return self.at
        if self.outer:
            return POINT_SETS["wire"]
        if self.port is not None:
            return POINT_SETS["port"]
        return POINT_SETS["in"]

    def to_json(self) -> dict[str, Any]:
        return {"cmd": "capture", **asdict(self), "at": list(self.at)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CaptureRequest:
        """The request in a control socket line; ConfigError naming the
        field that is wrong."""
        def text(name: str) -> str | None:
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"capture: {name} must be a string")
            return value

        def number(name: str, default: int) -> int:
            value = obj.get(name, default)
            if type(value) is not int or value < 0:
                raise ConfigError(f"capture: {name} must be a whole number")
            return value

        mac = text("mac")
        if mac is not None:
            mac = mac.lower()
            if not _MAC.fullmatch(mac):
                raise ConfigError(f"capture: mac {mac!r} is not a MAC address")
        ethertype = obj.get("ethertype")
        if ethertype is not None and (type(ethertype) is not int
                                      or not 0x0600 <= ethertype <= 0xFFFF):
            raise ConfigError("capture: ethertype must be 0x0600 to 0xffff")
        at = obj.get("at") or []
        if not isinstance(at, list) or not all(isinstance(p, str) for p in at):
            raise ConfigError("capture: at must be a list of point names")
        outer = obj.get("outer", False)
        if not isinstance(outer, bool):
            raise ConfigError("capture: outer must be true or false")
        return cls(network=text("network"), port=text("port"), mac=mac,
                   ethertype=ethertype, outer=outer,
                   snaplen=number("snaplen", SNAPLEN_DEFAULT),
                   at=parse_at(",".join(at)) if at else (), slots=number("slots", 0))


def pcap_header(snaplen: int) -> bytes:
    """The pcap global header: version 2.4, LINKTYPE_ETHERNET."""
    return PCAP_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def records(data: bytes) -> Iterator[tuple[tuple[int, ...], memoryview]]:
    """Each record in data (whole ones, as the agent sends them): its
    header's fields and its bytes."""
    view, at = memoryview(data), 0
    while at + RECORD.size <= len(data):
        head = RECORD.unpack_from(data, at)
        start = at + RECORD.size
        at = start + head[2]
        yield head, view[start:at]


class PcapWriter:
    """pcap (nanosecond timestamps, LINKTYPE_ETHERNET): the point, VNI
    and port of each frame have no place in it."""

    def __init__(self, out: BinaryIO, info: dict[str, Any]) -> None:
        self.out = out
        out.write(pcap_header(int(info["snaplen"])))

    def write(self, data: bytes) -> int:
        parts: list[bytes | memoryview] = []
        n = 0
        for head, frame in records(data):
            parts += [RECORD.pack(*head)[:PCAP_RECORD], frame]
            n += 1
        self.out.write(b"".join(parts))
        return n


def _pcapng_block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("=II", kind, len(body) + 12) + body + struct.pack("=I", len(body) + 12)


def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("=HH", code, len(value)) + value + bytes(-len(value) % 4)


class PcapngWriter:
    """pcapng: an interface per point, named AGENT:POINT (tshark's
    frame.interface_name), and a comment per frame naming its network and
    port (frame.comment)."""

    def __init__(self, out: BinaryIO, info: dict[str, Any]) -> None:
        self.out = out
        agent = str(info.get("agent", "?"))
        self.networks = {int(k): v for k, v in dict(info.get("networks", {})).items()}
        self.ports = {int(k): v for k, v in dict(info.get("ports", {})).items()}
        end = _pcapng_option(0, b"")
        head = [_pcapng_block(0x0A0D0D0A, struct.pack("=IHHq", 0x1A2B3C4D, 1, 0, -1)
                              + _pcapng_option(4, b"uvxlan capture") + end)]
        for point in POINTS:            # interface i is POINTS' i-th point
            head.append(_pcapng_block(1, struct.pack("=HHI", LINKTYPE_ETHERNET, 0,
                                                     int(info["snaplen"]))
                                      + _pcapng_option(2, f"{agent}:{point}".encode())
                                      + _pcapng_option(9, b"\x09") + end))
        out.write(b"".join(head))

    def comment(self, vni: int, port: int) -> bytes:
        net = self.networks.get(vni)
        text = f"{net} (VNI {vni})" if net else f"VNI {vni}"
        if port >= 0:
            text += f", port {port}" + (f" ({self.ports[port]})" if port in self.ports else "")
        return text.encode()

    def write(self, data: bytes) -> int:
        parts: list[bytes] = []
        for (sec, ns, caplen, origlen, point, vni, port), frame in records(data):
            ts = sec * 1_000_000_000 + ns
            parts.append(_pcapng_block(6, struct.pack("=IIIII", point, ts >> 32,
                                                      ts & 0xFFFFFFFF, caplen, origlen)
                                       + bytes(frame) + bytes(-caplen % 4)
                                       + _pcapng_option(1, self.comment(vni, port))
                                       + _pcapng_option(0, b"")))
        self.out.write(b"".join(parts))
        return len(parts)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return CHUNK.pack(kind, len(payload)) + payload


def count_records(data: bytes) -> int:
    """Records in data (whole ones, as the agent sends them)."""
    return sum(1 for _ in records(data))


# The client ----------------------------------------------------------------


@dataclass
class CaptureResult:
    frames: int = 0               # records written
    missed: int = 0               # frames the capture could not keep (agent's count)
    ended_by: str = "you"         # "you", "the agent", "the output"


class _Stop:
    """SIGINT and SIGTERM ask the capture to stop (once), instead of
    raising KeyboardInterrupt in the middle of a write."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.asked.set()


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run_capture(control_socket: str, request: CaptureRequest,
                open_out: Callable[[], BinaryIO], *, connect_timeout: float = 5.0,
                status: BinaryIO | None = None, pcapng: bool = False) -> CaptureResult:
    """Capture until SIGINT or SIGTERM (or the agent or the output ends
    it), writing pcap (or pcapng) to open_out() (opened once the agent has
    accepted the request) and flushing after each chunk, so a reader of a
    pipe (``tshark -r -``) sees frames as they come and the file is valid
    whenever it stops."""
    from uvxlan.control import agent_error

    result = CaptureResult()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, _stop_on_signals() as stop:
        s.settimeout(connect_timeout)
        try:
            s.connect(control_socket)
            s.sendall(json.dumps(request.to_json()).encode() + b"\n")
            line = _read_line(s)
        except OSError as exc:
            raise agent_error(control_socket, exc, connect_timeout) from None
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not (isinstance(reply.get("capture"), dict)
                                               or "error" in reply):
            raise UvxlanError(f"agent at {control_socket}: not an answer: {line[:80]!r}"
                              " (an agent older than `uvxlan capture`?)")
        if "error" in reply:
            raise UvxlanError(f"agent: {reply['error']}")
        info = reply["capture"]
        if status is not None:
            status.write(_describe(info).encode())
            status.flush()
        out = open_out()
        try:
            writer = (PcapngWriter if pcapng else PcapWriter)(out, info)
            out.flush()
        except (BrokenPipeError, OSError) as exc:
            raise UvxlanError(f"writing the capture: {exc.strerror or exc}") from None
        _stream(s, writer, stop, result)
    return result


def _read_line(s: socket.socket) -> bytes:
    """The agent's answer line, read a byte at a time so nothing of the
    stream after it is taken (it is short, and read once)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            break
        line += b
        if len(line) > 65536:
            break
    return bytes(line)


def _describe(info: dict[str, Any]) -> str:
    what = [f"at {', '.join(info.get('points', []))}"]
    if info.get("network") is not None:
        what.append(f"network {info['network']} (VNI {info.get('vni')})")
    if info.get("port") is not None:
        what.append(f"port {info['port']}")
    for key in ("mac", "ethertype"):
        if info.get(key) is not None:
            value = info[key]
            what.append(f"{key} {value:#06x}" if key == "ethertype" else f"{key} {value}")
    if info.get("outer"):
        what.append("with outer headers")
    return (f"capturing on {info.get('agent', '?')}: {'; '.join(what)}; snaplen "
            f"{info.get('snaplen')}, {info.get('slots')} slots per datapath thread"
            " (Ctrl-C stops)\n")


def _stream(s: socket.socket, writer: PcapWriter | PcapngWriter, stop: _Stop,
            result: CaptureResult) -> None:
    """Chunks from the agent into writer, until its E chunk or its end."""
    s.settimeout(0.2)
    buf = bytearray()
    stopping_since: float | None = None

    def ask_stop(by: str) -> None:
        nonlocal stopping_since
        if stopping_since is None:
            result.ended_by = by
            stopping_since = time.monotonic()
            with suppress(OSError):
                s.shutdown(socket.SHUT_WR)

    while True:
        if stop.asked.is_set():
            ask_stop("you")
        if stopping_since is not None and time.monotonic() - stopping_since > END_WAIT_S:
            break
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        except OSError:
            result.ended_by = "the agent" if stopping_since is None else result.ended_by
            break
        if not data:
            if stopping_since is None:
                result.ended_by = "the agent"
            break
        buf += data
        while len(buf) >= CHUNK.size:
            kind, size = CHUNK.unpack_from(buf)
            if len(buf) < CHUNK.size + size:
                break
            payload = bytes(buf[CHUNK.size:CHUNK.size + size])
            del buf[:CHUNK.size + size]
            if kind == DATA:
                if stopping_since is not None and result.ended_by == "the output":
                    continue
                try:
                    frames = writer.write(payload)
                    writer.out.flush()
                except (BrokenPipeError, OSError):
                    ask_stop("the output")   # the reader of the pipe went
                    continue
                result.frames += frames
            elif kind in (STATS, END):
                with suppress(ValueError, KeyError, TypeError):
                    result.missed = int(json.loads(payload)["missed"])
                if kind == END:
                    return


def report(result: CaptureResult) -> str:
    line = f"{result.frames} frames captured, {result.missed} missed by the capture"
    if result.ended_by == "the agent":
        line += " (the agent ended the capture)"
    return line
