"""Python hooks: the punt path's rate, and the fast path with a hook on
another network.

    sudo .venv/bin/python benchmarks/hooks.py [--seconds 5] [--rounds 3] [--no-kernel]

A fresh two-host lab: net1 (c1 on h1, c2 on h2) and net2 (d1 on h1, d2
on h2), agents with offload "auto".  Measured:

- fast path: iperf3 (one TCP stream) c1 -> c2 on net1, without a hook and
  with a PASS hook attached to net2 on both hosts (any EtherType, both
  directions), alternating, --rounds each; the medians and their ratio.
  With --kernel (default), Linux's vxlan between the same two hosts in a
  second lab, for the ratio to the kernel measured in this run;
- punt path: a PASS hook on net1 at h1 for IPv4 from c1's port (`uvxlan
  hook ... --ethertype 0x0800 --direction from-port`), and 64-byte UDP
  c1 -> c2 offered at --rates, paced: per rate, datagrams delivered per
  second, loss, frames the hook saw, hook_queue_full and hook_drop (timed
  out); the punt rate is the highest delivered with under 1 % loss.  The
  same flow without the hook, unpaced, for comparison.

Prints a table and one JSON line (--json FILE writes it there too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uvxlan.control import query_agent  # noqa: E402
from uvxlan.hooks import wait_attached  # noqa: E402
from uvxlan.lab import bench  # noqa: E402
from uvxlan.lab.netns import Lab, terminate  # noqa: E402
from uvxlan.lab.overlay import Overlay, Placement  # noqa: E402

NETS = {"net1": 101, "net2": 102}
PLACE = [Placement("c1", "h1", "net1", "10.0.0.1/24"),
         Placement("c2", "h2", "net1", "10.0.0.2/24"),
         Placement("d1", "h1", "net2", "10.0.1.1/24"),
         Placement("d2", "h2", "net2", "10.0.1.2/24")]
PASS_HOOK = "from uvxlan.hooks import PASS\n\ndef hook(frame):\n    return PASS\n"


def attach(lab: Lab, ov: Overlay, host: str, network: str, hook: Path,
           *args: str) -> subprocess.Popen[str]:
    sock = ov.control_socket(host)
    proc = lab.spawn(lab.host(host).netns,
                     [sys.executable, "-m", "uvxlan", "hook", "--agent", sock, "--network",
                      network, *args, f"{hook}:hook"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_attached(sock, network, timeout=10)
    return proc


def gbps(lab: Lab, seconds: float) -> float:
    data = bench.iperf(lab, lab.container_netns("c1"), lab.container_netns("c2"),
                       "10.0.0.2", seconds, 1)
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def udp(lab: Lab, tools: dict[str, Path], seconds: float) -> dict[str, Any]:
    # bench's small-packet run (udpblast -> udpsink), unpaced
    return bench._udp(lab, tools, lab.container_netns("c1"), lab.container_netns("c2"),
                      "10.0.0.2", 0, seconds)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def uvxlan_run(seconds: float, rounds: int, tools: dict[str, Path],
               rates: list[int]) -> dict[str, Any]:
    lab = Lab("bh" + os.urandom(3).hex())
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-hookbench-"))
    hook = workdir / "passhook.py"
    procs: list[subprocess.Popen[str]] = []
    ov: Overlay | None = None
    out: dict[str, Any] = {}
    try:
        lab.up(2)
        for p in PLACE:
            lab.add_container(p.container)
        workdir.mkdir(exist_ok=True)
        hook.write_text(PASS_HOOK)
        ov = Overlay(lab, workdir, NETS, PLACE, hosts=["h1", "h2"],
                     host_options={"offload": "auto"})
        ov.start_all()
        for c, ip in (("c1", "10.0.0.2"), ("d1", "10.0.1.2")):
            if not bench.ping_rtts(lab, lab.container_netns(c), ip, 5):
                raise SystemExit(f"{c} cannot reach {ip}")

        plain, hooked = [], []
        for r in range(rounds):
            plain.append(gbps(lab, seconds))
            log(f"round {r + 1}: no hook          {plain[-1]:.2f} Gbit/s")
            other = [attach(lab, ov, h, "net2", hook) for h in ("h1", "h2")]
            procs += other
            hooked.append(gbps(lab, seconds))
            log(f"round {r + 1}: hook on net2     {hooked[-1]:.2f} Gbit/s")
            for p in other:
                terminate(p)
            while any(query_agent(ov.control_socket(h), "hooks")["hooks"] for h in ("h1", "h2")):
                time.sleep(0.05)
        out["tcp1_gbps_no_hook"] = statistics.median(plain)
        out["tcp1_gbps_hook_other_net"] = statistics.median(hooked)
        out["tcp1_samples"] = {"no_hook": plain, "hook_other_net": hooked}
        out["hook_other_net_ratio"] = out["tcp1_gbps_hook_other_net"] / out["tcp1_gbps_no_hook"]

        base = udp(lab, tools, seconds)
        span = max(base["seconds"], base["rx_seconds"], 1e-9)
        out["udp64_kpps_no_hook"] = base["rx_received"] / span / 1e3
        log(f"64 B UDP, no hook: {out['udp64_kpps_no_hook']:.0f} kpps delivered")

        sock = ov.control_socket("h1")
        procs.append(attach(lab, ov, "h1", "net1", hook, "--ethertype", "0x0800",
                            "--direction", "from-port"))
        # Offered rates, paced (udpblast sleeps between batches, so the
        # sender takes little of the CPU the hook needs): the punt path's
        # rate is the highest delivered with under 1 % loss.
        steps = []
        for rate in rates:
            drops0 = query_agent(sock, "stats")["drops"]
            frames0 = query_agent(sock, "hooks")["hooks"][0]["frames"]
            u = bench._udp(lab, tools, lab.container_netns("c1"), lab.container_netns("c2"),
                           "10.0.0.2", rate, seconds)
            drops1 = query_agent(sock, "stats")["drops"]
            frames1 = query_agent(sock, "hooks")["hooks"][0]["frames"]
            span = max(u["seconds"], u["rx_seconds"], 1e-9)
            step = {"offered_kpps": rate / 1e3,
                    "sent_kpps": u["sent"] / u["seconds"] / 1e3,
                    "delivered_kpps": u["rx_received"] / span / 1e3,
                    "hook_kpps": (frames1 - frames0) / u["seconds"] / 1e3,
                    "loss_pct": bench.loss_pct(u["sent"], u["rx_received"]),
                    "queue_full": drops1.get("hook_queue_full", 0)
                    - drops0.get("hook_queue_full", 0),
                    "hook_drop": drops1.get("hook_drop", 0) - drops0.get("hook_drop", 0)}
            steps.append(step)
            log(f"64 B UDP at {rate / 1e3:.0f} kpps through a PASS hook: delivered "
                f"{step['delivered_kpps']:.1f} kpps, loss {step['loss_pct']:.1f} %, "
                f"queue full {step['queue_full']}, timed out {step['hook_drop']}")
        out["punt_steps"] = steps
        clean = [st["delivered_kpps"] for st in steps if st["loss_pct"] < 1.0]
        out["punt_kpps_under_1pct_loss"] = max(clean, default=0.0)
        out["punt_kpps_max_delivered"] = max(st["delivered_kpps"] for st in steps)
    finally:
        for p in procs:
            terminate(p)
        bench.teardown(lab, ov, workdir)
    return out


def kernel_run(seconds: float, rounds: int) -> float:
    lab = Lab("bk" + os.urandom(3).hex())
    try:
        bench.VARIANTS[bench.KERNEL].build(lab, Path(tempfile.gettempdir()))
        bench.ping_rtts(lab, lab.container_netns("c1"), bench.SERVER_IP, 5)
        runs = []
        for _ in range(rounds):
            data = bench.iperf(lab, lab.container_netns("c1"), lab.container_netns("c2"),
                               bench.SERVER_IP, seconds, 1)
            runs.append(float(data["end"]["sum_received"]["bits_per_second"]) / 1e9)
        log(f"kernel vxlan: {statistics.median(runs):.2f} Gbit/s")
        return statistics.median(runs)
    finally:
        bench.teardown(lab, None, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per run (%(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="iperf3 runs per case (%(default)s)")
    ap.add_argument("--no-kernel", action="store_true", help="skip Linux's vxlan")
    ap.add_argument("--rates", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000],
                    metavar="PPS", help="offered rates through the hook (%(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/hooks.py: needs root (namespaces)")
    tools = bench.build_tools()
    out = uvxlan_run(args.seconds, args.rounds, tools, args.rates)
    if not args.no_kernel:
        out["tcp1_gbps_kernel"] = kernel_run(args.seconds, args.rounds)
        out["ratio_to_kernel_no_hook"] = out["tcp1_gbps_no_hook"] / out["tcp1_gbps_kernel"]
        out["ratio_to_kernel_hook_other_net"] = (out["tcp1_gbps_hook_other_net"]
                                                 / out["tcp1_gbps_kernel"])
    print(f"{'TCP 1 stream, no hook':<40} {out['tcp1_gbps_no_hook']:8.2f} Gbit/s")
    print(f"{'TCP 1 stream, PASS hook on another net':<40} "
          f"{out['tcp1_gbps_hook_other_net']:8.2f} Gbit/s "
          f"({out['hook_other_net_ratio']:.2f} of no hook)")
    if "tcp1_gbps_kernel" in out:
        print(f"{'TCP 1 stream, kernel vxlan':<40} {out['tcp1_gbps_kernel']:8.2f} Gbit/s "
              f"(uvxlan {out['ratio_to_kernel_no_hook']:.2f} / "
              f"{out['ratio_to_kernel_hook_other_net']:.2f} of it)")
    print(f"{'64 B UDP, no hook':<40} {out['udp64_kpps_no_hook']:8.0f} kpps delivered")
    print(f"{'64 B UDP through a PASS hook':<40} {out['punt_kpps_under_1pct_loss']:8.1f} kpps "
          f"with < 1 % loss, {out['punt_kpps_max_delivered']:.1f} kpps at most")
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
