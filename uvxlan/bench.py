"""``uvxlan bench``: uvxlan beside Linux's kernel vxlan and the bare
underlay, in one run, on the same lab.

Each variant gets a fresh lab (two hosts, one container each, underlay
MTU 1500) and is measured the same way:

- iperf3 TCP, 1 stream and 4 streams (Gbit/s received, retransmits);
- ping RTT p50/p99 (µs) from 200 pings at 5 ms intervals;
- CPU seconds the uvxlan agents used per gigabit moved (1-stream run).

Results go to benchmarks/results/ as JSON and a markdown table with each
figure's ratio to the kernel vxlan.  The machine is noisy: each figure is
the median of ``--repeat`` runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvxlan.errors import LabError
from uvxlan.kvxlan import kernel_vxlan_host
from uvxlan.lab import Lab
from uvxlan.overlay import Overlay, Placement

VNI = 4242
SERVER_IP = "10.0.0.2"
CLIENT_IP = "10.0.0.1"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


@dataclass
class Variant:
    name: str
    build: Callable[[Lab, Path], Overlay | None]
    target: str = SERVER_IP      # what the client reaches


@dataclass
class Result:
    variant: str
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        vals = self.figures.get(key)
        return statistics.median(vals) if vals else None


def _uvxlan(lab: Lab, workdir: Path) -> Overlay:
    lab.up(2)
    lab.add_container("c1")
    lab.add_container("c2")
    ov = Overlay(lab, workdir, {"net": VNI},
                 [Placement("c1", "h1", "net", f"{CLIENT_IP}/24"),
                  Placement("c2", "h2", "net", f"{SERVER_IP}/24")],
                 hosts=["h1", "h2"])
    ov.start_all()
    return ov


def _kernel(lab: Lab, workdir: Path) -> None:
    lab.up(2)
    for i, (c, ip) in enumerate((("c1", CLIENT_IP), ("c2", SERVER_IP))):
        lab.add_container(c)
        me, peer = f"h{i + 1}", f"h{2 - i}"
        kernel_vxlan_host(lab, me, vni=VNI, port=4789,
                          peers=[lab.host(peer).underlay_ip], container=c,
                          address=f"{ip}/24")


def _underlay(lab: Lab, workdir: Path) -> None:
    lab.up(2)


VARIANTS = {
    "uvxlan": Variant("uvxlan", _uvxlan),
    "kernel-vxlan": Variant("kernel-vxlan", _kernel),
    "underlay": Variant("underlay", _underlay, target="10.77.0.2"),
}


def _endpoints(lab: Lab, variant: Variant) -> tuple[str, str]:
    if variant.name == "underlay":
        return lab.host("h1").netns, lab.host("h2").netns
    return lab.container_netns("c1"), lab.container_netns("c2")


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])     # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def _iperf(lab: Lab, client_ns: str, server_ns: str, target: str,
           seconds: int, streams: int) -> dict[str, Any]:
    server = lab.spawn(server_ns, ["iperf3", "-s", "-1", "-B", target],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        done = lab.run(client_ns, ["iperf3", "-c", target, "-t", str(seconds),
                                   "-P", str(streams), "-J"], timeout=seconds + 30)
        data: dict[str, Any] = json.loads(done.stdout or "{}")
        if "error" in data or "end" not in data:
            raise LabError(f"iperf3 failed: {data.get('error', done.stderr.strip())}")
        return data
    finally:
        server.wait(10) if server.poll() is None else None


def _ping(lab: Lab, client_ns: str, target: str, count: int) -> list[float]:
    done = lab.run(client_ns, ["ping", "-c", str(count), "-i", "0.005", "-W", "1", target],
                   timeout=count * 0.05 + 20)
    return [float(m) * 1000 for m in re.findall(r"time=([\d.]+) ms", done.stdout)]


def measure(variant: Variant, seconds: int, pings: int, progress: Callable[[str], None]
            ) -> Result:
    result = Result(variant.name)
    lab = Lab("b" + secrets.token_hex(4))
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-bench-"))
    ov = None
    try:
        ov = variant.build(lab, workdir)
        client, server = _endpoints(lab, variant)
        # Warm up: ARP, learning, TCP slow start elsewhere.
        _ping(lab, client, variant.target, 5)
        pids = [p.pid for p in ov._procs.values()] if ov else []

        progress(f"{variant.name}: iperf3 1 stream, {seconds} s")
        cpu0 = _cpu_seconds(pids)
        one = _iperf(lab, client, server, variant.target, seconds, 1)
        cpu = _cpu_seconds(pids) - cpu0
        gbits = one["end"]["sum_received"]["bytes"] * 8 / 1e9
        result.add("tcp1_gbps", one["end"]["sum_received"]["bits_per_second"] / 1e9)
        result.add("tcp1_retrans", float(one["end"]["sum_sent"].get("retransmits", 0)))
        if pids:
            result.add("cpu_s_per_gbit", cpu / gbits if gbits else float("nan"))

        progress(f"{variant.name}: iperf3 4 streams, {seconds} s")
        four = _iperf(lab, client, server, variant.target, seconds, 4)
        result.add("tcp4_gbps", four["end"]["sum_received"]["bits_per_second"] / 1e9)

        progress(f"{variant.name}: {pings} pings")
        rtts = sorted(_ping(lab, client, variant.target, pings))
        if rtts:
            result.add("ping_p50_us", statistics.median(rtts))
            result.add("ping_p99_us", rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))])
            result.add("ping_loss_pct", 100.0 * (pings - len(rtts)) / pings)
    finally:
        if ov is not None:
            ov.stop_all()
        lab.down()
    return result


COLUMNS = [
    ("tcp1_gbps", "TCP 1 stream Gbit/s", "{:.2f}"),
    ("tcp1_retrans", "retransmits", "{:.0f}"),
    ("tcp4_gbps", "TCP 4 streams Gbit/s", "{:.2f}"),
    ("ping_p50_us", "ping p50 µs", "{:.0f}"),
    ("ping_p99_us", "ping p99 µs", "{:.0f}"),
    ("cpu_s_per_gbit", "agent CPU s/Gbit", "{:.3f}"),
]


def table(results: list[Result]) -> str:
    kernel = next((r for r in results if r.variant == "kernel-vxlan"), None)
    head = "| variant | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.median(key)
            if v is None:
                cells.append("–")
                continue
            cell = fmt.format(v)
            k = kernel.median(key) if kernel else None
            if k and r is not kernel and key != "tcp1_retrans":
                cell += f" ({v / k:.2f}×)"
            cells.append(cell)
        rows.append(f"| {r.variant} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(variants: list[str], seconds: int, repeat: int, pings: int,
        out: Path = RESULTS) -> int:
    if os.geteuid() != 0:
        print("uvxlan: error: bench needs root (namespaces, TAP)", file=sys.stderr)
        return 1
    results = {v: Result(v) for v in variants}
    started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def progress(msg: str) -> None:
        print(f"  .. {msg}", flush=True)

    # Interleave variants so drift on a noisy machine hits them alike.
    for rep in range(repeat):
        print(f"== round {rep + 1}/{repeat}", flush=True)
        for v in variants:
            r = measure(VARIANTS[v], seconds, pings, progress)
            for key, vals in r.figures.items():
                for val in vals:
                    results[v].add(key, val)
    ordered = [results[v] for v in variants]
    md = table(ordered)
    print()
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "seconds": seconds, "repeat": repeat, "pings": pings,
            "kernel": os.uname().release, "cpus": os.cpu_count(),
            "command": " ".join(["uvxlan", "bench", *sys.argv[2:]])}
    (out / "latest.json").write_text(json.dumps(
        {"meta": meta, "results": {r.variant: r.figures for r in ordered}}, indent=2))
    (out / "latest.md").write_text(f"{md}\n\nmedian of {repeat} run(s); "
                                   f"`{meta['command']}`; kernel {meta['kernel']}\n")
    print(f"\nwrote {out / 'latest.json'} and {out / 'latest.md'}")
    return 0
