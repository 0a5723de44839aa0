"""What a live capture costs forwarding: iperf3 with and without one.

    sudo .venv/bin/python benchmarks/capture_stall.py [--seconds 10] [--runs 3]

A fresh two-host lab, one network, c1 on h1 and c2 on h2; iperf3 TCP (one
stream) from c1 to c2, in turns:

- none:     no capture;
- stalled:  a client asks h1 for a capture of everything (--outer, every
            point, inner frames of both directions) and never reads: the
            agent stops draining, the rings fill and the frames are
            counted as missed;
- reading:  `uvxlan capture --outer --at all` with its pcap to /dev/null.

Prints the median Gbit/s of each (and every sample), and for the captures
the frames sent to the client and missed.  A reported figure, not a check:
tests/system/test_capture.py checks that a stalled reader changes nothing
for forwarding.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.capture import read_end, stalled_client  # noqa: E402
from uvxlan.capture import CaptureRequest  # noqa: E402
from uvxlan.lab.bench import iperf  # noqa: E402
from uvxlan.lab.netns import Lab, terminate  # noqa: E402
from uvxlan.lab.overlay import Overlay, Placement  # noqa: E402


def gbits(data: dict[str, object]) -> float:
    end = data["end"]
    assert isinstance(end, dict)
    return float(end["sum_received"]["bits_per_second"]) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    lab = Lab("cap" + secrets.token_hex(3))
    work = Path(tempfile.mkdtemp(prefix="uvx-capbench-"))
    samples: dict[str, list[float]] = {"none": [], "stalled": [], "reading": []}
    counts: dict[str, list[str]] = {"stalled": [], "reading": []}
    try:
        lab.up(2)
        for c in ("c1", "c2"):
            lab.add_container(c)
        ov = Overlay(lab, work, {"net1": 42},
                     [Placement("c1", "h1", "net1", "10.0.0.1/24"),
                      Placement("c2", "h2", "net1", "10.0.0.2/24")], hosts=["h1", "h2"])
        ov.start_all()
        c1, c2 = lab.container_netns("c1"), lab.container_netns("c2")
        request = CaptureRequest(outer=True, at=("port-in", "port-out", "wire-in", "wire-out"))
        try:
            for run in range(args.runs):
                samples["none"].append(gbits(iperf(lab, c1, c2, "10.0.0.2", args.seconds, 1)))

                s = stalled_client(ov.control_socket("h1"), request)
                try:
                    samples["stalled"].append(
                        gbits(iperf(lab, c1, c2, "10.0.0.2", args.seconds, 1)))
                    end = read_end(s, timeout=60)
                finally:
                    s.close()
                counts["stalled"].append(f"{end.get('captured')} sent, {end.get('missed')} missed")

                cap = subprocess.Popen(
                    [sys.executable, "-m", "uvxlan", "capture", "--agent",
                     ov.control_socket("h1"), "--outer", "--at", "all", "-w", "/dev/null"],
                    stderr=subprocess.PIPE, text=True)
                try:
                    assert cap.stderr is not None
                    cap.stderr.readline()                   # capturing on ...
                    samples["reading"].append(
                        gbits(iperf(lab, c1, c2, "10.0.0.2", args.seconds, 1)))
                    cap.send_signal(signal.SIGINT)
                    cap.wait(30)
                    counts["reading"].append(cap.stderr.read().strip().splitlines()[-1])
                finally:
                    terminate(cap)
                print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}"
                                                     for k, v in samples.items()), flush=True)
        finally:
            ov.stop_all()
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\niperf3 TCP, 1 stream, {args.seconds:g} s, median of {args.runs} (Gbit/s):")
    for name, values in samples.items():
        print(f"  {name:<8} {statistics.median(values):6.2f}   samples "
              + " ".join(f"{v:.2f}" for v in values))
    for name, lines in counts.items():
        print(f"  {name} capture: " + "; ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
