"""Where uvxlan's distance to Linux's kernel vxlan comes from, measured in
one run on this machine.

    sudo .venv/bin/python benchmarks/limits.py [--rounds 3] [--seconds 5]

1. One thread wake-up, on the same CPU and across CPUs
   (``benchmarks/tools/wakeup.c``, eventfd ping-pong, median of 5 runs).
2. Per ping round trip through uvxlan (offload auto): the agents' context
   switches, system calls and CPU migrations, counted by ``perf stat``
   (skipped if perf is missing), beside ping p50 for both paths.
3. Per 64 KB moved by one iperf3 TCP stream: CPU time of the whole machine
   (``/proc/stat``: both lab hosts, both iperf3 ends, the agents) and the
   throughput, for both paths.

The kernel's vxlan runs a packet's whole path inside the sender's system
call, in softirq, on one CPU; uvxlan wakes a thread per hop and copies each
byte four more times (TAP read, UDP send, UDP receive, TAP write).  The
figures printed say what those cost here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvxlan.errors import UvxlanError  # noqa: E402
from uvxlan.lab import bench  # noqa: E402
from uvxlan.lab.netns import Lab  # noqa: E402
from uvxlan.lab.overlay import Overlay  # noqa: E402

KERNEL, UVXLAN = "kernel-vxlan", "uvxlan-auto"
PERF_EVENTS = "context-switches,raw_syscalls:sys_enter,cpu-migrations"


def wakeup_us(cpu_a: int, cpu_b: int, runs: int = 5) -> float:
    exe = bench.build_tools(names=("wakeup",))["wakeup"]
    vals = []
    for _ in range(runs):
        done = subprocess.run([str(exe), str(cpu_a), str(cpu_b), "20000"],
                              capture_output=True, text=True, timeout=60, check=True)
        vals.append(float(json.loads(done.stdout)["wakeup_us"]))
    return statistics.median(vals)


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot.  Steal (time the
    hypervisor ran something else) is neither; guest time is already in
    user time."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = f
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


def stream(lab: Lab, seconds: float) -> dict[str, float]:
    """One iperf3 TCP stream c1 -> c2: Gbit/s, busy CPUs, CPU µs per 64 KB."""
    b0, t0 = busy_jiffies()
    data = bench.iperf(lab, lab.container_netns("c1"), lab.container_netns("c2"),
                        bench.SERVER_IP, seconds, 1)
    b1, t1 = busy_jiffies()
    got = data["end"]["sum_received"]
    units = got["bits_per_second"] * got["seconds"] / 8 / 65536
    cpu_s = (b1 - b0) / os.sysconf("SC_CLK_TCK")
    return {"gbit": got["bits_per_second"] / 1e9,
            "busy_cpus": (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1),
            "us_per_64k": cpu_s / units * 1e6}


def perf_counts(perf: subprocess.Popen[str]) -> dict[str, float]:
    """Stop a ``perf stat -x ,`` and parse what it counted."""
    perf.send_signal(signal.SIGINT)
    try:
        _, err = perf.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        perf.kill()
        _, err = perf.communicate()
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
            counts[parts[2]] = float(parts[0])
    if not counts:
        print(f"limits.py: perf stat counted nothing: {err.strip()[:200]}", file=sys.stderr)
    return counts


def pings(lab: Lab, count: int, agents: list[int]) -> dict[str, float]:
    """ping p50, and per round trip what perf counts for the agents (all of
    their threads; between pings they only wait, so the counts are the
    pings')."""
    perf = None
    if agents and shutil.which("perf"):
        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", PERF_EVENTS,
                                 "-p", ",".join(map(str, agents))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)    # perf attaches after it starts: count whole pings only
    counts: dict[str, float] = {}
    try:
        rtts = sorted(bench.ping_rtts(lab, lab.container_netns("c1"), bench.SERVER_IP, count))
    finally:
        if perf is not None:
            counts = perf_counts(perf)
    if not rtts:
        raise bench.BenchError("no ping replies")
    out = {"p50_us": bench.percentile(rtts, 50)}
    for event, key in (("context-switches", "switches"), ("raw_syscalls:sys_enter", "syscalls"),
                       ("cpu-migrations", "migrations")):
        if event in counts:
            out[key] = counts[event] / len(rtts)
    return out


def measure(variant: str, rounds: int, seconds: float, count: int) -> dict[str, float]:
    lab = Lab("lm" + os.urandom(3).hex())
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-limits-"))
    ov: Overlay | None = None
    try:
        ov = bench.VARIANTS[variant].build(lab, workdir)
        agents = []
        if ov is not None:
            agents = [p.pid for h in ("h1", "h2") if (p := ov.proc(h)) is not None]
        lab.run(lab.container_netns("c1"), ["ping", "-c", "3", bench.SERVER_IP])
        samples: dict[str, list[float]] = {}
        for _ in range(rounds):
            for key, val in {**pings(lab, count, agents), **stream(lab, seconds)}.items():
                samples.setdefault(key, []).append(val)
        return {k: statistics.median(v) for k, v in samples.items()}
    finally:
        bench.teardown(lab, ov, workdir)


def report(wake_same: float, wake_cross: float | None, k: dict[str, float],
           u: dict[str, float]) -> str:
    def row(what: str, key: str, fmt: str) -> str:
        kv, uv = k.get(key), u.get(key)
        ratio = f"{uv / kv:.2f}×" if kv and uv is not None else "–"
        shown = ["–" if v is None else format(v, fmt) for v in (kv, uv)]
        return f"| {what} | {shown[0]} | {shown[1]} | {ratio} |"

    lines = ["| | kernel vxlan | uvxlan (auto) | uvxlan / kernel |", "|---|---:|---:|---:|",
             row("ping p50, µs", "p50_us", ".0f"),
             row("TCP 1 stream, Gbit/s", "gbit", ".2f"),
             row("busy CPUs during the stream", "busy_cpus", ".2f"),
             row("CPU µs per 64 KB moved", "us_per_64k", ".0f")]
    lines.append("")
    lines.append(f"One thread wake-up: {wake_same:.1f} µs on the same CPU, "
                 + (f"{wake_cross:.1f} µs across CPUs." if wake_cross else
                    "(one CPU: no cross-CPU figure)."))
    if "switches" in u:
        lines.append(f"Per ping round trip, the uvxlan agents made {u['switches']:.1f} context "
                     f"switches, {u.get('syscalls', 0):.1f} system calls and "
                     f"{u.get('migrations', 0):.1f} CPU migrations.")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds per path; medians (3)")
    p.add_argument("--seconds", type=float, default=5, help="per iperf3 run (5)")
    p.add_argument("--pings", type=int, default=500, help="per round (500, 5 ms apart)")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("limits.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.seconds <= 0 or args.pings < 1:
        print("limits.py: --rounds, --seconds and --pings must be positive", file=sys.stderr)
        return 2
    try:
        cpus = sorted(os.sched_getaffinity(0))
        same = wakeup_us(cpus[0], cpus[0])
        cross = wakeup_us(cpus[0], cpus[1]) if len(cpus) > 1 else None
        print(f"wake-ups measured; now {KERNEL}", file=sys.stderr, flush=True)
        k = measure(KERNEL, args.rounds, args.seconds, args.pings)
        print(f"now {UVXLAN}", file=sys.stderr, flush=True)
        u = measure(UVXLAN, args.rounds, args.seconds, args.pings)
    except KeyboardInterrupt:
        print("\nlimits.py: interrupted; the lab was removed", file=sys.stderr)
        return 130
    except (UvxlanError, subprocess.SubprocessError, OSError, KeyError, ValueError) as exc:
        print(f"limits.py: {exc}", file=sys.stderr)
        return 1
    print(report(same, cross, k, u))
    return 0


if __name__ == "__main__":
    sys.exit(main())
