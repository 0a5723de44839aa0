"""The per-host agent: one uvloop event loop around the C fast path.

Start-up checks everything it can before making anything (config, netns,
interface names, the UDP port), then builds the datapath, its VNIs and
flood lists, and one endpoint (TAP) per configured container.  If any step
fails, what was made is undone and the error is one line.

While running, the loop's only work on the packet path is to call into C
when a fd is readable: ``uvx_tap_rx`` for a TAP, ``uvx_udp_rx`` for the
VXLAN socket; each drains a batch.  A timer ages the FDB.  A unix socket
answers ``stats``, ``fdb`` and ``status`` queries as JSON.  SIGTERM or
SIGINT stop it: readers removed, TAPs closed (the kernel deletes them),
sockets closed.
"""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import json
import logging
import os
import signal
import socket
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from uvxlan import native, offload
from uvxlan.config import AgentConfig, EndpointConfig
from uvxlan.endpoint import Endpoint, preflight
from uvxlan.errors import ConfigError, UvxlanError

if TYPE_CHECKING:
    from uvxlan.controller import Controller
    from uvxlan.store import Store

log = logging.getLogger("uvxlan.agent")

AGEING_SWEEP_S = 10.0   # as Linux's vxlan: sweep every 10 s


def bind_vxlan_socket(address: str, port: int) -> socket.socket:
    """The UDP socket VXLAN arrives on, with errors a user can act on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"UDP port {port} on {address} is already in use") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"underlay {address} is not an address of this host") from None
        raise ConfigError(f"cannot bind UDP {address}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.dp: native.Datapath | None = None
        self.endpoints: list[Endpoint] = []
        self._udp: socket.socket | None = None
        self._tx_fd = -1
        self._pool: list[socket.socket] = []
        self.features = offload.Features(False, False, False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: asyncio.AbstractServer | None = None
        self.networks: dict[int, str] = {}        # VNI -> network name
        self.static_vnis: set[int] = set()        # from the config file
        self.controller: Controller | None = None

    # Start-up and shut-down ----------------------------------------------

    def start(self) -> None:
        """Build everything, or nothing: on failure, undo and re-raise."""
        h = self.cfg.host
        try:
            for epc in self.cfg.endpoints:
                preflight(epc)
            self._udp = bind_vxlan_socket(h.underlay, h.port)
            self._tx_fd = native.open_tx_socket(h.underlay)
            self.features = offload.probe(h.offload)
            if self.features.udp_gso:
                self._pool = offload.open_send_pool(h.underlay, *h.src_ports, h.send_sockets)
            if self.features.udp_gro:
                offload.enable_udp_gro(self._udp)
            self.dp = native.Datapath(h.datapath())
            self.dp.set_sockets(self._udp.fileno(), self._tx_fd)
            self.dp.set_pool([(s.fileno(), s.getsockname()[1]) for s in self._pool],
                             gso=bool(self._pool), gro=self.features.udp_gro)
            for net in self.cfg.networks:
                self.add_network(net.name, net.vni)
                self.static_vnis.add(net.vni)
                for r in net.remotes:
                    self.dp.add_remote(net.vni, r.ip, r.port)
                for s in net.static:
                    self.dp.fdb_add(net.vni, s.mac, remote=s.remote.ip,
                                    remote_port=s.remote.port)
            for epc in self.cfg.endpoints:
                self.add_endpoint(epc, self.cfg.network(epc.network).vni, h.endpoint_mtu)
        except BaseException:
            self.close()
            raise

    # Networks and endpoints, at start-up or from the control plane -------

    def add_network(self, name: str, vni: int) -> None:
        assert self.dp is not None
        self.dp.add_vni(vni)
        self.networks[vni] = name

    def remove_network(self, vni: int) -> None:
        """The VNI and everything in it (its ports must be gone)."""
        assert self.dp is not None
        self.dp.del_vni(vni)
        self.networks.pop(vni, None)

    def add_endpoint(self, epc: EndpointConfig, vni: int, mtu: int) -> Endpoint:
        """A TAP in the container's netns, switched in VNI vni."""
        assert self.dp is not None
        preflight(epc)
        ep = Endpoint(epc, mtu, vnet_hdr=self.features.tap_vnet_hdr,
                      queue=self.cfg.host.tap_queue)
        try:
            ep.port = self.dp.add_port(ep.fileno(), vni, vnet_hdr=ep.vnet_hdr)
            # Our own containers' MACs are known: pin them, so a frame
            # from the wire claiming one cannot move it.
            self.dp.fdb_add(vni, epc.mac, port=ep.port)
        except BaseException:
            if ep.port is not None:
                self.dp.del_port(ep.port)
            ep.close()
            raise
        self.endpoints.append(ep)
        if self._loop is not None and not self.cfg.host.threads:
            self._loop.add_reader(ep.fileno(), self._tap_ready, ep)
        return ep

    def remove_endpoint(self, ep: Endpoint) -> None:
        """Out of the switch first (the threads let go of its fd), then
        closed: the kernel removes the interface."""
        assert self.dp is not None
        if self._loop is not None and not self.cfg.host.threads:
            self._loop.remove_reader(ep.fileno())
        if ep.port is not None:
            self.dp.del_port(ep.port)
            ep.port = None
        ep.close()
        self.endpoints.remove(ep)

    def close(self) -> None:
        # The threads read the TAPs and sockets: stop them before any fd
        # they use is closed (and its number reused).
        if self.dp is not None:
            self.dp.stop_threads()
        for ep in list(self.endpoints):
            ep.close()
        self.endpoints.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tx_fd >= 0:
            os.close(self._tx_fd)
            self._tx_fd = -1
        for s in self._pool:
            s.close()
        self._pool.clear()
        if self.dp is not None:
            self.dp.close()
            self.dp = None

    # The loop ------------------------------------------------------------

    def _tap_ready(self, ep: Endpoint) -> None:
        assert self.dp is not None and ep.port is not None
        rc = native.lib.uvx_tap_rx(self.dp._dp, ep.port)
        if rc < 0:
            # A TAP whose interface is gone (its netns deleted) stays
            # readable and fails every read: stop listening to it.
            log.error("endpoint %s in netns %s: %s; no longer served",
                      ep.cfg.ifname, ep.cfg.netns, os.strerror(-rc))
            assert self._loop is not None
            self._loop.remove_reader(ep.fileno())

    async def run(self) -> None:
        assert self.dp is not None and self._udp is not None
        loop = asyncio.get_running_loop()
        self._loop = loop
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        if self.cfg.host.cpus:
            # Before the threads start: they inherit the mask.
            os.sched_setaffinity(0, self.cfg.host.cpus)
        threads = self.cfg.host.threads
        if threads:
            # The packet path runs on two C threads; this loop only
            # serves the control socket, the ageing timer and signals.
            self.dp.start_threads()
        else:
            # One call into C per readiness event; C drains a batch.  The
            # UDP socket cannot go bad the way a TAP can, so its callback
            # is the cffi function itself.
            loop.add_reader(self._udp.fileno(), native.lib.uvx_udp_rx, self.dp._dp)
            for ep in self.endpoints:
                loop.add_reader(ep.fileno(), self._tap_ready, ep)

        sweep = min(AGEING_SWEEP_S, max(0.2, self.cfg.host.ageing / 10))
        ager = asyncio.create_task(self._age(sweep))
        await self._serve_control()
        control_plane = None
        if self.controller is not None:
            control_plane = asyncio.create_task(self.controller.run())
        log.info(
            "ready: %s:%d, %d network(s), %d endpoint(s), offload %s (%s), %s",
            self.cfg.host.underlay, self.cfg.host.port,
            len(self.cfg.networks), len(self.endpoints),
            self.cfg.host.offload, self.features.describe(),
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
            if threads:
                self.dp.stop_threads()
            else:
                loop.remove_reader(self._udp.fileno())
                for ep in self.endpoints:
                    loop.remove_reader(ep.fileno())
            await self._close_control()

    async def _age(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            assert self.dp is not None
            n = self.dp.fdb_age()
            if n:
                log.debug("aged out %d FDB entries", n)
            if self.dp.gso_failed():
                log.warning("UDP_SEGMENT failed at run time: sending with sendmmsg from now on")

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
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    def query(self, cmd: str) -> dict[str, Any]:
        assert self.dp is not None
        if cmd == "status":
            st: dict[str, Any] = {
                "ready": True, "name": self.cfg.host.name, "pid": os.getpid(),
                "offload": self.cfg.host.offload, "features": vars(self.features)}
            if self.controller is not None:
                st["synced"] = self.controller.synced.is_set()
                st["lease"] = self.controller.lease
            return st
        if cmd == "stats":
            return self.stats()
        if cmd == "fdb":
            from_store = self.controller.fdb_keys() if self.controller else set()
            return {"fdb": [dict(vars(e), network=self.networks.get(e.vni),
                                 source=_fdb_source(e, from_store))
                             for e in self.dp.fdb_dump()]}
        return {"error": f"unknown command {cmd!r}"}

    def stats(self) -> dict[str, Any]:
        assert self.dp is not None
        return {
            "drops": self.dp.drops(),
            "networks": [
                dict(name=name, vni=vni, arp_replies=self.dp.arp_replies(vni),
                     **vars(self.dp.vni_counters(vni)))
                for vni, name in sorted(self.networks.items())
            ],
            "ports": [
                dict(port=ep.port, network=ep.cfg.network, netns=ep.cfg.netns,
                     ifname=ep.cfg.ifname, mac=ep.cfg.mac,
                     **vars(self.dp.port_counters(ep.port)))
                for ep in self.endpoints if ep.port is not None
            ],
        }


def _fdb_source(e: native.FdbEntry, from_store: set[tuple[int, str]]) -> str:
    """Where an entry came from: learned, a local endpoint, the store (its
    (VNI, MAC) in from_store), or the config file."""
    if not e.static:
        return "learned"
    if e.port is not None:
        return "local"
    return "store" if (e.vni, e.mac) in from_store else "config"


def query_agent(control_socket: str, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running agent over its control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(control_socket)
        except (FileNotFoundError, ConnectionRefusedError):
            raise UvxlanError(f"no agent answers at {control_socket}") from None
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    if "error" in reply:
        raise UvxlanError(f"agent: {reply['error']}")
    return reply


def run_agent(cfg: AgentConfig, store: Store | None = None) -> None:
    # kill -USR1 writes every thread's stack to the log: for a hung agent.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    agent = Agent(cfg)
    agent.start()
    if store is not None:
        from uvxlan.controller import Controller

        agent.controller = Controller(agent, store)
    try:
        uvloop.run(agent.run())
    finally:
        agent.close()
        log.info("stopped; endpoints removed")
