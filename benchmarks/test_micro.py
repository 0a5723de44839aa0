"""Micro benchmarks (pytest-benchmark): the C codec and FDB beside the
pure-Python reference, in nanoseconds per operation.

C figures come from timing loops inside C (csrc/testing/bench.c, through
the test-only module tests/support/native_testing.py), so they are the
fast path's cost, not cffi's per-call crossing (which the datapath pays
once per batch).  Python figures are per call.  Run: `make bench-micro`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import native_testing as c
from uvxlan.reference import offload as offload_ref
from uvxlan.reference import wire
from uvxlan.reference.fdb import Dest, ReferenceFdb

N = 200_000
FRAMES = {
    "64B": bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes(50),
    "1500B": bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes(1486),
}
MACS = [f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1000)]
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print("\n\nns per operation (median of rounds)")
    for name, ns in FIGURES.items():
        print(f"  {name:<28} {ns:10.1f}")


def c_loop(benchmark: Any, name: str, loop: Callable[[], float]) -> None:
    results: list[float] = []
    benchmark.pedantic(lambda: results.append(loop()), rounds=5, iterations=1)
    results.sort()
    FIGURES[name] = results[len(results) // 2]
    benchmark.extra_info["ns_per_op"] = FIGURES[name]
    assert 0 < FIGURES[name] < 1_000_000


def py_call(benchmark: Any, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    out = benchmark(fn, *args)
    if benchmark.stats is not None:   # None under --benchmark-disable (pyproject's addopts)
        FIGURES[name] = benchmark.stats.stats.median * 1e9
    return out


@pytest.mark.parametrize("size", FRAMES)
def test_encap(benchmark: Any, size: str) -> None:
    frame = FRAMES[size]
    c_loop(benchmark, f"encap {size} C", lambda: c.bench_encap(frame, N))


@pytest.mark.parametrize("size", FRAMES)
def test_encap_python(benchmark: Any, size: str) -> None:
    frame = FRAMES[size]

    def encap() -> bytes:
        sport = wire.src_port(wire.flow_hash(frame), 49152, 65535)
        return wire.build_datagram(4097, frame, sport, 4789, "10.0.0.1", "10.0.0.2")

    assert len(py_call(benchmark, f"encap {size} Python", encap)) == len(frame) + 16


@pytest.mark.parametrize("size", FRAMES)
def test_decap(benchmark: Any, size: str) -> None:
    pkt = wire.build_header(4097) + FRAMES[size]
    c_loop(benchmark, f"decap {size} C", lambda: c.bench_decap(pkt, N))


@pytest.mark.parametrize("size", FRAMES)
def test_decap_python(benchmark: Any, size: str) -> None:
    pkt = wire.build_header(4097) + FRAMES[size]
    assert py_call(benchmark, f"decap {size} Python", wire.parse, pkt).vni == 4097


RAW_MACS = [wire.mac_to_bytes(m) for m in MACS]


def test_fdb_lookup(benchmark: Any) -> None:
    c_loop(benchmark, "fdb lookup (1000) C", lambda: c.bench_fdb_lookup(RAW_MACS, N))


def test_fdb_lookup_python(benchmark: Any) -> None:
    fdb = ReferenceFdb(learn_limit=0)
    for m in MACS:
        fdb.add_static(1, m, Dest(remote="10.0.0.2"), 0)
    assert py_call(benchmark, "fdb lookup (1000) Python", fdb.lookup, 1, MACS[500])


def test_fdb_learn(benchmark: Any) -> None:
    c_loop(benchmark, "fdb learn/refresh C", lambda: c.bench_fdb_learn(RAW_MACS, N))


def test_fdb_learn_python(benchmark: Any) -> None:
    fdb = ReferenceFdb(learn_limit=0)
    dest = Dest(remote="10.0.0.2")
    i = iter(range(10**9))
    py_call(benchmark, "fdb learn/refresh Python",
            lambda: fdb.learn(1, MACS[next(i) % 1000], dest, int(time.monotonic())))


# Segmentation and coalescing, per 64 KB: a TCP super-frame (64000 payload
# bytes, timestamps option) cut to MSS 1398 as for a 1450-byte endpoint MTU.
MSS = 1398


def _superframe() -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    tcp = TCP(sport=40000, dport=5201, seq=1, ack=1, flags="A",
              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / tcp / bytes(64000))


def test_tso_64k(benchmark: Any) -> None:
    frame = _superframe()
    c_loop(benchmark, "segment 64 KB C",
           lambda: c.bench_tso(frame, MSS, 2000))


def test_tso_64k_python(benchmark: Any) -> None:
    frame = _superframe()
    segs = py_call(benchmark, "segment 64 KB Python", offload_ref.tso_segment, frame, MSS)
    assert len(segs) == -(-64000 // MSS)


def test_gro_64k(benchmark: Any) -> None:
    segs = offload_ref.tso_segment(_superframe(), MSS)
    c_loop(benchmark, "join 64 KB C", lambda: c.bench_gro(segs, 2000))


def test_gro_64k_python(benchmark: Any) -> None:
    segs = offload_ref.tso_segment(_superframe(), MSS)
    joined = py_call(benchmark, "join 64 KB Python", offload_ref.gro_join, segs)
    assert joined.gso_size == MSS
