"""Does a flood of read-only control queries slow the datapath?

    sudo .venv/bin/python benchmarks/control_load.py [--clients 8] [--macs 20000]
        [--rounds 3] [--seconds 5] [--pings 400]

Two lab hosts, c1 on h1 and c2 on h2 (offload auto, datapath threads on).
c1 first sends frames from --macs source MACs, so both agents learn them
and an ``fdb`` reply is large.  Then, per round and in turn:

- ``idle``: nothing else runs;
- ``cpu``: --clients processes burn CPU without touching the agents (what
  the same number of busy clients costs a 2-CPU machine by itself);
- ``queries``: --clients processes ask ``stats`` and ``fdb`` in a tight
  loop, half of them h1's agent, half h2's, each query on a new connection.

and measures ping RTT c1 -> c2 (--pings, 5 ms apart) and iperf3 TCP
throughput c1 -> c2 (--seconds).  Prints the medians over the rounds: ping
p50 and p90, Gbit/s, and the query rate.  ``queries`` against ``cpu``
isolates what answering costs the packet path beyond the clients' CPU.
The clients run at nice 19, as a local user's would be against a root
daemon's threads: equal footing would measure the scheduler.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvxlan.lab import bench  # noqa: E402
from uvxlan.lab.netns import Lab, terminate  # noqa: E402
from uvxlan.lab.overlay import Overlay  # noqa: E402

# One client: ask in a tight loop until SIGTERM, then print how many it got.
QUERIER = """\
import signal, sys
sys.path.insert(0, {root!r})
from uvxlan.control import query_agent
from uvxlan.errors import UvxlanError
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
n = failed = 0
while not stop:
    try:
        query_agent({path!r}, ("stats", "fdb")[(n + failed) % 2], timeout=30)
        n += 1
    except UvxlanError:      # busy, or cut off as a slow reader: a limit at work
        failed += 1
print(n, failed)
"""
BURNER = """\
import signal, sys
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
n = 0
while not stop:
    n += 1
print(0)
"""
# Frames from many source MACs, broadcast: h1 learns them on c1's port,
# h2 behind h1's VTEP.
SPRAY = """\
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for i in range(int(sys.argv[1])):
    src = b"\\x02\\x99" + struct.pack("!I", i)
    s.send(b"\\xff" * 6 + src + b"\\x88\\xb5" + bytes(46))
"""


def clients(ov: Overlay, kind: str, n: int) -> list[subprocess.Popen[str]]:
    root = str(Path(__file__).resolve().parents[1])
    procs = []
    for i in range(n):
        path = ov.control_socket(("h1", "h2")[i % 2])
        code = QUERIER.format(root=root, path=path) if kind == "queries" else BURNER
        procs.append(subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", code],
                                      stdout=subprocess.PIPE, text=True))
    return procs


def stop_clients(procs: list[subprocess.Popen[str]]) -> tuple[int, int]:
    """Queries answered and refused, over all clients."""
    answered = refused = 0
    for p in procs:
        terminate(p, timeout=60)
        out = (p.stdout.read() if p.stdout else "").split() or ["0", "0"]
        answered += int(out[0])
        refused += int(out[1]) if len(out) > 1 else 0
    return answered, refused


def measure(ov: Overlay, kind: str, n: int, pings: int, seconds: float) -> dict[str, float]:
    lab = ov.lab
    c1, c2 = lab.container_netns("c1"), lab.container_netns("c2")
    procs = clients(ov, kind, n) if kind != "idle" else []
    start = time.monotonic()
    try:
        time.sleep(0.5 if procs else 0)
        rtts = sorted(bench.ping_rtts(lab, c1, bench.SERVER_IP, pings))
        tput = bench.iperf(lab, c1, c2, bench.SERVER_IP, seconds, 1)
    finally:
        queries, refused = stop_clients(procs)
    elapsed = time.monotonic() - start
    return {"p50": bench.percentile(rtts, 50), "p90": bench.percentile(rtts, 90),
            "lost": pings - len(rtts),
            "gbit": tput["end"]["sum_received"]["bits_per_second"] / 1e9,
            "qps": queries / elapsed, "refused": refused}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--macs", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--pings", type=int, default=400)
    args = p.parse_args()

    lab = Lab("cl" + secrets.token_hex(3))
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-ctlload-"))
    ov = None
    try:
        ov = bench._uvxlan("auto", learn_limit=args.macs + 1000)(lab, workdir)
        c1 = lab.container_netns("c1")
        lab.run(c1, ["ping", "-c", "3", bench.SERVER_IP])
        lab.run(c1, [sys.executable, "-c", SPRAY, str(args.macs)], timeout=120)
        time.sleep(1)
        sizes = {h: len(ov.query(h, "fdb")["fdb"]) for h in ("h1", "h2")}
        print(f"fdb entries: h1 {sizes['h1']}, h2 {sizes['h2']}; {args.clients} clients, "
              f"{args.rounds} rounds", flush=True)
        for cmd in ("stats", "fdb"):
            took = []
            for _ in range(5):
                t0 = time.perf_counter()
                ov.query("h1", cmd)
                took.append(time.perf_counter() - t0)
            print(f"one {cmd} query, alone: {statistics.median(took) * 1000:.1f} ms", flush=True)
        results: dict[str, list[dict[str, float]]] = {"idle": [], "cpu": [], "queries": []}
        for r in range(args.rounds):
            for kind in results:
                m = measure(ov, kind, args.clients, args.pings, args.seconds)
                results[kind].append(m)
                print(f"  round {r + 1} {kind:<8} p50 {m['p50']:6.0f} µs  p90 {m['p90']:6.0f} µs"
                      f"  lost {m['lost']:.0f}  {m['gbit']:5.2f} Gbit/s  {m['qps']:6.1f} q/s"
                      f" ({m['refused']:.0f} refused)",
                      flush=True)
        print("medians:")
        for kind, ms in results.items():
            med = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
            print(f"  {kind:<8} ping p50 {med['p50']:6.0f} µs  p90 {med['p90']:6.0f} µs"
                  f"  iperf3 {med['gbit']:5.2f} Gbit/s  queries {med['qps']:6.1f}/s")
        return 0
    finally:
        bench.teardown(lab, ov, workdir)


if __name__ == "__main__":
    sys.exit(main())
