"""Ping RTT through uvxlan with and without CPU pinning, beside Linux's
vxlan in the same run.

    sudo .venv/bin/python benchmarks/latency_affinity.py [--pings 300]

Each uvxlan hop wakes a datapath thread; when it sleeps on the other core,
the wake-up crosses cores (tens of microseconds on a VM).  ``cpus = [0]``
in the agents' [host] table keeps their threads on CPU 0; pinning the
pinging process there too makes every wake-up local.  Prints p50/p90 for:
kernel vxlan, uvxlan unpinned, uvxlan with cpus = [0], and uvxlan with
cpus = [0] and ping on CPU 0.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvxlan.lab import bench  # noqa: E402
from uvxlan.lab.netns import Lab  # noqa: E402


def rtts(lab: Lab, pings: int, pin_ping: bool) -> tuple[float, float]:
    pre = ["taskset", "-c", "0"] if pin_ping else []
    vals = sorted(bench.ping_rtts(lab, lab.container_netns("c1"), bench.SERVER_IP, pings, pre))
    if not vals:
        raise RuntimeError("no ping replies")
    return vals[len(vals) // 2], vals[int(len(vals) * 0.9)]


def run(variant: str, pings: int) -> tuple[float, float]:
    lab = Lab("la" + secrets.token_hex(3))
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-latency-"))
    ov = None
    try:
        if variant == "kernel-vxlan":
            bench._kernel(lab, workdir)
        else:
            opts = {"cpus": [0]} if variant != "uvxlan" else {}
            ov = bench._uvxlan("auto", **opts)(lab, workdir)
        lab.run(lab.container_netns("c1"), ["ping", "-c", "3", bench.SERVER_IP])
        return rtts(lab, pings, pin_ping=variant == "uvxlan cpus=[0] + ping on CPU 0")
    finally:
        bench.teardown(lab, ov, workdir)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pings", type=int, default=300)
    args = p.parse_args()
    base = None
    for v in ("kernel-vxlan", "uvxlan", "uvxlan cpus=[0]", "uvxlan cpus=[0] + ping on CPU 0"):
        p50, p90 = run(v, args.pings)
        base = base or p50
        print(f"{v:<34} p50 {p50:6.0f} µs ({p50 / base:4.1f}×)  p90 {p90:6.0f} µs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
