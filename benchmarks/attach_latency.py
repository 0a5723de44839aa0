"""Time from ``uvxlan attach`` on one host until a container on another
host can ping the new endpoint, on the embedded store and on etcd.

    sudo .venv/bin/python benchmarks/attach_latency.py [--runs 20] [--backends sqlite etcd]

For each backend: a fresh lab (h1, h2, and h3 running etcd), agents on h1
and h2, network net1, a container "probe" on h1.  Each run starts
``uvxlan attach net1 --host h2 ...`` (the CLI, as a user would, run in
h1's netns) and at the same moment starts pinging the address it will get
from the probe every 5 ms (one ``ping -c 1 -W 0.05`` after another, the
probe's neighbour entry flushed before each, so the kernel's one-second ARP
retry timer is not what gets measured); the time is from starting the CLI
to the first reply.  The endpoint is
detached between runs.  Prints the median, p90 and every sample.
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
from uvxlan.lab.overlay import ClusterOverlay, LabEtcd  # noqa: E402


def one_backend(backend: str, runs: int) -> list[float]:
    lab = Lab("al" + secrets.token_hex(3))
    tmp = Path(tempfile.mkdtemp(prefix="uvxlan-attach-"))
    etcd = None
    ov = None
    try:
        lab.up(3)
        if backend == "etcd":
            etcd = LabEtcd(lab, "h3", tmp / "etcd-data")
            etcd.start()
            url = etcd.url
        else:
            url = f"sqlite://{tmp}/state.db"
        ov = ClusterOverlay(lab, tmp / "agents", url)
        ov.start("h1")
        ov.start("h2")
        ov.cli("network", "create", "net1", "--subnet", "10.50.0.0/24")
        probe = lab.add_container("probe")
        ov.cli("attach", "net1", "--host", "h1", "--netns", probe, "--name", "probe",
               "--ip", "10.50.0.2")
        target = lab.add_container("target")
        h1 = lab.host("h1").netns
        samples = []
        for i in range(runs):
            ip = f"10.50.0.{10 + i}"
            start = time.monotonic()
            cli = lab.spawn(h1, [sys.executable, "-m", "uvxlan", "attach", "net1", "--host", "h2",
                                 "--netns", target, "--name", "target", "--ip", ip,
                                 "--store", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            while True:
                # A failed ARP would make the probe's kernel wait a second
                # before asking again: forget it before every attempt, so
                # what is timed is uvxlan, not the neighbour retry timer.
                done = subprocess.run(["ip", "netns", "exec", probe, "sh", "-c",
                                       f"ip neigh flush to {ip}; "
                                       f"exec ping -n -c 1 -W 0.05 {ip}"],
                                      capture_output=True)
                if done.returncode == 0:
                    break
                if time.monotonic() - start > 30:
                    raise RuntimeError(f"run {i}: {ip} not reachable after 30 s")
                time.sleep(0.005)
            samples.append(time.monotonic() - start)
            _, err = cli.communicate(timeout=60)
            if cli.returncode != 0:
                raise RuntimeError(f"attach failed: {err}")
            ov.cli("detach", "net1", "target")
            print(f"  {backend} run {i + 1}/{runs}: {samples[-1] * 1000:.0f} ms",
                  file=sys.stderr)
        return samples
    finally:
        if ov is not None:
            ov.stop_all()
        if etcd is not None:
            etcd.stop()
        lab.down()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--backends", nargs="+", default=["sqlite", "etcd"],
                   choices=["sqlite", "etcd"])
    args = p.parse_args()
    report = {}
    for b in args.backends:
        s = one_backend(b, args.runs)
        ms = sorted(x * 1000 for x in s)
        report[b] = {"median_ms": round(statistics.median(ms), 1),
                     "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
                     "samples_ms": [round(x, 1) for x in ms]}
        print(f"{b}: median {report[b]['median_ms']} ms, p90 {report[b]['p90_ms']} ms"
              f" over {len(ms)} attaches")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
