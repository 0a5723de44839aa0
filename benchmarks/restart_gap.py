"""How long forwarding stops when a host's agent restarts.

    sudo .venv/bin/python benchmarks/restart_gap.py [--runs 5] [--modes config cluster]
                                                   [--signals term kill]

For each mode (config: a TOML file per host; cluster: the embedded store)
a fresh two-host lab, container c1 on h1 and c2 on h2, one network.  A
sender in c1 sends a UDP datagram to c2 every millisecond, each carrying
its sequence number; a receiver in c2 notes when each arrived (CLOCK_
MONOTONIC, one clock for every netns of the machine).  Each run stops h1's
agent (SIGTERM, or SIGKILL), starts it again and notes when the new agent
is ready (answers on its control socket; in cluster mode, has applied the
store's state).  Per run:

- outage: the longest time without an arrival around the restart;
- back after ready: from the new agent being ready to the first arrival
  after the outage (negative: forwarding was back before the agent said
  it was ready, its datapath starts first);
- lost: datagrams that never arrived.

Prints the median of each over the runs, and every sample.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uvxlan.lab.netns import Lab  # noqa: E402
from uvxlan.lab.overlay import AgentProcs, ClusterOverlay, Overlay, Placement  # noqa: E402

PORT = 5999
INTERVAL = 0.001

SENDER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, n, gap = (sys.argv[1], int(sys.argv[4])), int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
for i in range(n):
    s.sendto(struct.pack("!I", i), dst)
    time.sleep(max(0.0, t0 + (i + 1) * gap - time.monotonic()))
"""

RECEIVER = """
import json, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[3])))
s.settimeout(float(sys.argv[2]))
print("ready", file=sys.stderr, flush=True)
got = []
try:
    while True:
        data = s.recv(64)
        got.append((struct.unpack("!I", data[:4])[0], time.monotonic()))
except TimeoutError:
    pass
print(json.dumps(got))
"""


def one_run(lab: Lab, ov: AgentProcs, start: object, sig: str, ns1: str, ns2: str,
            ip2: str) -> dict[str, float]:
    seconds = 4.0
    count = int(seconds / INTERVAL)
    rx = lab.spawn(ns2, [sys.executable, "-c", RECEIVER, ip2, "2", str(PORT)],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert rx.stderr is not None and rx.stderr.readline().strip() == "ready"
    tx = lab.spawn(ns1, [sys.executable, "-c", SENDER, ip2, str(count), str(INTERVAL),
                                str(PORT)])
    time.sleep(1.0)
    if sig == "kill":
        ov.kill("h1")
    else:
        ov.stop("h1")
    stopped = time.monotonic()
    start("h1")                                  # type: ignore[operator]
    ready = time.monotonic()
    tx.wait(seconds + 10)
    out, _ = rx.communicate(timeout=30)
    got = sorted(json.loads(out), key=lambda x: x[1])
    times = [t for _, t in got]
    gaps = [(b - a, b) for a, b in zip(times, times[1:], strict=False) if a >= stopped - 1.0]
    outage, back = max(gaps) if gaps else (float("nan"), float("nan"))
    return {"outage_ms": outage * 1e3, "back_after_ready_ms": (back - ready) * 1e3,
            "restart_ms": (ready - stopped) * 1e3,
            "lost": count - len({s for s, _ in got})}


def one_mode(mode: str, sig: str, runs: int) -> list[dict[str, float]]:
    lab = Lab("rg" + secrets.token_hex(3))
    tmp = Path(tempfile.mkdtemp(prefix="uvxlan-restart-"))
    ov: AgentProcs | None = None
    try:
        lab.up(2)
        ns1, ns2 = lab.add_container("c1"), lab.add_container("c2")
        if mode == "config":
            cov = Overlay(lab, tmp, {"net1": 100},
                          [Placement("c1", "h1", "net1", "10.0.0.1/24"),
                           Placement("c2", "h2", "net1", "10.0.0.2/24")],
                          hosts=["h1", "h2"])
            ov = cov
            cov.start_all()
            ip2, start = "10.0.0.2", cov.start
        else:
            clu = ClusterOverlay(lab, tmp / "agents", f"sqlite://{tmp}/state.db")
            ov = clu
            clu.start("h1")
            clu.start("h2")
            clu.cli("network", "create", "net1", "--subnet", "10.0.0.0/24")
            clu.cli("attach", "net1", "--host", "h1", "--netns", ns1, "--name", "c1",
                    "--ip", "10.0.0.3")
            clu.cli("attach", "net1", "--host", "h2", "--netns", ns2, "--name", "c2",
                    "--ip", "10.0.0.2")
            ip2, start = "10.0.0.2", clu.start
        # Neighbours known before the first run: ARP is not what is measured.
        lab.run(ns1, ["ping", "-c", "2", "-i", "0.2", ip2])
        return [one_run(lab, ov, start, sig, ns1, ns2, ip2) for _ in range(runs)]
    finally:
        if ov is not None:
            ov.stop_all()
        lab.down()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="restarts per mode and signal")
    p.add_argument("--modes", nargs="+", default=["config", "cluster"],
                   choices=["config", "cluster"])
    p.add_argument("--signals", nargs="+", default=["term", "kill"], choices=["term", "kill"])
    args = p.parse_args()
    print("| mode | signal | outage ms (median) | back after ready ms (median) "
          "| restart ms (median) | lost (median) | runs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        for sig in args.signals:
            res = one_mode(mode, sig, args.runs)

            def med(k: str, rows: list[dict[str, float]] = res) -> float:
                return statistics.median(r[k] for r in rows)

            print(f"| {mode} | SIG{sig.upper()} | {med('outage_ms'):.0f} "
                  f"| {med('back_after_ready_ms'):.0f} | {med('restart_ms'):.0f} "
                  f"| {med('lost'):.0f} | {len(res)} |", flush=True)
            for r in res:
                print("    " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
