"""The agent's process: one uvloop event loop around the node.

``run_agent`` builds the node (``uvxlan.node``: datapath, sockets,
endpoints) and, with a cluster store, its controller; then the loop runs
until SIGTERM or SIGINT.  The packet path runs on the datapath's two C
threads, or (``threads = false``) on this loop, one call into C per
readiness event.  Besides, the loop runs a timer that ages the FDB, the
controller's tasks, and a unix socket that answers ``stats``, ``fdb`` and
``status`` queries as JSON (and ``leave``, ``fault`` and ``policy`` changes,
for root alone: SO_PEERCRED; ``uvxlan.control`` is its client; ``capture``, a
stream of frames (``uvxlan.capture_agent``), and ``hook`` sessions
(``uvxlan.hookserver``), root's too), and a
timer that finds endpoints whose netns went away (and makes them again),
and, if asked (``[host] metrics``), Prometheus metrics (``uvxlan.metrics``).
Under systemd (``Type=notify``) it says READY=1 once the control socket
answers and STOPPING=1 as it stops (``uvxlan.notify``).
On a stop (SIGTERM, SIGINT): the packet path stops and the sockets close;
the TAPs and the store lease stay for the next agent of the name, which
adopts them (NAME.state beside the socket).  On a leave (``uvxlan leave``:
the control socket's ``leave``): the lease is revoked and the TAPs are
removed too.

The control socket is for root (mode 0600) or one group (0660,
``control_group``), in a directory only root can change; before it makes
anything, an agent takes ``NAME.lock`` there, so a second agent of the
same name stops with one line instead of taking the socket over.  Every
connection is bounded: one request line of ``REQUEST_MAX`` bytes within
``IDLE_S``, the reply taken within ``SEND_S``, ``CONNECTIONS_MAX`` at once.
"""

from __future__ import annotations

import asyncio
import faulthandler
import fcntl
import glob
import grp
import json
import logging
import os
import re
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import uvloop

from uvxlan import capture_agent, fault, gbp, underlay
from uvxlan._version import __version__
from uvxlan.collect import GONE_AT_ONCE, Collector, gone, not_ready
from uvxlan.config import AgentConfig, HostConfig
from uvxlan.controller import Controller
from uvxlan.docker import AgentTaps, Plugin, PluginServer, bind_plugin
from uvxlan.errors import ConfigError, UvxlanError
from uvxlan.hookserver import HookServer
from uvxlan.metrics import AgentFacts, MetricsServer, bind_metrics, exposition, families
from uvxlan.node import Node
from uvxlan.notify import Notifier
from uvxlan.state import AgentState
from uvxlan.store import Store
from uvxlan.store.contact import ContactStore

log = logging.getLogger("uvxlan.daemon")

AGEING_SWEEP_S = 10.0   # as Linux's vxlan: sweep every 10 s
ENDPOINT_CHECK_S = 1.0  # how often lost endpoints are looked for (one ioctl each)
STATUS_CHECK_S = 1.0    # how often the store's reachability is told to systemd

# Control socket limits.  A request is one short JSON line; the replies
# are large (a full FDB), so a slow reader gets time, not forever.
REQUEST_MAX = 4096      # bytes in a request line, newline included
IDLE_S = 5.0            # for a client to send its request line
SEND_S = 10.0           # for a client to take the whole reply
CONNECTIONS_MAX = 16    # at once; more are refused at once with an error line
# The event loop thread's nice value (with datapath threads): CFS gives a
# nice-0 thread about 10 times its CPU when both want it.
LOOP_NICE = 10
# Requests that change the agent rather than read it: only for root (or
# the agent's own user), whoever else the socket's mode lets connect.
MUTATING = frozenset({"leave", "fault", "hook"})


def _changes_policy(req: dict[str, Any]) -> bool:
    """A "policy" request that changes the policy (not "show")."""
    return req.get("cmd") == "policy" and req.get("op", "show") != "show"


PEERCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid (socket(7))


class Daemon:
    """The event loop's work: node, controller and control socket."""

    def __init__(self, node: Node, claim: ControlClaim,
                 controller: Controller | None = None, *,
                 metrics: socket.socket | None = None,
                 notifier: Notifier | None = None,
                 contact: ContactStore | None = None,
                 docker: PluginServer | None = None) -> None:
        self.node = node
        self.cfg = node.cfg
        self.claim = claim
        self.controller = controller
        # With a store: endpoints whose netns is gone for good are deleted.
        self.collector = (Collector(self.cfg.host.collect_after, why_gone=self._why_gone)
                          if controller is not None else None)
        self.notifier = notifier if notifier is not None else Notifier("")
        self.metrics = None if metrics is None else MetricsServer(metrics, self.metrics_text)
        self.contact = contact          # whether the controller's store answers
        self.docker = docker            # Docker's network and IPAM driver (uvxlan.docker)
        self.ready = False              # forwarding and answering (READY=1 sent)
        self._control: asyncio.AbstractServer | None = None
        # Open connections: ended on stop, so no handler is left cancelled
        # (Python 3.11's stream callback logs a cancelled one as an error).
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        # Connections ended by a limit, by limit: shown by "status".
        self.refused = {"busy": 0, "too_long": 0, "idle": 0, "slow_reader": 0}
        self.leaving = False            # a leave was asked for: remove everything
        self.hooks = HookServer(node)   # Python hooks: sessions on the control socket
        self._stop = asyncio.Event()

    async def run(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        stop = self._stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        if self.cfg.host.cpus:
            # Before the threads start: they inherit the mask.
            os.sched_setaffinity(0, self.cfg.host.cpus)
        threads = self.cfg.host.threads
        tasks: list[asyncio.Task[None]] = []
        control_plane = None
        # On two C threads, the loop only serves the control socket, the
        # ageing timer and signals; without them, it also reads the fds.
        node.serve(loop)
        try:
            if threads:
                # The packet path first: this thread (control socket,
                # controller, ageing) yields the CPU to the datapath threads,
                # started above at the old priority, whenever they want it;
                # a flood of queries then costs the datapath only the CPU
                # left over.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOOP_NICE)
            sweep = min(AGEING_SWEEP_S, max(0.2, self.cfg.host.ageing / 10))
            tasks.append(asyncio.create_task(self._age(sweep)))
            tasks.append(asyncio.create_task(self._check_endpoints()))
            await self._serve_control()
            if self.metrics is not None:
                await self.metrics.start()
            if self.docker is not None:
                await self.docker.start()
            if self.controller is not None:
                control_plane = asyncio.create_task(self.controller.run())
            log.info(
                "ready: %s:%d, %d network(s), %d endpoint(s), offload %s (%s), %s",
                self.cfg.host.underlay, self.cfg.host.port,
                len(self.cfg.networks), len(node.endpoints),
                self.cfg.host.offload, node.features.describe(),
                "2 datapath threads" if threads else "datapath on the event loop",
            )
            # The same moment for systemd (Type=notify): units ordered after
            # this one start once `uvxlan stats` would answer.
            self.ready = True
            self.notifier.ready(self._summary())
            if self.controller is not None:
                tasks.append(asyncio.create_task(self._tell_store(self.controller)))
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
            self.notifier.stopping("stopping: endpoints "
                                   + ("removed (leave)" if self.leaving else "kept"))
            for task in tasks:
                task.cancel()
                # Each loop survives its own failures; whatever still ends
                # one must not skip the cleanup below.
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # noqa: BLE001 - logged; the stop goes on
                    log.exception("background task %s failed", task.get_coro())
            if control_plane is not None and self.controller is not None:
                # Whether it failed or is still running, the cleanup below
                # must happen: a failure was already raised from the try.
                if not control_plane.done():
                    control_plane.cancel()
                with suppress(BaseException):
                    await control_plane
                await self.controller.close(leave=self.leaving)
            if self.docker is not None:
                await self.docker.close()
            node.unserve()
            if self.metrics is not None:
                await self.metrics.close()
            await self._close_control()

    def _why_gone(self, netns: str) -> str | None:
        # A process' netns whose pid names another process now: gone,
        # though the path opens (uvxlan.collect.gone sees only the path).
        return GONE_AT_ONCE if self.node.reused_process_netns(netns) else gone(netns)

    def _summary(self) -> str:
        """One line for `systemctl status`."""
        return (f"{self.cfg.host.name} on {self.cfg.host.underlay}:{self.cfg.host.port}: "
                f"{len(self.node.networks)} network(s), {len(self.node.endpoints)} endpoint(s)")

    async def _tell_store(self, controller: Controller) -> None:
        """STATUS= for `systemctl status`: synced with the store, and
        whenever the store stops or starts answering."""
        await controller.synced.wait()
        told: list[bool] = []

        def tell() -> None:
            connected = self.contact is None or self.contact.connected is not False
            if told != [connected]:
                told[:] = [connected]
                self.notifier.status(f"{self._summary()}; " + (
                    "synced with the store" if connected else
                    "store unreachable since " + time.strftime("%H:%M:%S")
                    + "; forwarding goes on"))

        await _every(STATUS_CHECK_S, "telling systemd the store's state", tell)

    def metrics_text(self) -> str:
        """GET /metrics: what `uvxlan stats` shows, and the agent's state."""
        c = self.controller
        facts = AgentFacts(version=__version__, ready=self.ready, store=c is not None,
                           store_synced=c is not None and c.synced.is_set(),
                           store_registered=c is not None and c.lease != 0,
                           store_connected=bool(self.contact and self.contact.connected))
        return exposition(families(self.node.stats(), facts))

    async def _check_endpoints(self) -> None:
        """Lost endpoints reported (status error), made again when their
        netns is back; once the store's state is applied (at once without
        a store), the node settles (Node.settle: adopted containers ask
        for their neighbours again, leftover TAPs go)."""
        if self.controller is not None:
            await self.controller.synced.wait()
        settled = False

        async def check() -> None:
            nonlocal settled
            if not settled:
                self.node.settle(None if self.controller is None
                                 else self.controller.wanted_endpoints())
                settled = True
            for epc, error in self.node.check_endpoints():
                if self.controller is not None:
                    await self.controller.endpoint_health(epc, error)
            if self.collector is not None and self.controller is not None:
                c = self.controller
                await self.collector.collect(c.store, not_ready(c.want.local, c.statuses))

        await _every(ENDPOINT_CHECK_S, "checking endpoints", check, first=True)

    async def _age(self, interval: float) -> None:
        await _every(interval, "ageing the FDB", self.node.age)

    # Control socket ------------------------------------------------------

    async def _serve_control(self) -> None:
        sock = bind_control(self.claim)
        self._control = await asyncio.start_unix_server(
            self._handle, sock=sock, limit=REQUEST_MAX)

    async def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            for w in self._clients.values():
                w.transport.abort()
            if self._clients:
                await asyncio.wait(list(self._clients), timeout=1.0)
            with suppress(FileNotFoundError):
                os.unlink(self.claim.socket)

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= CONNECTIONS_MAX:
            # Refused before reading: a flood costs one accept and one
            # small write each, and no task that waits.
            self.refused["busy"] += 1
            writer.write(_reply({"error": f"busy: {CONNECTIONS_MAX} connections at once;"
                                          " try again"}))
            writer.close()
            return
        me = asyncio.current_task()
        assert me is not None
        self._clients[me] = writer
        try:
            reply = await self._answer(reader, _peer_uid(writer), writer)
            if reply is None:
                return                   # streamed (capture) or a hook session: done
            writer.write(_reply(reply))
            await asyncio.wait_for(writer.drain(), SEND_S)
        except TimeoutError:
            self.refused["slow_reader"] += 1
            writer.transport.abort()     # drops the unsent rest of the reply
        except ConnectionError:
            pass                         # the client went away
        finally:
            del self._clients[me]
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, uid: int | None,
                      writer: asyncio.StreamWriter) -> dict[str, Any] | None:
        """The reply to the connection's one request line (from a peer of
        this uid, None if unknown), or the error that ends it; None when
        the request streamed its answer itself (capture)."""
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_S)
        except TimeoutError:
            self.refused["idle"] += 1
            return {"error": f"no request within {IDLE_S:g} s"}
        except asyncio.LimitOverrunError:
            self.refused["too_long"] += 1
            return {"error": f"request longer than {REQUEST_MAX} bytes"}
        except asyncio.IncompleteReadError as exc:   # closed without a newline
            line = exc.partial
        try:
            request = json.loads(line or b"{}")
            cmd = request.get("cmd", "")
            if (cmd in MUTATING or _changes_policy(request)) and uid not in (0, os.geteuid()):
                # control_group is for watching (stats, fdb, status); a
                # change (leave, fault, policy, a hook) is root's, or the agent's own user's.
                return {"error": f"{cmd}: permission denied; run as root"}
            if cmd == "hook":
                # The connection becomes a hook session (uvxlan.hookserver).
                await self.hooks.session(request, reader, writer)
                return None
            if cmd != "capture":
                return self.query(cmd, request)
        except UvxlanError as exc:   # a query the datapath (or a check: ConfigError) refused
            return {"error": str(exc)}
        except (ValueError, AttributeError, TypeError, RecursionError):
            # Not JSON, not an object, a cmd that is not a string, too deep.
            return {"error": "bad request"}
        # Frames until the client goes (uvxlan.capture_agent; root's).
        await capture_agent.serve(self.node, request, uid, reader, writer)
        return None

    def query(self, cmd: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer to one control socket request (its other fields in
        request)."""
        if cmd == "status":
            st: dict[str, Any] = {
                "ready": True, "name": self.cfg.host.name, "pid": os.getpid(),
                "offload": self.cfg.host.offload, "features": vars(self.node.features),
                "control_refused": dict(self.refused)}
            if self.metrics is not None:
                st["metrics"] = self.cfg.host.metrics
                st["metrics_refused"] = dict(self.metrics.refused)
            if self.docker is not None:
                st["docker_plugin"] = self.cfg.host.docker_plugin
                st["docker_refused"] = dict(self.docker.refused)
            if self.controller is not None:
                st["synced"] = self.controller.synced.is_set()
                st["lease"] = self.controller.lease
                st["refused"] = len(self.controller.refused)
            return st
        if cmd == "refused":
            # Store records this agent refuses to act on: key -> why.
            return {"refused": dict(self.controller.refused) if self.controller else {}}
        if cmd == "leave":
            # Reply first; the stop that follows removes everything.
            self.leaving = True
            asyncio.get_running_loop().call_soon(self._stop.set)
            return {"leaving": True, "name": self.cfg.host.name, "pid": os.getpid(),
                    "store": self.controller is not None}
        if cmd == "control":
            # The controller's sizes and work counters, cheap to ask often
            # (benchmarks/control_scale.py polls it for convergence).
            if self.controller is None:
                return {"error": "no store: this agent runs from its config file alone"}
            return {"synced": self.controller.synced.is_set(), **self.controller.counts()}
        if cmd == "stats":
            return self.node.stats()
        if cmd == "hooks":
            return self.hooks.status()
        if cmd == "fdb":
            from_store = self.controller.fdb_keys() if self.controller else set()
            return {"fdb": self.node.fdb(from_store)}
        if cmd in ("fault", "faults"):
            # Fault injection (uvxlan.fault): in the datapath's memory only.
            # Its refusals are ConfigErrors (ValueErrors): told as they are,
            # not as a bad request.
            try:
                return fault.answer(cmd, request or {}, self.node)
            except UvxlanError as exc:
                return {"error": str(exc)}
        if cmd == "policy":
            return gbp.answer(self.node, request or {}, store=self.controller is not None)
        return {"error": f"unknown command {cmd!r}"}


async def _every(interval: float, what: str,
                 step: Callable[[], Awaitable[None] | None], *, first: bool = False) -> None:
    """step every interval seconds (at once too, if first), for good: a
    step that fails (a bug) is logged once per episode and tried again,
    since forwarding must not stop for it and a task that died would end
    silently."""
    told = ""
    if not first:
        await asyncio.sleep(interval)
    while True:
        try:
            done = step()
            if done is not None:
                await done
        except Exception as exc:  # noqa: BLE001 - logged; the loop goes on
            if repr(exc) != told:
                told = repr(exc)
                log.exception("%s failed: %s; trying again every %g s", what, exc, interval)
        else:
            if told:
                log.info("%s works again", what)
            told = ""
        await asyncio.sleep(interval)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process that connected (SO_PEERCRED: taken at its
    connect(), so not changed by what it does later), or None if unknown."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    except (AttributeError, OSError):
        return None
    return int(PEERCRED.unpack(creds)[1])


def _reply(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


# The control directory, the lock and the socket ----------------------------


@dataclass(frozen=True)
class ControlClaim:
    """An agent's hold on its name: the lock it keeps for its life, and
    where and for whom its socket is made."""

    socket: str         # DIR/NAME.sock, DIR with no symbolic link in it
    gid: int | None     # the group allowed to connect; None: root only
    lock_fd: int        # NAME.lock, flock'ed; closing it (or dying) frees the name

    def release(self) -> None:
        os.close(self.lock_fd)


def _may_change(st: os.stat_result) -> bool:
    """Whether a user other than root (and the agent's own) may change what
    this directory holds.  A sticky directory (/tmp) lets a user remove or
    rename only their own entries, which the next component's check catches."""
    others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return (st.st_uid not in (0, os.geteuid())
            or bool(others_write and not st.st_mode & stat.S_ISVTX))


def secure_dir(path: str) -> str:
    """The control directory, made (0755) if missing, and checked: neither
    it nor any directory on the way to it may be changed by another user,
    so nobody but root can plant a socket there or swap a symbolic link.
    Symbolic links on the way are followed as the kernel would (in
    directories already checked); returns the real path."""
    if not path.startswith("/"):
        raise ConfigError(f"control_dir {path!r}: must be an absolute path")
    todo = [c for c in path.split("/") if c not in ("", ".")]
    real, hops = "/", 0
    while True:
        st = os.lstat(real)
        if _may_change(st) or (not todo and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            raise ConfigError(
                f"control_dir {path}: {real} can be changed by other users (owner uid "
                f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): refused")
        if not todo:
            return real
        part = todo.pop(0)
        if part == "..":
            real = os.path.dirname(real)
            continue
        nxt = os.path.join(real, part)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            os.mkdir(nxt, 0o755)
            os.chmod(nxt, 0o755)   # whatever the umask: clients need to pass through
            st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:          # Linux's MAXSYMLINKS
                raise ConfigError(f"control_dir {path}: too many symbolic links")
            target = os.readlink(nxt)
            todo = [c for c in target.split("/") if c not in ("", ".")] + todo
            if target.startswith("/"):
                real = "/"
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"control_dir {path}: {nxt} is not a directory")
        real = nxt


def claim_control(host: HostConfig) -> ControlClaim:
    """Check the control directory and take the agent's name in it (a
    flock on NAME.lock, held until the agent exits: a SIGKILL frees it
    too).  A live agent of that name: one line with its pid."""
    gid = None
    if host.control_group:
        try:
            gid = grp.getgrnam(host.control_group).gr_gid
        except KeyError:
            raise ConfigError(f"control_group: no group {host.control_group!r} "
                              "on this host") from None
    try:
        where = secure_dir(host.control_dir)
        # O_NOFOLLOW: the directory is root's, but be plain about links.
        fd = os.open(f"{where}/{host.name}.lock",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"control_dir {host.control_dir}: "
                          f"{exc.strerror or exc}") from None
    sock = f"{where}/{host.name}.sock"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UvxlanError(f"agent {host.name!r} already runs (pid {pid}, "
                          f"control socket {sock}): refused") from None
    # The lock file stays after the agent: removing it would let two agents
    # lock two different files of the same name.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return ControlClaim(socket=sock, gid=gid, lock_fd=fd)


def bind_control(claim: ControlClaim) -> socket.socket:
    """The control socket, bound and not yet listening, at its final path
    with its final owner and mode: made under a private name (umask 0177:
    0600 from the start), given its group, then renamed over the stale
    socket of a dead agent, if any.  Nobody can connect before listen()."""
    tmp = f"{claim.socket}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # Left by an agent of this name that died between bind and rename
        # (the lock says none is alive).
        # Names may hold dots: match the pid part exactly, so another
        # agent's (say NAME.sock.x's) temporary socket is never taken.
        left = re.compile(re.escape(claim.socket) + r"\.\d+\.tmp")
        for old_tmp in glob.glob(f"{glob.escape(claim.socket)}.*.tmp"):
            if left.fullmatch(old_tmp):
                with suppress(FileNotFoundError):
                    os.unlink(old_tmp)
        old = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old)
        if claim.gid is not None:
            os.chown(tmp, -1, claim.gid)
            os.chmod(tmp, 0o660)
        os.rename(tmp, claim.socket)
    except OSError as exc:
        sock.close()
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise ConfigError(f"control socket {claim.socket}: {exc.strerror or exc}") from None
    return sock


def run_agent(cfg: AgentConfig, store: Store | None = None) -> None:
    # kill -USR1 writes every thread's stack to the log: for a hung agent.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # The name first: a second agent of a live name makes nothing.
    claim = claim_control(cfg.host)
    notifier = Notifier()
    metrics = None
    plugin_sock = None
    try:
        # The underlay MTU the networks are checked against: its interface's.
        cfg = underlay.settle_mtu(cfg)
        if cfg.host.docker_plugin:
            if store is None:
                raise ConfigError("docker_plugin needs a cluster store (--store): Docker's "
                                  "networks are the store's")
            plugin_sock = bind_plugin(cfg.host.docker_plugin)
        # Before anything is made: a port in use is one line, and no TAP.
        if cfg.host.metrics:
            metrics = bind_metrics(cfg.host.metrics)
            if cfg.host.metrics_beyond_loopback:
                log.warning("metrics on %s, beyond loopback (metrics_public): they show "
                            "this host's networks, containers and peers", cfg.host.metrics)
        notifier.status("starting")
        state = AgentState.load(claim.socket.removesuffix(".sock") + ".state")
        node = Node(cfg, state)
        node.start()
        contact = None if store is None else ContactStore(store)
        controller = None if contact is None else Controller(node, cfg.host, contact, state)
        docker = None
        if plugin_sock is not None and contact is not None:
            taps = AgentTaps(cfg.host.name, cfg.host.tap_queue,
                             lambda: node.features.tap_vnet_hdr)
            docker = PluginServer(plugin_sock, Plugin(contact, cfg.host.name, taps))
        daemon = Daemon(node, claim, controller, metrics=metrics, notifier=notifier,
                        contact=contact, docker=docker)
        try:
            uvloop.run(daemon.run())
        finally:
            node.close(leave=daemon.leaving)
            log.info("left: endpoints removed" if daemon.leaving
                     else "stopped; endpoints kept for the next agent")
    finally:
        if metrics is not None:
            metrics.close()
        if plugin_sock is not None:
            plugin_sock.close()
        notifier.close()
        claim.release()
