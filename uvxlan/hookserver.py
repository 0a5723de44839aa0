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
    fail_drop: bool                         # the fail verdict: drop (else pass)
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
                "fail": "drop" if self.fail_drop else "pass",
                "waiting": len(self.waiting), **self.counts}


class HookServer:
    """Hook sessions on one node's datapath."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sessions: dict[int, HookSession] = {}
        self._next_id = 1
        self._reading = False
        self._kick_soon = False
        # The fail verdict of hooks gone, for their frames still in the
        # queue when they went (ids are never reused).
        self._gone_fail: dict[int, bool] = {}

    def status(self) -> dict[str, Any]:
        punted = self.node.dp.hook_punted() if self.node.dp is not None else 0
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
            dp = self.node.dp
            if dp is None:
                raise UvxlanError("the datapath is not running")
            hook_id = self._next_id
            self._next_id += 1
            dirs = hooks.DIRECTIONS[checked["direction"]]
            dp.hook_add(hook_id, vni, ethertype=checked["ethertype"], mac=checked["mac"],
                        from_port=bool(dirs & hooks.FROM_PORT),
                        from_wire=bool(dirs & hooks.FROM_WIRE))
        except (UvxlanError, ValueError) as exc:
            writer.write(_line({"error": str(exc)}))
            await writer.drain()
            return
        s = HookSession(hook_id, network, vni, checked, writer,
                        checked["fail"] == "drop", checked["timeout"])
        self.sessions[hook_id] = s
        if not self._reading:
            asyncio.get_running_loop().add_reader(dp.hook_fd(), self._drain)
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
        """Verdicts and injections as they come, a read at a time; the
        workers are kicked once per read."""
        size = hooks.HEADER.size
        buf = bytearray()
        while chunk := await reader.read(1 << 20):
            buf += chunk
            dp = self.node.dp
            if dp is None:
                return                        # the agent stops
            at = 0
            while len(buf) - at >= size:
                kind, code, seq, port, _, length = hooks.HEADER.unpack_from(buf, at)
                if length > hooks.FRAME_MAX or kind not in (hooks.MSG_VERDICT,
                                                            hooks.MSG_INJECT):
                    raise ConnectionError("not a hook message")
                if len(buf) - at - size < length:
                    break
                data = bytes(buf[at + size:at + size + length])
                at += size + length
                if kind == hooks.MSG_INJECT:
                    self._inject(s, code, port, data)
                    continue
                waiting = s.waiting.pop(seq, None)
                if waiting is None:
                    continue                  # too late: its fail verdict went
                if code == hooks.VERDICT_DROP:
                    drop, new, what = True, None, "dropped"
                elif code == hooks.VERDICT_REWRITE and length >= 14:
                    drop, new, what = False, data, "rewritten"
                else:
                    drop, new, what = False, None, "passed"
                s.counts[what] += 1
                dp.hook_verdict(waiting[0], drop=drop, data=new)
            del buf[:at]
            dp.hook_kick()

    def _inject(self, s: HookSession, code: int, port: int, data: bytes) -> None:
        dp = self.node.dp
        ports = {ep.port for ep in self.node.endpoints if ep.cfg.network == s.network}
        if dp is None or port not in ports or len(data) < 14:
            s.counts["failed"] += 1           # only into the hook's own network
            return
        to_container = code == hooks.INJECT_CONTAINER
        try:
            if dp.hook_inject(port, data, to_container=to_container):
                s.counts["injected"] += 1
                return
            # Every injection slot in flight.  Without datapath threads
            # the kick runs them here and frees their slots; with threads it
            # only wakes the workers, so this one try usually fails too and
            # is counted (`failed`): a hook injecting faster than the
            # workers take them loses frames, never waits.
            dp.hook_kick()
            if dp.hook_inject(port, data, to_container=to_container):
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
        if self.node.dp is not None:
            self.node.dp.hook_kick()

    def _drain(self) -> None:
        """Frames wait: each to its hook's client."""
        dp = self.node.dp
        if dp is None:
            return
        now = time.monotonic()
        orphans = False
        out: dict[int, list[bytes]] = {}          # per session: one write per drain
        for p in dp.hook_take():
            s = self.sessions.get(p.hook)
            if s is None or s.writer.is_closing():
                dp.hook_verdict(p.token, drop=s.fail_drop if s else
                                self._gone_fail.get(p.hook, True))
                orphans = True
                continue
            s.seq = (s.seq + 1) & 0xFFFFFFFF
            s.waiting[s.seq] = (p.token, now + s.timeout)
            s.counts["frames"] += 1
            remote = int.from_bytes(socket.inet_aton(p.remote), "big") if p.remote else 0
            direction = hooks.FROM_WIRE if p.from_wire else hooks.FROM_PORT
            out.setdefault(s.id, []).extend((
                hooks.HEADER.pack(hooks.MSG_FRAME, direction, s.seq, p.port, remote,
                                  len(p.data)), p.data))
        for hook_id, parts in out.items():
            s = self.sessions[hook_id]
            s.writer.write(b"".join(parts))
            if s.writer.transport.get_write_buffer_size() > BACKLOG_MAX:
                log.warning("hook %d: its client does not read; detached", s.id)
                s.writer.transport.abort()
        if orphans:
            self._kick()

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
                if self.node.dp is not None:
                    self.node.dp.hook_verdict(token, drop=s.fail_drop)
                expired = True
            if expired:
                self._kick()

    def _detach(self, s: HookSession) -> None:
        """The hook's rules go; what it holds gets its fail verdict."""
        self.sessions.pop(s.id, None)
        self._gone_fail[s.id] = s.fail_drop
        dp = self.node.dp
        if dp is None:
            return
        dp.hook_del(s.id)
        for token, _ in s.waiting.values():
            dp.hook_verdict(token, drop=s.fail_drop)
        s.waiting.clear()
        if not self.sessions and self._reading:
            # Frames punted before the rules went are still to be read.
            self._drain()
            asyncio.get_running_loop().remove_reader(dp.hook_fd())
            self._reading = False
        dp.hook_kick()
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
