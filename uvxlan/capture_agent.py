"""The agent's side of ``uvxlan capture``: one client's capture, from its
request line to its end (the stream is described in ``uvxlan.capture``).

The C fast path fills a ring per datapath thread (csrc/capture.c); this
drains them every DRAIN_S (at once again after a BUSY drain) while the
client keeps up.  When what waits to be sent to the client passes
HIGH_WATER, draining pauses until the client has taken it: the rings fill
and the C side counts what it misses, while forwarding goes on untouched.
The capture ends when the client shuts its side down or goes, or the
agent stops; the rings are freed then.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
from typing import Any

from uvxlan.capture import DATA, END, STATS, STATS_S, CaptureRequest, chunk
from uvxlan.errors import ConfigError, NativeError, UvxlanError
from uvxlan.node import Node

log = logging.getLogger("uvxlan.capture")

DRAIN_S = 0.05              # how often the rings are drained
HIGH_WATER = 1 << 20        # bytes waiting for the client before draining pauses
BUSY = 256 << 10            # a drain this big: drain again at once, not after DRAIN_S
END_SEND_S = 5.0            # for the client to take the last chunks
FINAL_DRAINS = 8            # at the end: twice two default rings (the rest is missed)


def _reply(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def resolve(node: Node, req: CaptureRequest) -> tuple[int | None, int | None]:
    """The request's network and port in the datapath's terms (VNI, port
    id); a ConfigError naming what this agent does not have."""
    vni = None
    if req.network is not None:
        by_name = {name: v for v, name in node.networks.items()}
        if req.network in by_name:
            vni = by_name[req.network]
        elif req.network.isdigit() and int(req.network) in node.networks:
            vni = int(req.network)
        else:
            have = ", ".join(sorted(by_name)) or "none"
            raise ConfigError(f"--network {req.network}: not served by this agent"
                              f" (its networks: {have})")
    port = None
    if req.port is not None:
        ports = {ep.port: ep for ep in node.endpoints if ep.port is not None}
        if req.port.isdigit():
            port = int(req.port)
            if port not in ports:
                raise ConfigError(f"--port {req.port}: no such port on this agent"
                                  " (`uvxlan stats` lists them)")
        else:
            # NETNS, or NETNS/IFNAME; a netns may be a path itself
            # (/proc/PID/ns/net), so the whole first, then split at the last /.
            netns, _, ifname = req.port.rpartition("/")
            found = [p for p, ep in ports.items() if ep.cfg.netns == req.port] or [
                p for p, ep in ports.items() if ep.cfg.netns == netns and ep.cfg.ifname == ifname]
            if len(found) != 1:
                raise ConfigError(f"--port {req.port}: " + (
                    "no endpoint in that netns on this agent" if not found else
                    "several endpoints in that netns: name one as NETNS/IFNAME"))
            port = found[0]
    return vni, port


async def serve(node: Node, obj: dict[str, Any], uid: int | None,
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One capture for the client of a control socket connection."""
    if uid not in (0, os.geteuid()):
        # Inner frames are the containers' own traffic: control_group
        # reads counters, not frames.
        writer.write(_reply({"error": "capture: permission denied; the frames are "
                                      "the containers' private traffic: run as root"}))
        return
    try:
        req = CaptureRequest.from_json(obj)
        vni, port = resolve(node, req)
        stats = node.capture_start(req.points(), vni=vni, port=port, mac=req.mac,
                                   ethertype=req.ethertype, outer=req.outer,
                                   snaplen=req.snaplen, slots=req.slots)
    except NativeError as exc:
        writer.write(_reply({"error": "capture: another capture runs on this agent "
                                      "(one at a time)" if exc.errno == errno.EBUSY
                             else str(exc)}))
        return
    except UvxlanError as exc:       # the request, or no datapath
        writer.write(_reply({"error": str(exc)}))
        return
    name = node.cfg.host.name
    info = dict(agent=name, points=list(req.points()),
                network=None if vni is None else node.networks.get(vni),
                vni=vni, port=port, mac=req.mac, ethertype=req.ethertype,
                outer=req.outer, snaplen=stats.snaplen, slots=stats.slots,
                # For the client's pcapng comments: networks and ports by number.
                networks={str(v): n for v, n in node.networks.items()},
                ports={str(ep.port): f"{ep.cfg.netns}/{ep.cfg.ifname}"
                       for ep in node.endpoints if ep.port is not None})
    log.info("capture started for uid %s: %s", uid,
             {k: v for k, v in info.items() if k not in ("networks", "ports")})
    final = None
    try:
        writer.write(_reply({"capture": info}))
        await _stream(node, reader, writer)
    finally:
        final = node.capture_stop()
    if final is not None:
        # Frames captured but not drained before the stop are missed too.
        missed = final.missed + final.captured - final.drained
        log.info("capture ended: %d frames sent, %d missed", final.drained, missed)
        if not writer.transport.is_closing():
            writer.write(chunk(END, json.dumps({"captured": final.drained,
                                                "missed": missed}).encode()))
            try:
                await asyncio.wait_for(writer.drain(), END_SEND_S)
            except (TimeoutError, ConnectionError):
                writer.transport.abort()


async def _stream(node: Node, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    """Drain and send until the client shuts its side down or goes."""
    transport = writer.transport
    transport.set_write_buffer_limits(high=HIGH_WATER)
    # Anything from the client, or its end, ends the capture.
    gone = asyncio.ensure_future(reader.read(1))
    told = time.monotonic()
    try:
        while not gone.done() and not transport.is_closing():
            data = b""
            if transport.get_write_buffer_size() < HIGH_WATER:
                data = node.capture_drain()
                if data:
                    writer.write(chunk(DATA, data))
            now = time.monotonic()
            if now - told >= STATS_S and transport.get_write_buffer_size() < HIGH_WATER:
                told = now
                st = node.capture_stats()
                writer.write(chunk(STATS, json.dumps(
                    {"captured": st.drained, "missed": st.missed}).encode()))
            if transport.get_write_buffer_size() >= HIGH_WATER:
                # Drain again once the client has taken most of it; a
                # client that takes nothing leaves the rings to fill.
                taken = asyncio.ensure_future(writer.drain())
                await asyncio.wait({gone, taken}, timeout=DRAIN_S)
                taken.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await taken
            elif len(data) >= BUSY:
                await asyncio.sleep(0)      # more is waiting: after the loop's other work
            else:
                await asyncio.wait({gone}, timeout=DRAIN_S)
        # The client asked to stop: what the rings hold goes too, not what
        # keeps coming meanwhile (a bounded number of drains).
        for _ in range(FINAL_DRAINS):
            data = b"" if transport.is_closing() else node.capture_drain()
            if not data:
                break
            writer.write(chunk(DATA, data))
    except ConnectionError:
        pass
    finally:
        if not gone.done():
            gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await gone
