"""A per-flow traffic counter: frames and bytes for each IPv4 flow (source,
destination, protocol, ports) the hook sees, printed when it detaches
(Ctrl-C) and every FLOW_EVERY seconds (environment; 0, the default: only
at the end).  Every frame passes.

    uvxlan hook --agent h1 --network net1 --ethertype 0x0800 \\
        docs/examples/flow_counter.py:hook
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import sys
import time
from collections import Counter

from uvxlan.hooks import PASS, Frame, Verdict

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp"}
EVERY = float(os.environ.get("FLOW_EVERY", "0"))

frames: Counter[tuple[str, str, str, int, int]] = Counter()
octets: Counter[tuple[str, str, str, int, int]] = Counter()
_last = time.monotonic()


def flow_of(data: bytes) -> tuple[str, str, str, int, int] | None:
    """(src, dst, protocol, sport, dport) of an untagged IPv4 frame."""
    if len(data) < 34 or data[12:14] != b"\x08\x00" or data[14] >> 4 != 4:
        return None
    ihl = (data[14] & 0x0F) * 4
    proto = data[23]
    src, dst = ipaddress.IPv4Address(data[26:30]), ipaddress.IPv4Address(data[30:34])
    sport = dport = 0
    if proto in (6, 17) and len(data) >= 14 + ihl + 4:
        sport = int.from_bytes(data[14 + ihl:16 + ihl], "big")
        dport = int.from_bytes(data[16 + ihl:18 + ihl], "big")
    return str(src), str(dst), PROTOCOLS.get(proto, str(proto)), sport, dport


def report() -> None:
    print(f"{'source':>21} {'destination':>21} {'proto':>5} {'frames':>8} {'bytes':>10}")
    for flow, n in frames.most_common():
        src, dst, proto, sport, dport = flow
        print(f"{src}:{sport:<5} {dst}:{dport:<5} {proto:>5} {n:>8} {octets[flow]:>10}")
    sys.stdout.flush()


atexit.register(report)


def hook(frame: Frame) -> Verdict:
    global _last
    flow = flow_of(frame.data)
    if flow is not None:
        frames[flow] += 1
        octets[flow] += len(frame.data)
    if EVERY and time.monotonic() - _last >= EVERY:
        _last = time.monotonic()
        report()
    return PASS
