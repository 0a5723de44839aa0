"""How long one ``uvx_fdb_dump`` call holds the FDB: the longest a worker
thread can wait on a read-only ``uvxlan fdb`` query.  No root.

    .venv/bin/python benchmarks/fdb_dump_hold.py [--entries 65536] [--rounds 20]

A datapath with a full FDB (65,536 learned entries) is dumped ``rounds``
times in chunks of ``native.FDB_DUMP_CHUNK`` entries, as ``Datapath.
fdb_dump`` does, and in one call for the whole table, as the dump did before
issue 10 (under the write lock, which stalled both workers).  Each call is
timed around the C call; prints the median and p99 for both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvxlan import native  # noqa: E402
from uvxlan.config import DatapathConfig  # noqa: E402
from uvxlan.native import ffi, lib  # noqa: E402
from uvxlan.proto import mac_to_str  # noqa: E402


def call_times(dp: native.Datapath, chunk: int, rounds: int) -> list[float]:
    out = ffi.new("struct uvx_fdb_info[]", chunk)
    times = []
    for _ in range(rounds):
        cursor = ffi.new("uint32_t *", 0)
        while cursor[0] != lib.UVX_FDB_DUMP_END:
            start = time.perf_counter_ns()
            lib.uvx_fdb_dump(dp._dp, cursor, out, chunk)
            times.append((time.perf_counter_ns() - start) / 1000)
    return sorted(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=65536)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    dp = native.Datapath(DatapathConfig(local_ip="127.0.0.1", learn_limit=0,
                                        fdb_capacity=args.entries))
    dp.add_vni(1)
    now = native.now_ms()
    for i in range(args.entries):
        dp.fdb_learn(1, mac_to_str((0x06 << 40 | i).to_bytes(6, "big")),
                     remote="192.0.2.1", now_ms=now)
    for label, chunk in [(f"chunks of {native.FDB_DUMP_CHUNK}", native.FDB_DUMP_CHUNK),
                         ("the whole table at once", args.entries)]:
        t = call_times(dp, chunk, args.rounds)
        print(f"{label:>26}: median {t[len(t) // 2]:8.1f} us, p99 "
              f"{t[int(len(t) * 0.99)]:8.1f} us per call ({len(t)} calls)")
    dp.close()


if __name__ == "__main__":
    main()
