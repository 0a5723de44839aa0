"""``uvxlan hook``: attach a Python function to a running agent (the
command line of ``uvxlan.hooks``; loads no C)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from typing import Any

from uvxlan import hooks

DESCRIPTION = """\
Attach a Python function to the frames of one network on a running agent.
Frames that match (--ethertype, --mac, --direction) leave the fast path and
come to this process; the function returns uvxlan.hooks.PASS, DROP or
rewrite(bytes), and may inject new frames (frame.inject).  The function runs
here, never in the agent.  A frame waits --timeout for its verdict, then
gets the --fail verdict, as do the frames still waiting when this process
ends; its rules then go and forwarding is as before.  Ctrl-C detaches.
Root's alone (the control socket's `hook` request).  See docs/workbench.md."""

EPILOG = """\
examples:
  uvxlan hook --agent h1 --network net1 --ethertype 0x0806 docs/examples/arp_policy.py:hook
  uvxlan hook --agent h1 --network net1 docs/examples/flow_counter.py:hook
  uvxlan hook --agent h1 --network net1 --mac 02:42:0a:00:00:03 mymodule:watch
"""


def add_hook_command(sub: Any) -> None:
    h = sub.add_parser("hook", help="attach a Python function to a running agent's frames",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("function", metavar="MODULE:FUNCTION",
                   help="the hook: a module on the path or a file (path.py:function)")
    h.add_argument("--agent", metavar="NAME|SOCKET",
                   help="the agent (default: the one running here)")
    h.add_argument("--network", required=True, help="the network whose frames it sees")
    h.add_argument("--ethertype", default="0", metavar="T",
                   help="only frames of this EtherType, e.g. 0x0806 for ARP (default: any)")
    h.add_argument("--mac", metavar="MAC",
                   help="only frames to or from this MAC (default: any)")
    h.add_argument("--direction", choices=list(hooks.DIRECTIONS), default="both",
                   help="frames from the network's containers (from-port), from other "
                   "hosts (from-wire), or both (default)")
    h.add_argument("--timeout", type=float, default=hooks.TIMEOUT_DEFAULT, metavar="S",
                   help="seconds a frame waits for its verdict (%(default)s)")
    h.add_argument("--fail", choices=hooks.FAIL_MODES, default="drop",
                   help="the verdict of a frame the hook did not answer in time, or "
                   "raised on (default: drop)")
    h.add_argument("--count", type=int, metavar="N", help="detach after N frames")
    h.add_argument("--json", action="store_true", help="print the summary as JSON")
    h.set_defaults(func=cmd_hook)


def cmd_hook(args: argparse.Namespace) -> int:
    func = hooks.load_hook(args.function)
    ethertype = hooks.parse_ethertype(args.ethertype)
    # SIGTERM detaches as Ctrl-C does: the summary is printed either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stats = hooks.HookStats()

    def ready(hello: dict[str, Any]) -> None:
        print(f"hook {hello['hook']} attached to {hello['network']} (VNI {hello['vni']}, "
              f"{len(hello['ports'])} local port(s)); Ctrl-C detaches", file=sys.stderr,
              flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        hooks.attach(func, agent=args.agent, network=args.network, ethertype=ethertype,
                     mac=args.mac, direction=args.direction, timeout=args.timeout,
                     fail=args.fail, count=args.count, ready=ready, stats=stats)
    summary = vars(stats)
    if args.json:
        print(json.dumps(summary))
    else:
        print("detached: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0
