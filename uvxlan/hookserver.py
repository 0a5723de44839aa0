"""The agent's side of Python hooks (``uvxlan.hooks`` is the researcher's).

A hook session is a control-socket connection whose request is
``{"cmd": "hook", "network": ..., "ethertype": ..., "mac": ...,
"direction": ..., "timeout": ..., "fail": ...}`` (root's alone, as it
changes forwarding).  The agent adds the rule to the fast path (csrc/punt.c)
and answers one JSON line (the hook's id, the network, its ports); then
the connection carries ``uvxlan.hooks.HEADER`` messages both ways: frames
to the client, verdicts and injections back.  The agent runs no foreign
code: it moves bytes between the punt queue and the socket.

The loop reads the punt queue when its eventfd says frames wait, sends
each to its hook's client and remembers its token; a verdict gives it back
(``Punt.verdict``), and the workers are kicked once per loop pass.  A frame
without a verdict after the hook's timeout, and every frame still waiting
when the client goes, gets the hook's fail verdict; a client that does not
read is cut off once its unsent frames pass ``BACKLOG_MAX`` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from uvxlan import hooks
from uvxlan.errors import ConfigError, NativeError, UvxlanError
from uvxlan.node import Node
from uvxlan.punt import DROP, PASS, Punt, Punted

log = logging.getLogger("uvxlan.hooks")

BACKLOG_MAX = 32 << 20     # bytes unsent to one client before it is cut off


@dataclass
class HookSession:
    """One attached hook, as the agent sees it."""

    id: int
    network: str
    vni: int
    request: dict[str, Any]
    writer: asyncio.StreamWriter
    fail: int                               # PASS or DROP
    timeout: float
    # seq -> (token, deadline): frames sent, waiting for their verdict,
    # oldest first (deadlines grow with seq).
    waiting: OrderedDict[int, tuple[int, float]] = field(default_factory=OrderedDict)
    seq: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("frames", "passed", "dropped", "rewritten", "injected", "timeouts", "failed"), 0))

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "network": self.network, "vni": self.vni,
                "ethertype": self.request["ethertype"], "mac": self.request["mac"],
                "direction": self.request["direction"], "timeout": self.timeout,
                "fail": "drop" if self.fail == DROP else "pass",
                "waiting": len(self.waiting), **self.counts}


class HookServer:
    """Hook sessions on one node's datapath."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sessions: dict[int, HookSession] = {}
        self._punt: Punt | None = None
        self._next_id = 1
        self._reading = False
        self._kick_soon = False
        # The fail verdict of hooks gone, for their frames still in the
        # queue when they went (ids are never reused).
        self._gone_fail: dict[int, int] = {}

    def _queue(self) -> Punt:
        if self.node.dp is None:
            raise UvxlanError("the datapath is not running")
        if self._punt is None:
            self._punt = Punt(self.node.dp)
        return self._punt

    def status(self) -> dict[str, Any]:
        punted = self._punt.punted() if self._punt is not None else 0
        return {"hooks": [s.status() for s in self.sessions.values()], "punted": punted}

    # A session ----------------------------------------------------------

    def _check(self, request: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
        network = request.get("network")
        vni = next((v for v, n in self.node.networks.items() if n == network), None)
        if vni is None:
            raise ConfigError(f"hook: no network {network!r} on this agent")
        checked = hooks.hook_request(
            str(network), ethertype=request.get("ethertype") or 0, mac=request.get("mac"),
            direction=request.get("direction", "both"),
            timeout=request.get("timeout", hooks.TIMEOUT_DEFAULT),
            fail=request.get("fail", "drop"))
        return str(network), vni, checked

    async def session(self, request: dict[str, Any], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Serve one hook until its client goes (or the agent stops)."""
        try:
            network, vni, checked = self._check(request)
            punt = self._queue()
            hook_id = self._next_id
            self._next_id += 1
            punt.add(hook_id, vni, ethertype=checked["ethertype"], mac=checked["mac"],
                     directions=hooks.DIRECTIONS[checked["direction"]])
        except (UvxlanError, ValueError) as exc:
            writer.write(_line({"error": str(exc)}))
            await writer.drain()
            return
        s = HookSession(hook_id, network, vni, checked, writer,
                        DROP if checked["fail"] == "drop" else PASS, checked["timeout"])
        self.sessions[hook_id] = s
        if not self._reading:
            asyncio.get_running_loop().add_reader(punt.fd(), self._drain)
            self._reading = True
        log.info("hook %d attached to %s (%s)", hook_id, network, _describe(checked))
        ports = [{"port": ep.port, "netns": ep.cfg.netns, "mac": ep.cfg.mac,
                  "ip": str(ep.cfg.address.ip)}
                 for ep in self.node.endpoints
                 if ep.port is not None and ep.cfg.network == network]
        writer.write(_line({"hook": hook_id, "network": network, "vni": vni, "ports": ports}))
        expiry = asyncio.create_task(self._expire(s))
        try:
            await self._read_answers(s, reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass                              # the client went: that is detaching
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            self._detach(s)

    async def _read_answers(self, s: HookSession, reader: asyncio.StreamReader) -> None:
        punt = self._queue()
        size = hooks.HEADER.size
        while True:
            kind, code, seq, port, _, length = hooks.HEADER.unpack(await reader.readexactly(size))
            if length > hooks.FRAME_MAX:
                raise ConnectionError("frame too long")
            data = await reader.readexactly(length) if length else b""
            if kind == hooks.MSG_VERDICT:
                waiting = s.waiting.pop(seq, None)
                if waiting is None:
                    continue                  # too late: its fail verdict went
                if code == hooks.VERDICT_DROP:
                    verdict, new, what = DROP, None, "dropped"
                elif code == hooks.VERDICT_REWRITE and len(data) >= 14:
                    verdict, new, what = PASS, data, "rewritten"
                else:
                    verdict, new, what = PASS, None, "passed"
                s.counts[what] += 1
                punt.verdict(waiting[0], verdict, new)
            elif kind == hooks.MSG_INJECT:
                self._inject(s, punt, code, port, data)
            else:
                raise ConnectionError("not a hook message")
            self._kick()

    def _inject(self, s: HookSession, punt: Punt, code: int, port: int, data: bytes) -> None:
        ports = {ep.port for ep in self.node.endpoints if ep.cfg.network == s.network}
        if port not in ports or len(data) < 14:
            s.counts["failed"] += 1           # only into the hook's own network
            return
        direction = hooks.INJECT_CONTAINER if code == hooks.INJECT_CONTAINER \
            else hooks.INJECT_NETWORK
        try:
            if punt.inject(port, direction, data):
                s.counts["injected"] += 1
                return
            # Every injection slot in flight: run them, then once more.
            punt.kick()
            if punt.inject(port, direction, data):
                s.counts["injected"] += 1
                return
        except NativeError:
            pass
        s.counts["failed"] += 1

    def _kick(self) -> None:
        """Run the verdicts given so far, once per loop pass."""
        if self._kick_soon:
            return
        self._kick_soon = True
        asyncio.get_running_loop().call_soon(self._kick_now)

    def _kick_now(self) -> None:
        self._kick_soon = False
        if self._punt is not None and self.node.dp is not None:
            self._punt.kick()

    def _drain(self) -> None:
        """Frames wait: each to its hook's client."""
        punt = self._punt
        if punt is None or self.node.dp is None:
            return
        now = time.monotonic()
        orphans = False
        for p in punt.take():
            s = self.sessions.get(p.hook)
            if s is None or s.writer.is_closing():
                punt.verdict(p.token, s.fail if s else self._gone_fail.get(p.hook, DROP))
                orphans = True
                continue
            self._send(s, p, now)
        if orphans:
            self._kick()

    def _send(self, s: HookSession, p: Punted, now: float) -> None:
        s.seq = (s.seq + 1) & 0xFFFFFFFF
        s.waiting[s.seq] = (p.token, now + s.timeout)
        s.counts["frames"] += 1
        remote = int.from_bytes(socket.inet_aton(p.remote), "big") if p.remote else 0
        s.writer.write(hooks.HEADER.pack(hooks.MSG_FRAME, p.direction, s.seq, p.port,
                                         remote, len(p.data)) + p.data)
        if s.writer.transport.get_write_buffer_size() > BACKLOG_MAX:
            log.warning("hook %d: its client does not read; detached", s.id)
            s.writer.transport.abort()

    async def _expire(self, s: HookSession) -> None:
        """The fail verdict for frames past their deadline."""
        step = min(0.05, s.timeout / 4)
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            expired = False
            while s.waiting:
                seq, (token, deadline) = next(iter(s.waiting.items()))
                if deadline > now:
                    break
                del s.waiting[seq]
                s.counts["timeouts"] += 1
                self._queue().verdict(token, s.fail)
                expired = True
            if expired:
                self._kick()

    def _detach(self, s: HookSession) -> None:
        """The hook's rules go; what it holds gets its fail verdict."""
        self.sessions.pop(s.id, None)
        self._gone_fail[s.id] = s.fail
        if self._punt is None or self.node.dp is None:
            return
        self._punt.delete(s.id)
        for token, _ in s.waiting.values():
            self._punt.verdict(token, s.fail)
        s.waiting.clear()
        self._punt.kick()
        if not self.sessions and self._reading:
            # Frames punted before the rules went are still to be read.
            self._drain()
            asyncio.get_running_loop().remove_reader(self._punt.fd())
            self._reading = False
        log.info("hook %d detached from %s: %s", s.id, s.network,
                 ", ".join(f"{k} {v}" for k, v in s.counts.items()))


def _describe(req: dict[str, Any]) -> str:
    parts = [f"ethertype 0x{req['ethertype']:04x}" if req["ethertype"] else "any ethertype"]
    if req["mac"]:
        parts.append(f"mac {req['mac']}")
    parts += [req["direction"], f"timeout {req['timeout']:g} s", f"fail {req['fail']}"]
    return ", ".join(parts)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"
