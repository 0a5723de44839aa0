"""``uvxlan``: the command line.

Every command prints errors as one line, ``uvxlan: error: ...``, and exits
non-zero; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from uvxlan._version import __version__
from uvxlan.errors import UvxlanError

DESCRIPTION = """\
uvxlan: a userspace VXLAN overlay (RFC 7348).  Containers in network
namespaces get a TAP device as eth0; a per-host agent switches their frames
and carries them over UDP 4789 to other hosts, interoperating with Linux's
own vxlan device."""

EPILOG = """\
examples:
  uvxlan demo                         two simulated hosts, two isolated networks
  uvxlan lab up --hosts 2             make hosts uvx-lab-h1, uvx-lab-h2
  uvxlan agent --config h1.toml       run the agent of one host
  uvxlan stats --agent h1             counters and drops of a running agent
  uvxlan lab down                     remove everything the lab made
"""


def _cmd_agent(args: argparse.Namespace) -> int:
    from uvxlan import config
    from uvxlan.agent import run_agent

    cfg = config.load(args.config)
    if args.offload:
        cfg.host.offload = args.offload
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"uvxlan-agent[{cfg.host.name}]: %(message)s",
    )
    run_agent(cfg)
    return 0


def _socket_for(name: str) -> str:
    return name if "/" in name else f"/run/uvxlan/{name}.sock"


def _cmd_stats(args: argparse.Namespace) -> int:
    from uvxlan.agent import query_agent

    stats = query_agent(_socket_for(args.agent), "stats")
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{'network':<12} {'vni':>8} {'rx pkts':>10} {'rx bytes':>12}"
          f" {'tx pkts':>10} {'tx bytes':>12}")
    for n in stats["networks"]:
        print(f"{n['name']:<12} {n['vni']:>8} {n['rx_packets']:>10} {n['rx_bytes']:>12}"
              f" {n['tx_packets']:>10} {n['tx_bytes']:>12}")
    print(f"\n{'port':<4} {'endpoint':<28} {'from ctr':>10} {'to ctr':>10}")
    for p in stats["ports"]:
        where = f"{p['netns']}/{p['ifname']} ({p['network']})"
        print(f"{p['port']:<4} {where:<28} {p['rx_packets']:>10} {p['tx_packets']:>10}")
    drops = {k: v for k, v in stats["drops"].items() if v}
    print("\ndrops: " + (", ".join(f"{k}={v}" for k, v in drops.items()) or "none"))
    return 0


def _cmd_fdb(args: argparse.Namespace) -> int:
    from uvxlan.agent import query_agent

    entries = query_agent(_socket_for(args.agent), "fdb")["fdb"]
    if args.network:
        entries = [e for e in entries if e["network"] == args.network]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{'network':<10} {'vni':>8} {'mac':<18} {'type':<8} {'to':<22} {'age s':>7}")
    for e in sorted(entries, key=lambda e: (e["vni"], e["mac"])):
        to = f"{e['remote']}:{e['remote_port']}" if e["remote"] else f"port {e['port']}"
        kind = "static" if e["static"] else "learned"
        print(f"{e['network'] or '?':<10} {e['vni']:>8} {e['mac']:<18} {kind:<8}"
              f" {to:<22} {e['age_s']:>7.1f}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    from uvxlan import lab

    if args.lab_cmd == "up":
        return lab.cli_up(args.name, args.hosts, args.subnet, args.mtu)
    if args.lab_cmd == "down":
        return lab.cli_down(args.name)
    if args.lab_cmd == "status":
        return lab.cli_status(args.name)
    return lab.cli_container_add(args.name, args.container)


def _cmd_demo(args: argparse.Namespace) -> int:
    from uvxlan.demo import run as run_demo

    return run_demo(keep=args.keep)


def _cmd_bench(args: argparse.Namespace) -> int:
    from uvxlan import bench

    if args.quick:
        args.seconds, args.repeat, args.pings = 3, 1, 50
    return bench.run(args.variants, args.seconds, args.repeat, args.pings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uvxlan", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"uvxlan {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("agent", help="run the agent of one host",
                       description="Run the agent of one host from a config file "
                       "(TOML; see README.md, 'The config file').  Stop it with "
                       "SIGTERM or Ctrl-C: it removes the TAPs it made.")
    a.add_argument("--config", required=True, metavar="FILE", help="the agent's TOML file")
    a.add_argument("--offload", choices=["auto", "off", "none"],
                   help="auto: TAP TSO + UDP GSO/GRO where the kernel has them; "
                   "off: TAP TSO with sendmmsg/recvmmsg only (what Linux 3.10 offers); "
                   "none: plain frames (default: the config's [host] offload, else auto)")
    a.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    a.set_defaults(func=_cmd_agent)

    s = sub.add_parser("stats", help="counters and drops of a running agent")
    s.add_argument("--agent", required=True, metavar="NAME",
                   help="the agent's [host] name, or its control socket's path")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_stats)

    f = sub.add_parser("fdb", help="forwarding table of a running agent")
    fsub = f.add_subparsers(dest="fdb_cmd", required=True, metavar="ACTION")
    fs = fsub.add_parser("show", help="list static and learned entries")
    fs.add_argument("--agent", required=True, metavar="NAME",
                    help="the agent's [host] name, or its control socket's path")
    fs.add_argument("--network", metavar="NAME", help="only this network")
    fs.add_argument("--json", action="store_true", help="machine-readable output")
    fs.set_defaults(func=_cmd_fdb)

    lab = sub.add_parser("lab", help="simulated hosts in network namespaces",
                         description="Simulated hosts on one machine: namespaces "
                         "uvx-LAB-h1..hN joined by a bridge in uvx-LAB-ul.")
    lsub = lab.add_subparsers(dest="lab_cmd", required=True, metavar="ACTION")
    up = lsub.add_parser("up", help="create the hosts")
    up.add_argument("--hosts", type=int, required=True, metavar="N")
    up.add_argument("--subnet", default="10.77.0.0/24", help="underlay subnet (%(default)s)")
    up.add_argument("--mtu", type=int, default=1500, help="underlay MTU (%(default)s)")
    down = lsub.add_parser("down", help="remove everything the lab made (safe to repeat)")
    status = lsub.add_parser("status", help="list the lab's hosts and containers")
    cont = lsub.add_parser("container", help="add a container namespace uvx-LAB-NAME")
    cont.add_argument("container", metavar="NAME")
    for q in (up, down, status, cont):
        q.add_argument("--name", default="lab", help="the lab's name (%(default)s)")
    lab.set_defaults(func=_cmd_lab)

    d = sub.add_parser("demo", help="two hosts, two networks: reachability and isolation",
                       description="Build two simulated hosts with two overlay networks, "
                       "show addresses, routes and MTU, ping within net1 across hosts, "
                       "show net2 is unreachable, then clean up.  Exits non-zero if "
                       "anything did not happen as expected.")
    d.add_argument("--keep", action="store_true",
                   help="leave the lab and agents running"
                   " (remove with `uvxlan lab down --name demo`)")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="measure uvxlan beside Linux's kernel vxlan",
                       description="Build a fresh two-host lab per variant and measure "
                       "iperf3 TCP (1 and 4 streams), ping RTT and agent CPU per Gbit. "
                       "Writes benchmarks/results/latest.{json,md}.")
    b.add_argument("--variants", nargs="+", default=["uvxlan", "kernel-vxlan", "underlay"],
                   choices=["uvxlan", "kernel-vxlan", "underlay"], metavar="V",
                   help="any of uvxlan, kernel-vxlan, underlay (all by default)")
    b.add_argument("--seconds", type=int, default=10, help="per iperf3 run (%(default)s)")
    b.add_argument("--repeat", type=int, default=3, help="rounds; medians reported (%(default)s)")
    b.add_argument("--pings", type=int, default=200, help="pings per round (%(default)s)")
    b.add_argument("--quick", action="store_true", help="3 s runs, 1 round, 50 pings")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UvxlanError as exc:
        print(f"uvxlan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130




if __name__ == "__main__":
    sys.exit(main())
