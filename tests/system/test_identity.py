"""Identity: one live agent per name, whatever happens to its host key or
to the clock.

- SQLite leases ride out a wall-clock step: a store user runs under
  libfaketime (Debian's ``faketime``) reading its offset from a file the
  test rewrites mid-run, with CLOCK_MONOTONIC and CLOCK_BOOTTIME left real
  (FAKETIME_DONT_FAKE_MONOTONIC=1), as in a real step (NTP, ``date -s``)
  only CLOCK_REALTIME jumps.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# The multi-threaded variant: the store works on a thread of its own.
FAKETIME_LIBS = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
needs_faketime = pytest.mark.skipif(not FAKETIME_LIBS,
                                    reason="needs libfaketime (Debian package faketime)")

LIVE_TTL = 3.0          # kept alive every LIVE_TTL / 4
DEAD_TTL = 2.0          # never renewed
RUN_S = 10.0            # the holder's run, the step at its start


@needs_faketime
@pytest.mark.parametrize("step", [3600, -3600], ids=["forward-1h", "back-1h"])
def test_sqlite_leases_ride_out_a_wall_clock_step(tmp_path: Path, step: int) -> None:
    """A lease kept alive never ends, and one left alone ends after its
    TTL, whichever way the wall clock jumps.  With wall-clock deadlines
    (schema 1) the step forward ends the live lease at its next keepalive
    and the step back keeps the dead one for an hour."""
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {**os.environ, "LD_PRELOAD": FAKETIME_LIBS[0],
           "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.leaseholder", str(tmp_path / "state.db"),
         str(LIVE_TTL), str(DEAD_TTL), str(RUN_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == '{"ready": true}', holder.stderr
        first: dict[str, Any] = json.loads(holder.stdout.readline())
        clock.write_text(f"{step:+d}\n")
        out, err = holder.communicate(timeout=RUN_S + 20)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    # The step happened (libfaketime works), on the wall clock only.
    stepped = [s for s in seen if abs(s["wall"] - first["wall"] - step) < 60]
    assert len(stepped) >= len(seen) - 2 and len(stepped) >= 10, (first, seen[:3])
    assert all(0 <= s["boot"] - first["boot"] <= RUN_S + 5 for s in seen)
    # The kept-alive lease and its key never went.
    assert [s for s in seen if not s["live"] or s["error"]] == []
    # The dead one went after its TTL (counted from just before ``first``),
    # and stayed gone.
    gone = [i for i, s in enumerate(seen) if not s["dead"]]
    assert gone, "the lease nobody renews never ended"
    assert seen[gone[0]]["boot"] - first["boot"] <= DEAD_TTL + 1.0
    assert gone == list(range(gone[0], len(seen)))
