"""The agent's process: one uvloop event loop around the node.

``run_agent`` builds the node (``uvxlan.node``: datapath, sockets,
endpoints) and, with a cluster store, its controller; then the loop runs
until SIGTERM or SIGINT.  The packet path runs on the datapath's two C
threads, or (``threads = false``) on this loop, one call into C per
readiness event.  Besides, the loop runs a timer that ages the FDB, the
controller's tasks, and a unix socket that answers ``stats``, ``fdb`` and
``status`` queries as JSON (``uvxlan.control`` is its client).  On a stop:
the controller leaves the cluster, the packet path stops, the TAPs are
closed (the kernel deletes them), then the sockets.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import signal
from contextlib import suppress
from pathlib import Path
from typing import Any

import uvloop

from uvxlan.config import AgentConfig
from uvxlan.controller import Controller
from uvxlan.errors import UvxlanError
from uvxlan.node import Node
from uvxlan.store import Store

log = logging.getLogger("uvxlan.daemon")

AGEING_SWEEP_S = 10.0   # as Linux's vxlan: sweep every 10 s


class Daemon:
    """The event loop's work: node, controller and control socket."""

    def __init__(self, node: Node, controller: Controller | None = None) -> None:
        self.node = node
        self.cfg = node.cfg
        self.controller = controller
        self._control: asyncio.AbstractServer | None = None

    async def run(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        if self.cfg.host.cpus:
            # Before the threads start: they inherit the mask.
            os.sched_setaffinity(0, self.cfg.host.cpus)
        threads = self.cfg.host.threads
        # On two C threads, the loop only serves the control socket, the
        # ageing timer and signals; without them, it also reads the fds.
        node.serve(loop)

        sweep = min(AGEING_SWEEP_S, max(0.2, self.cfg.host.ageing / 10))
        ager = asyncio.create_task(self._age(sweep))
        await self._serve_control()
        control_plane = None
        if self.controller is not None:
            control_plane = asyncio.create_task(self.controller.run())
        log.info(
            "ready: %s:%d, %d network(s), %d endpoint(s), offload %s (%s), %s",
            self.cfg.host.underlay, self.cfg.host.port,
            len(self.cfg.networks), len(node.endpoints),
            self.cfg.host.offload, node.features.describe(),
            "2 datapath threads" if threads else "datapath on the event loop",
        )
        try:
            if control_plane is None:
                await stop.wait()
            else:
                # A control plane that fails for good (not a store outage:
                # those it rides out) ends the agent with its error.
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({stopped, control_plane},
                                   return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if control_plane.done():
                    control_plane.result()
        finally:
            log.info("stopping")
            ager.cancel()
            with suppress(asyncio.CancelledError):
                await ager
            if control_plane is not None and self.controller is not None:
                # Whether it failed or is still running, the cleanup below
                # must happen: a failure was already raised from the try.
                if not control_plane.done():
                    control_plane.cancel()
                with suppress(BaseException):
                    await control_plane
                await self.controller.close()
            node.unserve()
            await self._close_control()

    async def _age(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.node.age()

    # Control socket ------------------------------------------------------

    async def _serve_control(self) -> None:
        path = Path(self.cfg.host.control_socket)
        path.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileNotFoundError):
            path.unlink()
        self._control = await asyncio.start_unix_server(self._handle, path=str(path))

    async def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            with suppress(FileNotFoundError):
                Path(self.cfg.host.control_socket).unlink()

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                cmd = json.loads(line or b"{}").get("cmd", "")
                reply = self.query(cmd)
            except (ValueError, AttributeError):
                reply = {"error": "bad request"}
            except UvxlanError as exc:   # a query the datapath refused
                reply = {"error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    def query(self, cmd: str) -> dict[str, Any]:
        """The answer to one control socket request."""
        if cmd == "status":
            st: dict[str, Any] = {
                "ready": True, "name": self.cfg.host.name, "pid": os.getpid(),
                "offload": self.cfg.host.offload, "features": vars(self.node.features)}
            if self.controller is not None:
                st["synced"] = self.controller.synced.is_set()
                st["lease"] = self.controller.lease
                st["refused"] = len(self.controller.refused)
            return st
        if cmd == "refused":
            # Store records this agent refuses to act on: key -> why.
            return {"refused": dict(self.controller.refused) if self.controller else {}}
        if cmd == "stats":
            return self.node.stats()
        if cmd == "fdb":
            from_store = self.controller.fdb_keys() if self.controller else set()
            return {"fdb": self.node.fdb(from_store)}
        return {"error": f"unknown command {cmd!r}"}


def run_agent(cfg: AgentConfig, store: Store | None = None) -> None:
    # kill -USR1 writes every thread's stack to the log: for a hung agent.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    node = Node(cfg)
    node.start()
    controller = None if store is None else Controller(node, cfg.host, store)
    try:
        uvloop.run(Daemon(node, controller).run())
    finally:
        node.close()
        log.info("stopped; endpoints removed")
