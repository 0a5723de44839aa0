"""The C fast path's test hooks (csrc/testing/testing.h), typed: the codec
one call at a time (the same names and results as uvxlan.reference.wire),
segmentation and coalescing as the datapath does them (beside
uvxlan.reference.offload), and the micro benchmarks' timing loops.

The module they are compiled into, ``tests/support/_uvx_testing``, is built
by scripts/setup.sh (csrc/testing/build_testing.py) and never installed.
Like uvxlan.native, importing this refuses a module built from other
sources or for another version.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

from uvxlan._stamp import source_digest
from uvxlan._version import __version__
from uvxlan.errors import ConfigError, NativeError, StaleBuildError
from uvxlan.native import DROP_REASONS
from uvxlan.reference.offload import Joined  # one type for C and the reference

try:
    from tests.support._uvx_testing import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise StaleBuildError(
        f"uvxlan's test module is not built ({exc}): run `make build`"
    ) from exc

_CSRC = Path(__file__).resolve().parents[2] / "csrc"


def _check_stamp() -> None:
    built = ffi.string(lib.uvx_testing_version()).decode()
    if built != __version__:
        raise StaleBuildError(
            f"uvxlan's test module is version {built}, the package {__version__}:"
            " run `make build`"
        )
    digest = ffi.string(lib.uvx_testing_source_digest()).decode()
    if digest != source_digest(_CSRC, _CSRC / "testing"):
        raise StaleBuildError(
            "uvxlan's test module was built from other sources than csrc/:"
            " run `make build`"
        )


_check_stamp()

VNI_MAX: int = lib.VXLAN_VNI_MAX
_REASON_NAMES = {v: k for k, v in DROP_REASONS.items()}


def _ip(addr: str) -> int:
    """Dotted quad to the uint32 in network byte order that C expects."""
    return int.from_bytes(socket.inet_aton(addr), "little")


# The codec, one call each ---------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    reason: str               # "pass" or a drop reason
    vni: int | None
    inner_offset: int | None


def parse(pkt: bytes, accept_reserved: bool = False) -> Parsed:
    vni = ffi.new("uint32_t *")
    off = ffi.new("size_t *")
    rc = lib.uvx_test_parse(pkt, len(pkt), accept_reserved, vni, off)
    if rc == lib.UVX_PASS:
        return Parsed("pass", int(vni[0]), int(off[0]))
    return Parsed(_REASON_NAMES[rc], None, None)


def check_inner(frame: bytes) -> str:
    return _REASON_NAMES[lib.uvx_test_check_inner(frame, len(frame))]


def flow_hash(frame: bytes) -> int:
    return int(lib.uvx_test_flow_hash(frame, len(frame)))


def peer_longest_run(addrs: list[str]) -> int:
    """The admitted-VTEP set (csrc/peers.h) holding addrs: its longest run
    of occupied slots, the most a lookup for a stranger reads."""
    ips = ffi.new("uint32_t[]", [_ip(a) for a in addrs])
    run = int(lib.uvx_test_peer_longest_run(ips, len(addrs)))
    assert run >= 0, "an address was refused"
    return run


def siphash(key: bytes, data: bytes, c: int = 2, d: int = 4) -> int:
    """SipHash-c-d as the FDB computes it (csrc/fdb.c)."""
    return int(lib.uvx_test_siphash(key, data, len(data), c, d))


def src_port(hash_: int, lo: int, hi: int) -> int:
    return int(lib.uvx_test_src_port(hash_, lo, hi))


def build_datagram(
    vni: int, frame: bytes, sport: int, dport: int,
    saddr: str, daddr: str, csum: bool = False,
) -> bytes:
    # C takes the VNI's low 24 bits; refuse what would silently wrap.
    if not 0 <= vni <= VNI_MAX:
        raise ConfigError(f"VNI {vni} is outside 0..{VNI_MAX}")
    cap = len(frame) + lib.VXLAN_ENCAP_LEN
    out = ffi.new("uint8_t[]", cap)
    n = lib.uvx_test_build_datagram(
        out, cap, vni, frame, len(frame), sport, dport, _ip(saddr), _ip(daddr), csum
    )
    if n == 0:
        raise NativeError(errno.EMSGSIZE, f"frame of {len(frame)} bytes is too big")
    return bytes(ffi.buffer(out, n))


# Segmentation and coalescing as the datapath does them ----------------------


def tso_frames(frame: bytes, mss: int, *, v6: bool = False) -> list[bytes]:
    """The segments the fast path cuts a TCP super-frame into."""
    nmax = len(frame) // max(1, mss) + 2
    cap = nmax * 256 + len(frame)
    out = ffi.new("uint8_t[]", cap)
    lens = ffi.new("size_t[]", nmax)
    n = lib.uvx_tso_frames(frame, len(frame), mss, int(v6), out, cap, lens, nmax)
    if n < 0:
        raise NativeError(errno.EINVAL, "not a TCP super-frame the fast path can cut")
    data = bytes(ffi.buffer(out, sum(lens[i] for i in range(n))))
    segs, at = [], 0
    for i in range(n):
        segs.append(data[at:at + lens[i]])
        at += lens[i]
    return segs


def pmtud_reply(frame: bytes, room: int) -> bytes:
    """The ICMP answer the fast path sends back for frame, too big for an
    underlay that takes inner frames of room bytes; b"" when none is due."""
    out = ffi.new("uint8_t[]", 2048)
    n = lib.uvx_test_pmtud_reply(frame, len(frame), room, out, 2048)
    assert n >= 0, "an answer larger than 2048 bytes"
    return bytes(ffi.buffer(out, n))


def gro_join(segments: list[bytes]) -> Joined:
    """The super-frame (and virtio-net header) the fast path joins
    in-order segments of one flow into."""
    blob = b"".join(segments)
    lens = ffi.new("size_t[]", [len(s) for s in segments] or [0])
    out = ffi.new("uint8_t[]", 70000)
    vh = ffi.new("uint16_t[6]")
    n = lib.uvx_gro_join(blob, lens, len(segments), out, 70000, vh)
    if n < 0:
        raise NativeError(errno.EINVAL, "segments the fast path would not join")
    return Joined(bytes(ffi.buffer(out, n)), *(int(x) for x in vh))


# The capture ring and filter (csrc/capring.c) ---------------------------------


class CapRing:
    """A capture ring of nslots slots keeping snaplen bytes per frame."""

    def __init__(self, nslots: int, snaplen: int) -> None:
        r = lib.uvx_test_capring_new(nslots, snaplen)
        if r == ffi.NULL:
            raise NativeError(errno.ENOMEM, "capture ring")
        self._r = ffi.gc(r, lib.uvx_test_capring_free)

    def put(self, frame: bytes, ts_ns: int = 0, outer: bytes = b"", *, point: int = 0,
            vni: int = 1, port: int = -1) -> bool:
        """As the producer; False if the ring was full (missed)."""
        return bool(lib.uvx_test_capring_put(self._r, ts_ns, point, vni, port, outer,
                                             len(outer), frame, len(frame)))

    def take(self, cap: int = 1 << 17) -> bytes:
        """The oldest record, header and bytes (b"" if none, or if it does not fit cap)."""
        out = ffi.new("uint8_t[]", cap)
        return bytes(ffi.buffer(out, lib.uvx_test_capring_take(self._r, out, cap)))

    def counts(self) -> tuple[int, int]:
        """(captured, missed)."""
        captured = ffi.new("uint64_t *")
        missed = ffi.new("uint64_t *")
        lib.uvx_test_capring_counts(self._r, captured, missed)
        return int(captured[0]), int(missed[0])


def capring_race(nslots: int, n: int) -> tuple[int, int, bool]:
    """n frames put from a thread while this one takes: (taken, missed,
    every frame whole and in order)."""
    missed = ffi.new("uint64_t *")
    in_order = ffi.new("int *")
    taken = lib.uvx_test_capring_race(nslots, n, missed, in_order)
    if taken < 0:
        raise NativeError(errno.ENOMEM, "capture ring race")
    return int(taken), int(missed[0]), bool(in_order[0])


def capture_match(frame: bytes, *, point: int, vni: int = 1, port: int = -1,
                  f_points: int, f_match: int = 0, f_vni: int = 0, f_port: int = 0,
                  f_mac: bytes = bytes(6), f_ethertype: int = 0) -> bool:
    return bool(lib.uvx_test_capture_match(f_points, f_match, f_vni, f_port, f_mac,
                                           f_ethertype, point, vni, port, frame, len(frame)))


def capture_outer(saddr: str, daddr: str, sport: int, dport: int, vxh: bytes,
                  inner_len: int) -> bytes:
    out = ffi.new("uint8_t[]", 50)
    lib.uvx_test_capture_outer(out, _ip(saddr), _ip(daddr), socket.htons(sport),
                               socket.htons(dport), vxh, inner_len)
    return bytes(ffi.buffer(out, 50))


# Timing loops: nanoseconds per operation, measured inside C ------------------


def bench_encap(frame: bytes, n: int) -> float:
    return float(lib.uvx_bench_encap(frame, len(frame), n))


def bench_decap(pkt: bytes, n: int) -> float:
    return float(lib.uvx_bench_decap(pkt, len(pkt), n))


def bench_fdb_lookup(macs: list[bytes], n: int) -> float:
    """Look-ups of these MACs (round robin) in an FDB holding them."""
    return float(lib.uvx_bench_fdb_lookup(b"".join(macs), len(macs), n))


def bench_fdb_learn(macs: list[bytes], n: int) -> float:
    """Learning (then refreshing) these MACs, round robin."""
    return float(lib.uvx_bench_fdb_learn(b"".join(macs), len(macs), n))


def bench_tso(frame: bytes, mss: int, n: int, *, v6: bool = False) -> float:
    return float(lib.uvx_bench_tso(frame, len(frame), mss, int(v6), n))


def bench_gro(segments: list[bytes], n: int) -> float:
    lens = ffi.new("size_t[]", [len(s) for s in segments] or [0])
    return float(lib.uvx_bench_gro(b"".join(segments), lens, len(segments), n))


# Fault injection's pieces (csrc/fault.h) -------------------------------------


class FaultHeap:
    """The delay queue: slots by due time, ties in push order."""

    def __init__(self, cap: int) -> None:
        self._h = ffi.gc(lib.uvx_test_heap_new(cap), lib.uvx_test_heap_free)

    def push(self, slot: int, due: int) -> None:
        lib.uvx_test_heap_push(self._h, slot, due)

    def pop_due(self, now: int) -> int | None:
        slot = int(lib.uvx_test_heap_pop_due(self._h, now))
        return None if slot < 0 else slot

    def move(self, slot: int, due: int) -> None:
        lib.uvx_test_heap_move(self._h, slot, due)

    def remove(self, slot: int) -> None:
        lib.uvx_test_heap_remove(self._h, slot)

    def next_due(self) -> int | None:
        due = int(lib.uvx_test_heap_next(self._h))
        return None if due == 2**64 - 1 else due


def bucket_run(rate_bps: int, frame_max: int, frames: list[tuple[int, int]]) -> list[int | None]:
    """The token bucket over (now ns, bytes) frames: when each may leave,
    None for those dropped."""
    n = len(frames)
    due = ffi.new("int64_t[]", max(n, 1))
    lib.uvx_test_bucket_run(rate_bps, frame_max, [t for t, _ in frames] or [0],
                            [b for _, b in frames] or [0], n, due)
    return [None if due[i] < 0 else int(due[i]) for i in range(n)]


def payload_span(frame: bytes) -> tuple[int, int] | None:
    """Where corruption may flip a bit: the L4 payload's [off, end)."""
    off, end = ffi.new("size_t *"), ffi.new("size_t *")
    if not lib.uvx_test_payload_span(frame, len(frame), off, end):
        return None
    return int(off[0]), int(end[0])


@dataclass
class Verdict:
    reason: str
    copies: int
    slot: int | None
    release: int | None


FAULT_COUNTERS = ("matched", "lost", "delayed", "duplicated", "reordered", "corrupted",
                  "rate_dropped", "queue_full")


class FaultTable:
    """A fault table with one entry; frames judged at given times (ns)."""

    def __init__(self, *, frame_max: int = 1464, seed: int = 1, loss: int = 0,
                 duplicate: int = 0, reorder: int = 0, corrupt: int = 0, delay_us: int = 0,
                 jitter_us: int = 0, rate_bps: int = 0) -> None:
        rule = [loss, duplicate, reorder, corrupt, delay_us, jitter_us]
        t = lib.uvx_test_fault_new(frame_max, seed, rule, rate_bps)
        if t == ffi.NULL:
            raise NativeError(errno.EINVAL, "fault rule refused")
        self._t = ffi.gc(t, lib.uvx_test_fault_free)
        self._names = {i: name for name, i in DROP_REASONS.items()}

    def judge(self, frame: bytes, now: int) -> Verdict:
        out = ffi.new("struct uvx_test_verdict *")
        lib.uvx_test_fault_judge(self._t, frame, len(frame), now, out)
        return Verdict(self._names[out.reason], int(out.copies),
                       None if out.slot < 0 else int(out.slot),
                       None if out.release < 0 else int(out.release))

    def due(self, now: int) -> int | None:
        slot = int(lib.uvx_test_fault_due(self._t, now))
        return None if slot < 0 else slot

    def take(self, slot: int) -> tuple[bytes, int]:
        """A slot's frame and how many copies go; the slot is freed."""
        out = ffi.new("uint8_t[]", 65536)
        copies = ffi.new("unsigned *")
        n = lib.uvx_test_fault_slot(self._t, slot, out, 65536, copies)
        return bytes(ffi.buffer(out, n)), int(copies[0])

    def counters(self) -> dict[str, int]:
        out = ffi.new("uint64_t[8]")
        lib.uvx_test_fault_counters(self._t, out)
        return {name: int(out[i]) for i, name in enumerate(FAULT_COUNTERS)}

    def free_slots(self) -> int:
        return int(lib.uvx_test_fault_free_slots(self._t))
