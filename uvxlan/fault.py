"""Fault injection, a lab tool: what one fault entry says, read from the
command line and carried over the control socket.

The C fast path applies it (csrc/fault.c) to datagrams on their way to
the wire, for one remote VTEP (``peer``), one network (``vni``) or both.
This module only names, parses and checks the settings; it loads no C, so
``uvxlan fault`` stays a socket client.  Faults are never persisted: an
agent that stops forgets them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from uvxlan.errors import ConfigError
from uvxlan.proto import VNI_MAX

# C's bounds (uvx.h): native.py checks they agree.
PPM = 1_000_000
DELAY_MAX_US = 10_000_000     # 10 s
RATE_MIN_BPS = 8_000
RATE_MAX_BPS = 1_000_000_000_000

_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000}
# tc's rate units (tc(8)): bits per second, decimal prefixes.
_UNITS_BPS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
              "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


@dataclass(frozen=True)
class FaultSpec:
    """One entry: where it applies and what it does.  Probabilities are
    percentages of the datagrams it sees; delay and jitter microseconds;
    rate bits per second (0: none)."""
    peer: str | None = None   # a remote VTEP's IPv4 address; None: every peer
    vni: int | None = None    # None: every network
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_us: int = 0
    jitter_us: int = 0
    rate_bps: int = 0

    def __post_init__(self) -> None:
        if self.peer is None and self.vni is None:
            raise ConfigError("fault: name a peer (--peer) or a network (--network), or both")
        if self.peer is not None:
            try:
                addr = ipaddress.IPv4Address(self.peer)
            except ValueError:
                raise ConfigError(f"fault: peer {self.peer!r} is not an IPv4 address") from None
            if addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
                raise ConfigError(f"fault: peer {self.peer} is not a VTEP's address")
        if self.vni is not None and not 0 <= self.vni <= VNI_MAX:
            raise ConfigError(f"fault: VNI {self.vni} is outside 0..{VNI_MAX}")
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise ConfigError(f"fault: --{name} {value:g} is not a percentage (0 to 100)")
        for name in ("delay_us", "jitter_us"):
            if not 0 <= getattr(self, name) <= DELAY_MAX_US:
                raise ConfigError(f"fault: --{name[:-3]} is more than 10 s")
        if self.rate_bps and not RATE_MIN_BPS <= self.rate_bps <= RATE_MAX_BPS:
            raise ConfigError(f"fault: --rate {self.rate_bps} bit/s is outside"
                              f" {RATE_MIN_BPS} bit/s to 1 Tbit/s")

    def holds(self) -> bool:
        """Whether it holds frames for later (needs the datapath threads)."""
        return bool(self.delay_us or self.jitter_us or self.reorder or self.rate_bps)

    def ppm(self, name: str) -> int:
        return round(float(getattr(self, name)) * PPM / 100)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: object) -> FaultSpec:
        """From a control-socket request; every field checked again."""
        if not isinstance(obj, dict):
            raise ConfigError("fault: not an object")
        unknown = set(obj) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"fault: unknown field {sorted(unknown)[0]!r}")
        kwargs: dict[str, Any] = {}
        for name, value in obj.items():
            if not _FIELD_OK[name](value):
                raise ConfigError(f"fault: bad value for {name}: {value!r}")
            kwargs[name] = float(value) if name in _PERCENTS else value
        return cls(**kwargs)

    def describe(self) -> str:
        """The settings in the command line's words, zeros left out."""
        parts = []
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            if getattr(self, name):
                parts.append(f"{name} {getattr(self, name):g}%")
        if self.delay_us:
            parts.append(f"delay {format_duration(self.delay_us)}")
        if self.jitter_us:
            parts.append(f"jitter {format_duration(self.jitter_us)}")
        if self.rate_bps:
            parts.append(f"rate {format_rate(self.rate_bps)}")
        return ", ".join(parts) or "nothing"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PERCENTS = ("loss", "duplicate", "reorder", "corrupt")
# What each field of a request may hold (JSON has no other types to mix up).
_FIELD_OK: dict[str, Any] = {
    "peer": lambda v: v is None or isinstance(v, str),
    "vni": lambda v: v is None or _is_int(v),
    **{name: (lambda v: _is_int(v) or isinstance(v, float)) for name in _PERCENTS},
    **{name: _is_int for name in ("delay_us", "jitter_us", "rate_bps")},
}


def parse_duration(text: str, what: str) -> int:
    """'20ms', '500us', '1.5s' (a bare number: milliseconds, as netem's
    examples read) to microseconds."""
    m = _NUMBER.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if not m or (unit and unit not in _UNITS_US):
        raise ConfigError(f"fault: {what} {text!r} is not a duration (e.g. 20ms, 500us, 1s)")
    return round(float(m.group(1)) * _UNITS_US[unit or "ms"])


def parse_rate(text: str) -> int:
    """'10mbit', '512kbit', '1gbit', '100mbps' (tc's units) to bits per second."""
    m = _NUMBER.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS_BPS:
        raise ConfigError(f"fault: rate {text!r} is not a rate (e.g. 10mbit, 512kbit, 1gbit)")
    return round(float(m.group(1)) * _UNITS_BPS[unit])


def parse_percent(text: str, what: str) -> float:
    """'5', '5%', '0.5' to a percentage."""
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"fault: --{what} {text!r} is not a percentage") from None


def format_duration(us: int) -> str:
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


def format_rate(bps: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale and bps % (scale // 1000 or 1) == 0:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


#: What each entry counts (struct uvx_fault_counters), in its order.
COUNTERS = ("matched", "lost", "delayed", "duplicated", "reordered", "corrupted",
            "rate_dropped", "queue_full")


# --- The agent's side of the control socket ---------------------------------

class FaultDatapath(Protocol):
    def fault_set(self, spec: FaultSpec) -> None: ...
    def fault_clear(self, peer: str | None, vni: int | None) -> bool: ...
    def faults(self) -> list[tuple[FaultSpec, dict[str, int]]]: ...


class FaultHost(Protocol):
    @property
    def networks(self) -> dict[int, str]: ...
    @property
    def dp(self) -> FaultDatapath | None: ...


def _vni_of(network: object, networks: dict[int, str]) -> int | None:
    """A network by name, or by VNI when it is all digits; None for none."""
    if network is None:
        return None
    if not isinstance(network, str):
        raise ConfigError(f"fault: bad network {network!r}")
    if network.isdigit():
        return int(network)
    for vni, name in networks.items():
        if name == network:
            return vni
    raise ConfigError(f"fault: this agent serves no network {network!r}")


def answer(cmd: str, request: dict[str, Any], host: FaultHost) -> dict[str, Any]:
    """The reply to ``faults`` (list, with counters) or ``fault`` (``set``:
    the settings with ``peer`` and ``network``; ``clear``: ``peer`` and
    ``network``, or neither for every entry)."""
    dp = host.dp
    if dp is None:
        raise ConfigError("fault: the datapath is not running")
    if cmd == "faults":
        return {"faults": [
            {**spec.to_json(), "network": host.networks.get(spec.vni)
             if spec.vni is not None else None,
             "describe": spec.describe(), "counters": counters}
            for spec, counters in dp.faults()]}
    if "set" in request:
        body = request["set"]
        if not isinstance(body, dict):
            raise ConfigError("fault: set: not an object")
        body = dict(body)
        body["vni"] = _vni_of(body.pop("network", None), host.networks)
        spec = FaultSpec.from_json(body)
        dp.fault_set(spec)
        return {"set": spec.to_json(), "describe": spec.describe()}
    if "clear" in request:
        body = request["clear"]
        if not isinstance(body, dict):
            raise ConfigError("fault: clear: not an object")
        peer, vni = body.get("peer"), _vni_of(body.get("network"), host.networks)
        if peer is not None and not isinstance(peer, str):
            raise ConfigError(f"fault: bad peer {peer!r}")
        if peer is None and vni is None:
            cleared = sum(dp.fault_clear(s.peer, s.vni) for s, _ in dp.faults())
        else:
            cleared = int(dp.fault_clear(peer, vni))
        return {"cleared": cleared}
    raise ConfigError("fault: say set or clear")


# --- The command line: uvxlan fault ------------------------------------------

FAULT_DESCRIPTION = """\
Inject faults into a running agent's traffic towards one remote VTEP
(--peer), one network (--network), or that network's traffic to that peer:
a lab tool for protocol experiments.  They apply on the way to the wire (the
agent's egress; set them on both agents to hurt both directions), in C, to
each VXLAN datagram, and each is counted.  Without a setting it lists the
entries and their counters; a new setting for an entry replaces all of its
settings (those not given become 0).  Faults are off by default, live only in
the agent's memory, and are gone when it stops.  Delay, jitter, reordering
and a rate need the datapath threads (threads = true, the default)."""

FAULT_EPILOG = """\
examples:
  uvxlan fault --agent h1 --peer 10.77.0.2 --loss 5
  uvxlan fault --agent h1 --peer 10.77.0.2 --network net1 --delay 20ms --jitter 5ms
  uvxlan fault --agent h1 --network net1 --duplicate 1 --reorder 2 --corrupt 1
  uvxlan fault --agent h1 --peer 10.77.0.2 --rate 10mbit
  uvxlan fault --agent h1                      list, with counters
  uvxlan fault --agent h1 --peer 10.77.0.2 --clear
  uvxlan fault --agent h1 --clear              clear every entry

effects, in this order: loss; duplication (sent twice); corruption (one bit
of the inner TCP/UDP/ICMP payload flipped, so the receiver's checksum catches
it); the rate (a token bucket holding up to 50 ms of backlog, dropping beyond:
fault_rate); delay plus jitter (uniform within +-jitter, so frames may pass
each other); reordering (the frame held back until the next one of the entry
has gone, 10 ms at most).  Frames held wait in a fixed queue; when it is
full they are dropped (fault_queue_full).  A super-frame is cut and each
segment judged alone.  The most specific entry applies: peer and network,
then peer, then network."""


def add_fault_command(sub: Any) -> None:
    """``uvxlan fault``'s parser, in the command line's subcommands."""
    import argparse

    f = sub.add_parser("fault", help="inject loss, delay, duplication, reordering, corruption,"
                       " a rate limit (lab tool)", description=FAULT_DESCRIPTION,
                       epilog=FAULT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--agent", metavar="NAME",
                   help="the agent's host name, or its control socket's path"
                   " (default: the one agent running here)")
    f.add_argument("--peer", metavar="IP", help="a remote VTEP's underlay address")
    f.add_argument("--network", metavar="N", help="a network's name (or its VNI)")
    f.add_argument("--loss", metavar="PCT", help="lose this %% of datagrams")
    f.add_argument("--delay", metavar="T", help="hold each datagram this long (20ms, 500us, 1s)")
    f.add_argument("--jitter", metavar="T", help="vary the delay uniformly by up to +-T")
    f.add_argument("--duplicate", metavar="PCT", help="send this %% twice")
    f.add_argument("--reorder", metavar="PCT", help="hold back this %% behind the next one")
    f.add_argument("--corrupt", metavar="PCT", help="flip a bit in the payload of this %%")
    f.add_argument("--rate", metavar="R", help="limit to this rate of outer datagrams"
                   " (10mbit, 512kbit, 1gbit; tc's units)")
    f.add_argument("--clear", action="store_true",
                   help="remove the entry named by --peer/--network (every entry without them)")
    f.add_argument("--json", action="store_true", help="machine-readable output")
    f.set_defaults(func=run_fault_command)


_SETTINGS = ("loss", "delay", "jitter", "duplicate", "reorder", "corrupt", "rate")


def settings_from_args(args: Any) -> dict[str, Any] | None:
    """The ``set`` request of the command line's settings, None without any."""
    given = {name: getattr(args, name) for name in _SETTINGS if getattr(args, name) is not None}
    if not given:
        return None
    body: dict[str, Any] = {"peer": args.peer, "network": args.network}
    for name in ("loss", "duplicate", "reorder", "corrupt"):
        if name in given:
            body[name] = parse_percent(given[name], name)
    if "delay" in given:
        body["delay_us"] = parse_duration(given["delay"], "--delay")
    if "jitter" in given:
        body["jitter_us"] = parse_duration(given["jitter"], "--jitter")
    if "rate" in given:
        body["rate_bps"] = parse_rate(given["rate"])
    # Checked here too, so a mistake is told before the agent is asked.
    check = {k: v for k, v in body.items() if k != "network"}
    FaultSpec.from_json({**check, "vni": 0 if args.network else None})
    return body


def run_fault_command(args: Any) -> int:
    import json

    from uvxlan.control import query_agent, socket_for

    sock = socket_for(args.agent)
    body = settings_from_args(args)
    if args.clear and body is not None:
        raise ConfigError("fault: --clear takes no settings")
    if args.clear:
        reply = query_agent(sock, "fault", args={
            "clear": {"peer": args.peer, "network": args.network}})
        if args.json:
            print(json.dumps(reply))
        else:
            print(f"cleared {reply['cleared']} fault entr{'y' if reply['cleared'] == 1 else 'ies'}")
        return 0
    if body is not None:
        reply = query_agent(sock, "fault", args={"set": body})
        if args.json:
            print(json.dumps(reply))
        else:
            print(f"fault set: {_where(args.peer, args.network)}: {reply['describe']}")
        return 0
    if args.peer or args.network:
        raise ConfigError("fault: give a setting (--loss, --delay, ...) or --clear;"
                          " without either it lists every entry")
    entries = query_agent(sock, "faults")["faults"]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no faults set")
        return 0
    for e in entries:
        net = e["network"] or (str(e["vni"]) if e["vni"] is not None else None)
        print(f"{_where(e['peer'], net)}: {e['describe']}")
        print("    " + ", ".join(f"{k}={v}" for k, v in e["counters"].items()))
    return 0


def _where(peer: str | None, network: str | None) -> str:
    return " ".join(filter(None, [f"peer {peer}" if peer else "every peer",
                                  f"network {network}" if network else "every network"]))
