"""Prometheus metrics: the agent's counters in the text exposition format
0.0.4, served on ``GET /metrics`` at an optional address (``[host]
metrics``, ``uvxlan agent --metrics``).

Every number comes from what ``uvxlan stats`` shows (``Node.stats()``)
and the agent's status: this module only renders them.  Names follow
node_exporter: a ``uvxlan_`` prefix, base units, ``_total`` on counters,
one family per quantity with what varies in labels:

    uvxlan_port_packets_total{network,vni,netns,ifname,direction}
        direction "rx": read from the container's eth0 (the container
        sent it); "tx": written to it
    uvxlan_network_packets_total{network,vni,direction}
        "rx": decapsulated from the wire; "tx": encapsulated onto it
    uvxlan_drops_total{reason}, ..._network_drops_total, ..._port_drops_total
        every reason of csrc/drop.h, zero included, so a rate never
        starts from a missing series

The server is small on purpose: one request per connection (``Connection:
close``), a request head of ``HEAD_MAX`` bytes within ``IDLE_S``, the
reply taken within ``send_s``, ``connections_max`` at once (``uvxlan.bounded``; the control
socket's bounds), and nothing but ``GET``/``HEAD /metrics``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from uvxlan.bounded import LISTEN_BACKLOG, BoundedServer
from uvxlan.errors import ConfigError

log = logging.getLogger("uvxlan.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"

HEAD_MAX = 8192         # request line and headers (Prometheus sends ~300 bytes)
# How long one rendering serves: the whole exposition is rendered on the
# event loop (10,000 ports x 21 drop reasons: 23 MB, seconds of CPU), so
# scrapers asking together, or often, cost one rendering a second at
# most, and a slow rendering is kept RENDER_SHARE times as long as it
# took: rendering takes at most about a tenth of the loop's time.
CACHE_S = 1.0
RENDER_SHARE = 10


# The exposition ----------------------------------------------------------------


@dataclass
class Family:
    """One metric family: its samples as (labels, value)."""

    name: str
    kind: str            # "counter" or "gauge"
    help: str
    samples: list[tuple[dict[str, str], int | float]] = field(default_factory=list)

    def add(self, value: int | float, **labels: object) -> None:
        self.samples.append(({k: str(v) for k, v in labels.items()}, value))


def _label_value(text: str) -> str:
    # The format's escapes: backslash, double quote, line feed.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def exposition(families: Iterable[Family]) -> str:
    out: list[str] = []
    for f in families:
        out.append(f"# HELP {f.name} {_help(f.help)}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            out.append(f"{f.name}{{{inner}}} {value}" if inner else f"{f.name} {value}")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class AgentFacts:
    """What the metrics say about the agent beside its counters."""

    version: str
    ready: bool
    store: bool                 # runs with a cluster store
    store_synced: bool = False  # its first full apply done
    store_registered: bool = False   # holds a lease with its host record
    store_connected: bool = False    # the store answered the last call


def families(stats: Mapping[str, Any], agent: AgentFacts) -> list[Family]:
    """The metric families for one scrape: ``stats`` is Node.stats()."""
    reasons = sorted(stats["drops"])     # every reason, as the datapath names them
    build = Family("uvxlan_build_info", "gauge", "uvxlan's version; always 1")
    build.add(1, version=agent.version)
    ready = Family("uvxlan_ready", "gauge",
                   "1 once the agent forwards and answers on its control socket")
    ready.add(int(agent.ready))
    out = [build, ready]
    if agent.store:
        synced = Family("uvxlan_store_synced", "gauge",
                        "1 once the store's state was first applied")
        synced.add(int(agent.store_synced))
        registered = Family("uvxlan_store_registered", "gauge",
                            "1 while the agent holds a store lease with its host record")
        registered.add(int(agent.store_registered))
        connected = Family("uvxlan_store_connected", "gauge",
                           "1 if the store answered the agent's last call (a keepalive "
                           "every lease_ttl/3), 0 if it could not be reached")
        connected.add(int(agent.store_connected))
        out += [synced, registered, connected]

    drops = Family("uvxlan_drops_total", "counter", "frames dropped, by reason (csrc/drop.h)")
    for r in reasons:
        drops.add(stats["drops"][r], reason=r)
    out.append(drops)

    n_packets = Family("uvxlan_network_packets_total", "counter",
                       "VXLAN frames of a network: rx decapsulated, tx encapsulated")
    n_bytes = Family("uvxlan_network_bytes_total", "counter",
                     "bytes of those frames (inner Ethernet frames)")
    n_drops = Family("uvxlan_network_drops_total", "counter",
                     "frames of a network dropped, by reason")
    n_arp = Family("uvxlan_network_arp_replies_total", "counter",
                   "ARP requests answered on this host (suppressed)")
    n_limits = Family("uvxlan_network_limit_reached_total", "counter",
                      "entries refused at a limit: learn_limit and fdb_full (sources "
                      "left unlearned), flood_full (VTEPs), arp_full (addresses)")
    fdb = stats["fdb"]
    for key, what in (("entries", "FDB entries, static and learned"),
                      ("learned", "FDB entries learned"),
                      ("learn_max", "the cap on learned FDB entries (fdb_capacity)"),
                      ("capacity", "FDB entries the pool holds now (grows for static ones)")):
        gauge = Family(f"uvxlan_fdb_{key}", "gauge", what)
        gauge.add(fdb[key])
        out.append(gauge)
    sizes = {key: Family(f"uvxlan_network_{name}", "gauge", what) for key, name, what in (
        ("learned", "fdb_learned", "FDB entries learned in a network (learn_limit caps them)"),
        ("flood", "flood_vteps", "VTEPs in a network's flood list"),
        ("admitted", "admitted_vteps", "VTEPs admitted to send into a network"),
        ("arp", "arp_entries", "addresses in a network's ARP table"))}
    vni_of: dict[str, int] = {}
    for n in stats["networks"]:
        where = {"network": n["name"], "vni": n["vni"]}
        vni_of[n["name"]] = n["vni"]
        for d in ("rx", "tx"):
            n_packets.add(n[f"{d}_packets"], **where, direction=d)
            n_bytes.add(n[f"{d}_bytes"], **where, direction=d)
        for r in reasons:
            n_drops.add(n["drops"].get(r, 0), **where, reason=r)
        n_arp.add(n["arp_replies"], **where)
        for limit, count in sorted(n["limits"].items()):
            n_limits.add(count, **where, limit=limit)
        for key, gauge in sizes.items():
            gauge.add(n["sizes"][key], **where)
    out += [n_packets, n_bytes, n_drops, n_arp, n_limits, *sizes.values()]

    p_packets = Family("uvxlan_port_packets_total", "counter",
                       "frames of a container's interface: rx read from it (the container "
                       "sent them), tx written to it")
    p_bytes = Family("uvxlan_port_bytes_total", "counter", "bytes of those frames")
    p_drops = Family("uvxlan_port_drops_total", "counter",
                     "frames from a container's interface, or for it, dropped, by reason")
    for p in stats["ports"]:
        where = {"network": p["network"], "vni": vni_of.get(p["network"], ""),
                 "netns": p["netns"], "ifname": p["ifname"]}
        for d in ("rx", "tx"):
            p_packets.add(p[f"{d}_packets"], **where, direction=d)
            p_bytes.add(p[f"{d}_bytes"], **where, direction=d)
        for r in reasons:
            p_drops.add(p["drops"].get(r, 0), **where, reason=r)
    out += [p_packets, p_bytes, p_drops]

    endpoints = Family("uvxlan_endpoints", "gauge",
                       "containers' interfaces: up (forwarding) or lost (netns gone or "
                       "interface failed; made again when it is back)")
    endpoints.add(len(stats["ports"]), state="up")
    endpoints.add(len(stats.get("lost", [])), state="lost")
    out.append(endpoints)
    return out


# The listening socket -----------------------------------------------------------


def bind_metrics(listen: str) -> socket.socket:
    """The metrics socket for a checked "IP:PORT" (validate.listen),
    bound and listening: a port in use is one line at start, before the
    agent makes anything."""
    host, _, port = listen.rpartition(":")
    address = ipaddress.ip_address(host.strip("[]"))
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # Not SO_REUSEPORT: a second agent on the same port must fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(address), int(port)))
        # Listening at once: with SO_REUSEADDR, two sockets bound but not
        # yet listening may share a port, and a second agent would fail
        # only later, after making its TAPs.
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"metrics {listen}: {exc.strerror or exc}") from None
    return sock


# The HTTP server ---------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}


def _response(status: int, body: bytes, *, content_type: str = "text/plain; charset=utf-8",
              head_only: bool = False, extra: Mapping[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}",
             f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}",
             "Connection: close",
             *(f"{k}: {v}" for k, v in (extra or {}).items())]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + body


def _error(status: int, why: str, **kw: Any) -> bytes:
    return _response(status, f"{why}\n".encode(), **kw)


def answer(head: bytes, render: Callable[[], str]) -> bytes:
    """The whole response to one request head (request line and headers,
    without the blank line that ends them)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return _error(400, "the request is not ASCII")
    parts = text.split("\r\n", 1)[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return _error(400, "expected: METHOD PATH HTTP/1.1")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        return _error(505, f"{version[:16]!r} is not HTTP/1.0 or HTTP/1.1")
    if target.split("?", 1)[0] != PATH:
        return _error(404, f"only {PATH} is served here", head_only=method == "HEAD")
    if method not in ("GET", "HEAD"):
        return _error(405, f"{method[:16]} is not allowed here: GET or HEAD",
                      extra={"Allow": "GET, HEAD"})
    try:
        body = render().encode()
    except Exception:   # noqa: BLE001 - a bug in a scrape must not end the agent
        log.exception("metrics: rendering failed")
        return _error(500, "the metrics could not be rendered: see the agent's log")
    return _response(200, body, content_type=CONTENT_TYPE, head_only=method == "HEAD")


class Cached:
    """render(), called again only once its text is ``ttl`` seconds old (or
    RENDER_SHARE times as old as rendering it took, if longer); a
    rendering that fails is not kept."""

    def __init__(self, render: Callable[[], str], ttl: float = CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._render = render
        self._ttl = ttl
        self._clock = clock
        self._text: str | None = None
        self._at = 0.0
        self._hold = ttl

    def __call__(self) -> str:
        now = self._clock()
        if self._text is None or now - self._at >= self._hold:
            self._text = self._render()
            self._at = self._clock()
            self._hold = max(self._ttl, RENDER_SHARE * (self._at - now))
        return self._text


class MetricsServer(BoundedServer):
    """GET /metrics on the event loop, bounded as the control socket is;
    one rendering serves every scrape for ``CACHE_S``."""

    def __init__(self, sock: socket.socket, render: Callable[[], str]) -> None:
        super().__init__(sock)
        self.render = Cached(render)

    async def start(self) -> None:
        await self.serve(HEAD_MAX)

    async def close(self) -> None:
        await self.stop()

    incomplete = "the request ended before its blank line"

    def refusal(self, status: int, why: str) -> bytes:
        # A busy scraper is told when to come back.
        return _error(status, why, extra={"Retry-After": "1"} if status == 503 else None)

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        return await reader.readuntil(b"\r\n\r\n")      # the head; a GET has no body

    async def reply(self, request: bytes) -> bytes:
        return answer(request[:-4], self.render)
