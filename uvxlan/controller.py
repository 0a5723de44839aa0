"""The agent's control plane: keep the datapath in step with the store.

    store ──list──▶ model (key -> value) ──desired()──▶ Desired
      │                 ▲                                 │ apply(): diff
      └─watch(rev+1)────┘                                 ▼ against Applied
                                                   NodePort: datapath + TAPs

The agent registers its host under a lease, lists everything under
/uvxlan/ at one revision, and watches from the next one.  Every change
updates the model; ``desired()`` turns the model into what this host's
datapath should hold, and ``apply()`` makes the smallest change that gets
there — removals first, so a MAC or IP that moved is never briefly at two
places (the stale-entry bug of moby#35401).

- networks → VNIs (with ARP suppression on, admission and learning as
  the network's record says);
- live hosts other than this one → the admitted VTEPs of every network;
- endpoints of this host → TAPs in their netns, status written back;
- endpoints of other live hosts → static FDB entries (MAC → VTEP), flood
  list membership of their VTEP, and ARP table entries;
- a host whose lease ended (its agent died) takes all of that with it;
- a record the checks refuse (``uvxlan.records``: hostile or broken) is
  not acted on: logged once per change, kept in ``refused`` (the control
  socket's ``refused``), an error status for an endpoint of ours.

A broken watch (compaction, store restart) means a fresh list; a list
every ``resync`` seconds repairs drift.  While the store is unreachable the
datapath keeps its last state and the agent retries with backoff.  A store
that refuses our credentials (StoreDenied) ends the agent before it first
registers; after that, it is logged as an error and retried every
BACKOFF_MAX seconds while forwarding goes on.

The controller changes the host only through ``NodePort``, the handful of
operations reconcile needs: ``uvxlan.node.Node`` implements it on the C
datapath, the unit tests with an in-memory fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Protocol

from uvxlan import cluster
from uvxlan._version import __version__
from uvxlan.cluster import EndpointRecord, EndpointStatus, HostRecord, shown
from uvxlan.config import EndpointConfig, HostConfig
from uvxlan.errors import (
    LeaseExpired,
    NativeError,
    StoreCompacted,
    StoreDenied,
    StoreError,
    StoreUnavailable,
    UvxlanError,
)
from uvxlan.records import Here, Screened, screen, shapes_datapath
from uvxlan.state import AgentState
from uvxlan.store import Event, Store

log = logging.getLogger("uvxlan.controller")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0

Fdb = tuple[int, str, str, int]        # vni, mac, VTEP ip, VTEP port
Flood = tuple[int, str, int]           # vni, VTEP ip, VTEP port
Arp = tuple[int, str, str]             # vni, ip, mac
Peer = tuple[int, str]                 # vni, VTEP ip admitted


class NodePort(Protocol):
    """What reconcile asks of the host it runs on: exactly these.  A
    refusal raises NativeError, UvxlanError or OSError; the controller logs
    it and the next apply tries again."""

    @property
    def static_vnis(self) -> Set[int]:
        """VNIs of the config file's networks: never the store's to serve."""
        ...

    def add_network(self, name: str, vni: int) -> None:
        """A VNI, empty, for network name."""

    def remove_network(self, vni: int) -> None:
        """The VNI and what it holds (its endpoints are detached first)."""

    def rename_network(self, vni: int, name: str) -> None:
        """The VNI now serves another network of that name."""

    def set_arp(self, vni: int, mode: str) -> None:
        """ARP suppression of the VNI: answer, answer-only or off."""

    def set_admission(self, vni: int, admit: str, learning: bool) -> None:
        """Who may send into the VNI ("members" or "any"), and whether it
        learns source MACs."""

    def admit_peer(self, vni: int, ip: str) -> None:
        """VTEP ip is a member of the VNI: its datagrams are accepted."""

    def forget_peer(self, vni: int, ip: str) -> None:
        """VTEP ip is no longer a member of the VNI."""

    def add_remote(self, vni: int, ip: str, port: int) -> None:
        """VTEP ip:port joins the VNI's flood list."""

    def del_remote(self, vni: int, ip: str, port: int) -> None:
        """VTEP ip:port leaves the VNI's flood list."""

    def fdb_add(self, vni: int, mac: str, remote: str, remote_port: int) -> None:
        """A static FDB entry: mac is behind VTEP remote:remote_port."""

    def fdb_del(self, vni: int, mac: str) -> None:
        """The FDB entry of mac in the VNI goes."""

    def arp_add(self, vni: int, ip: str, mac: str) -> None:
        """ARP suppression answers ip with mac in the VNI."""

    def arp_del(self, vni: int, ip: str) -> None:
        """ARP suppression forgets ip in the VNI."""

    def attach(self, epc: EndpointConfig, vni: int, mtu: int) -> None:
        """A container's interface (TAP) in the VNI; its MAC pinned to it."""

    def detach(self, epc: EndpointConfig) -> None:
        """Remove the interface attach(epc, ...) made (the same object)."""


@dataclass
class Desired:
    vnis: dict[int, str] = field(default_factory=dict)           # vni -> network
    local: dict[str, EndpointRecord] = field(default_factory=dict)   # key -> record
    mtu: dict[str, int] = field(default_factory=dict)            # network -> MTU
    fdb: set[Fdb] = field(default_factory=set)
    flood: set[Flood] = field(default_factory=set)
    arp: set[Arp] = field(default_factory=set)
    peers: set[Peer] = field(default_factory=set)
    admission: dict[int, tuple[str, bool]] = field(default_factory=dict)   # vni -> admit, learning


def desired_state(screened: Screened, me: str) -> Desired:
    """What host ``me`` should hold, from the store's records that
    ``records.screen`` accepted (the refused ones are logged there and
    listed in Controller.refused: one bad key never stops a host)."""
    hosts = screened.hosts
    networks = screened.networks
    endpoints = list(screened.endpoints.items())
    d = Desired()
    for n in networks.values():
        d.vnis[n.vni] = n.name
        d.mtu[n.name] = n.mtu
        # Members speak: every live host but this one, in every network.
        d.admission[n.vni] = (n.admit, n.learning)
        d.peers |= {(n.vni, h.underlay) for h in hosts.values() if h.name != me}
    for key, ep in endpoints:
        net = networks.get(ep.network)
        if net is None:
            continue
        if ep.host == me:
            d.local[key] = ep
        elif ep.host in hosts:
            # Only live hosts: a host whose lease ended is gone, and so
            # are the paths to its endpoints.
            h = hosts[ep.host]
            d.fdb.add((net.vni, ep.mac, h.underlay, h.port))
            d.flood.add((net.vni, h.underlay, h.port))
        else:
            continue
        d.arp.add((net.vni, str(ep.address.ip), ep.mac))
    return d


@dataclass
class Applied:
    vnis: dict[int, str] = field(default_factory=dict)
    local: dict[str, tuple[EndpointRecord, EndpointConfig]] = field(default_factory=dict)
    failed: dict[str, EndpointRecord] = field(default_factory=dict)
    fdb: set[Fdb] = field(default_factory=set)
    flood: set[Flood] = field(default_factory=set)
    arp: set[Arp] = field(default_factory=set)
    peers: set[Peer] = field(default_factory=set)
    admission: dict[int, tuple[str, bool]] = field(default_factory=dict)


class Controller:
    def __init__(self, node: NodePort, h: HostConfig, store: Store,
                 state: AgentState | None = None) -> None:
        """node: where reconcile applies its changes; h: this host (name,
        underlay address and port, lease TTL, resync period, ARP mode);
        state: where the lease is kept for the next agent of this name."""
        self.node = node
        self.state = state if state is not None else AgentState(None)
        self.store = store
        self.me = h.name
        self.record = HostRecord(name=h.name, underlay=h.underlay, port=h.port, mtu=h.mtu,
                                 version=__version__, started=time.time())
        self.ttl = h.lease_ttl
        self.resync = h.resync
        self.arp_mode = h.arp_suppression
        self.model: dict[str, bytes] = {}
        self.created: dict[str, int] = {}     # key -> create revision: who claimed first
        # Records the checks refuse (key -> why), for the control socket;
        # and what was logged of each, so each is logged once per change.
        self.refused: dict[str, str] = {}
        self._told: dict[str, tuple[bytes, str]] = {}
        self._refused_here: set[str] = set()
        self.applied = Applied()
        self.lease = 0
        self.synced = asyncio.Event()       # set after the first full apply
        # Our endpoints' statuses as they should be in the store, and the
        # keys still to write there (absent from statuses: delete).
        self.statuses: dict[str, EndpointStatus] = {}
        self._status_todo: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._registered = asyncio.Event()

    def fdb_keys(self) -> set[tuple[int, str]]:
        """(VNI, MAC) of every FDB entry this controller put there."""
        return {(vni, mac) for vni, mac, _, _ in self.applied.fdb}

    # Tasks -----------------------------------------------------------------

    async def run(self) -> None:
        """Registration and the sync loop, until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._keep_registered())
                tg.create_task(self._sync_forever())
        except BaseExceptionGroup as group:
            # One task's failure ends both: raise it as itself, so the
            # agent ends with its one line rather than a group's.
            raise group.exceptions[0] from None

    async def close(self, *, leave: bool = False) -> None:
        """On a stop, the lease stays: the next agent of this name keeps it
        alive (state file) and the other hosts never see the host go.  On a
        leave: revoke it, so other hosts drop our entries now, and remove
        our endpoints."""
        if leave and self.lease:
            with contextlib.suppress(StoreError, OSError):
                await asyncio.wait_for(self.store.lease_revoke(self.lease), 3)
        with contextlib.suppress(StoreError, OSError):
            await self.store.close()
        if leave:
            for _, epc in self.applied.local.values():
                with contextlib.suppress(UvxlanError, OSError):
                    self.node.detach(epc)
        self.applied.local.clear()

    async def endpoint_health(self, epc: EndpointConfig, error: str | None) -> None:
        """An endpoint of ours was lost (error: why; its netns went away)
        or made again (None): its status says so."""
        key = next((k for k, (_, e) in self.applied.local.items() if e is epc), None)
        if key is None:
            return
        rec = self.applied.local[key][0]
        self._set_status(key, EndpointStatus(state="error" if error else "ready", error=error or "",
                                             mac=rec.mac, ip=rec.ip, at=time.time()))
        await self._flush_status()

    async def _keep_registered(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                if not self.lease:
                    await self._register()
                    delay = BACKOFF_FIRST
                await asyncio.sleep(self.ttl / 3)
                await self.store.lease_keepalive(self.lease)
                await self._reclaim_host_key()
                await self._flush_status()
            except LeaseExpired:
                # Kept away longer than the TTL: our keys are gone.  Take
                # a new lease and write them again.
                log.warning("lease expired; registering again")
                self.lease = 0
            except StoreDenied as exc:
                # Credentials refused: at start the agent ends with it;
                # later it keeps forwarding and tries again slowly (the
                # store's operator may mend the user or its role).
                if not self._registered.is_set():
                    raise
                log.error("store refused us (%s); forwarding goes on, retry in %.0f s",
                          exc, BACKOFF_MAX)
                await asyncio.sleep(BACKOFF_MAX)
            except StoreUnavailable as exc:
                log.warning("store unreachable (%s); forwarding goes on, retry in %.1f s",
                            exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _register(self) -> None:
        # The lease the previous agent of this name held, if still alive:
        # our keys never went, and the other hosts saw nothing.
        lease, kept = self.state.lease, True
        try:
            if lease:
                await self.store.lease_keepalive(lease)
        except LeaseExpired:
            lease = 0
        if not lease:
            lease, kept = await self.store.lease_grant(self.ttl), False
        # The lease is ours only once the host key is written under it: a
        # failed put leaves self.lease 0, so the next round registers again.
        try:
            await self.store.put(cluster.host_key(self.me), cluster.encode(self.record),
                                 lease=lease)
        except BaseException:
            if not kept:
                with contextlib.suppress(StoreError, OSError):
                    await self.store.lease_revoke(lease)
            raise
        self.lease = lease
        self.state.lease = lease
        self.state.save()
        # Statuses live under the lease too: write them all again.
        self._status_todo |= set(self.statuses)
        await self._flush_status()
        self._registered.set()
        log.info("registered host %s (%s:%d) with a %.0f s lease%s", self.me,
                 self.record.underlay, self.record.port, self.ttl,
                 " (the previous agent's, still alive)" if kept else "")

    async def _reclaim_host_key(self) -> None:
        """Our host key holds our record, under our lease: a writer who
        overwrote it (another address, or no lease: a key that would
        outlive us) is undone at the next keepalive."""
        key, mine = cluster.host_key(self.me), cluster.encode(self.record)
        if self.synced.is_set() and self.model.get(key) != mine:
            log.warning("store key %s: not this agent's record; writing it again", key)
            await self.store.put(key, mine, lease=self.lease)
            self.model[key] = mine

    async def _sync_forever(self) -> None:
        await self._registered.wait()
        delay = BACKOFF_FIRST
        while True:
            try:
                rev = await self.full_sync()
                self.synced.set()
                delay = BACKOFF_FIRST
                await self._watch(rev + 1)
            except StoreCompacted:
                log.info("watch history compacted; listing again")
            except StoreDenied as exc:
                log.error("store refused us (%s); forwarding goes on with the last known "
                          "state, retry in %.0f s", exc, BACKOFF_MAX)
                await asyncio.sleep(BACKOFF_MAX)
            except StoreUnavailable as exc:
                log.warning("store unreachable (%s); forwarding goes on with the last "
                            "known state, retry in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def full_sync(self) -> int:
        """List the store, apply all of it; the revision listed."""
        kvs, rev = await self.store.list(cluster.ROOT)
        self.model = {kv.key: kv.value for kv in kvs if shapes_datapath(kv.key)}
        self.created = {kv.key: kv.create_revision for kv in kvs if kv.key in self.model}
        # A full list retries endpoints that failed (the netns may exist by
        # now): that is part of repairing drift.
        self.applied.failed.clear()
        await self.apply()
        return rev

    async def on_event(self, ev: Event) -> bool:
        """One change from the watch, applied if it changes what the
        datapath should hold: whether it did."""
        # Statuses, address reservations and a network key put again
        # unchanged (every attach does that) cannot change what the
        # datapath should hold: no reconcile for them.
        if not shapes_datapath(ev.key):
            return False
        if ev.type == "put":
            if self.model.get(ev.key) == ev.value:
                return False
            self.created.setdefault(ev.key, ev.revision)   # a new key: created now
            self.model[ev.key] = ev.value
        elif self.model.pop(ev.key, None) is None:
            return False
        else:
            self.created.pop(ev.key, None)
        await self.apply()
        return True

    async def _watch(self, start: int) -> None:
        """Apply events until the resync period ends (then the caller
        lists again, which repairs any drift)."""
        deadline = time.monotonic() + self.resync
        events = self.store.watch(cluster.ROOT, start_revision=start)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    # Not wait_for(): on Python 3.11 it swallows a cancel
                    # that arrives as the event does, and the agent would
                    # then never stop.
                    async with asyncio.timeout(left):
                        ev = await anext(events)
                except TimeoutError:
                    return
                await self.on_event(ev)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    # Reconcile -------------------------------------------------------------

    async def apply(self) -> None:
        """Make the datapath hold desired_state(model): removals first."""
        screened = self._screen()
        want = desired_state(screened, self.me)
        have = self.applied
        node = self.node

        for vni, ip, _mac in have.arp - want.arp:
            self._try(node.arp_del, vni, ip)
        have.arp &= want.arp
        for vni, mac, _ip, _port in have.fdb - want.fdb:
            self._try(node.fdb_del, vni, mac)
        have.fdb &= want.fdb
        for vni, ip, port in have.flood - want.flood:
            self._try(node.del_remote, vni, ip, port)
        have.flood &= want.flood
        for vni, ip in have.peers - want.peers:
            self._try(node.forget_peer, vni, ip)
        have.peers &= want.peers
        for key in list(have.local):
            rec, epc = have.local[key]
            if want.local.get(key) != rec or want.vnis.get(self._vni_of(rec, have)) is None:
                log.info("endpoint %s/%s: removing", rec.network, rec.name)
                self._try(node.detach, epc)
                del have.local[key]
                self._set_status(key, None)
        for key in [k for k, r in have.failed.items() if want.local.get(k) != r]:
            del have.failed[key]
            self._set_status(key, None)
        for vni in [v for v in have.vnis if v not in want.vnis]:
            if vni not in node.static_vnis:
                self._try(node.remove_network, vni)
            del have.vnis[vni]
            have.admission.pop(vni, None)

        for vni, name in want.vnis.items():
            if have.vnis.get(vni) not in (None, name):
                # The VNI now belongs to another network (removed and made
                # anew between two lists): same datapath VNI, new name.
                have.vnis[vni] = name
                node.rename_network(vni, name)
            if vni in have.vnis:
                continue
            if not self._try(node.add_network, name, vni):
                continue
            self._try(node.set_arp, vni, self.arp_mode)
            have.vnis[vni] = name
        for key, rec in want.local.items():
            if key in have.local or have.failed.get(key) == rec:
                continue
            if self._vni_of(rec, have) < 0:
                continue                       # its network is not served (yet)
            self._realise(key, rec, want, have)
            # Creating TAPs takes netlink round trips: let the keepalive
            # run between them, so a long list cannot outlast the lease.
            await asyncio.sleep(0)
        for f in want.fdb - have.fdb:
            vni, mac, ip, port = f
            if vni in have.vnis and self._try(node.fdb_add, vni, mac, ip, port):
                have.fdb.add(f)
        for fl in want.flood - have.flood:
            vni, ip, port = fl
            if vni in have.vnis and self._try(node.add_remote, vni, ip, port):
                have.flood.add(fl)
        for a in want.arp - have.arp:
            vni, ip, mac = a
            if vni in have.vnis and self._try(node.arp_add, vni, ip, mac):
                have.arp.add(a)
        for vni, mode in want.admission.items():
            if (vni in have.vnis and have.admission.get(vni) != mode
                    and self._try(node.set_admission, vni, *mode)):
                have.admission[vni] = mode
        for pe in want.peers - have.peers:
            if pe[0] in have.vnis and self._try(node.admit_peer, *pe):
                have.peers.add(pe)
        self._report_refused(screened, want)
        await self._flush_status()

    def _screen(self) -> Screened:
        """The model's records this host may act on (``uvxlan.records``);
        each refusal logged once per change of its key's value or reason,
        never fatal."""
        # Two owners for one VNI would fight over its flood list and FDB:
        # the config file's network wins (Here.static_vnis).
        here = Here(self.me, self.record.underlay, self.record.mtu,
                    frozenset(self.node.static_vnis))
        screened = screen(self.model, self.created, here)
        for key, why in screened.refused.items():
            told = (self.model[key], why)
            if self._told.get(key) != told:
                self._told[key] = told
                log.warning("store key %s: refused: %s", shown(key), why)
        for key in [k for k in self._told if k not in screened.refused]:
            del self._told[key]
            if key in self.model:
                log.info("store key %s: accepted", shown(key))
        self.refused = dict(screened.refused)
        return screened

    def _report_refused(self, screened: Screened, want: Desired) -> None:
        """Our endpoints the checks refuse get an error status that says
        why (``uvxlan attach`` fails at once, ``endpoint ls`` shows it)."""
        for key, rec in screened.refused_here.items():
            error = f"refused: {screened.refused[key]}"
            st = self.statuses.get(key)
            if st is None or st.error != error or (st.mac, st.ip) != (rec.mac, rec.ip):
                self._set_status(key, EndpointStatus(state="error", error=error, mac=rec.mac,
                                                     ip=rec.ip, at=time.time()))
        for key in self._refused_here - set(screened.refused_here):
            if key not in want.local:
                self._set_status(key, None)
        self._refused_here = set(screened.refused_here)

    def _vni_of(self, rec: EndpointRecord, have: Applied) -> int:
        return next((v for v, n in have.vnis.items() if n == rec.network), -1)

    def _realise(self, key: str, rec: EndpointRecord, want: Desired, have: Applied) -> None:
        vni = self._vni_of(rec, have)
        epc = EndpointConfig(network=rec.network, netns=rec.netns, address=rec.address,
                             mac=rec.mac, ifname=rec.ifname)
        try:
            # A learned or store entry for this MAC (it lived elsewhere
            # before) gives way to the local port.
            self.node.attach(epc, vni, want.mtu[rec.network])
        except Exception as exc:  # noqa: BLE001 - reported in its status, never fatal
            log.error("endpoint %s/%s in netns %s: %s", rec.network, rec.name, rec.netns, exc)
            have.failed[key] = rec
            self._set_status(key, EndpointStatus(state="error", error=str(exc),
                                                 mac=rec.mac, ip=rec.ip, at=time.time()))
            return
        log.info("endpoint %s/%s: %s %s in netns %s", rec.network, rec.name, rec.ip,
                 rec.mac, rec.netns)
        have.local[key] = (rec, epc)
        self._set_status(key, EndpointStatus(state="ready", mac=rec.mac, ip=rec.ip,
                                             at=time.time()))

    def _set_status(self, key: str, status: EndpointStatus | None) -> None:
        if status is None:
            self.statuses.pop(key, None)
        else:
            self.statuses[key] = status
        self._status_todo.add(key)

    async def _flush_status(self) -> None:
        """Write (or delete) the statuses of our endpoints; what the store
        refuses now (StoreUnavailable) stays queued for the next try.  The
        keepalive and the sync task both flush: one at a time, and a key
        leaves the queue only if what was written is still what is wanted."""
        async with self._flush_lock:
            while self.lease and self._status_todo:
                key = next(iter(self._status_todo))
                skey = cluster.status_key(self.me, *_net_name(key))
                status = self.statuses.get(key)
                try:
                    if status is None:
                        await self.store.delete(skey)
                    else:
                        await self.store.put(skey, cluster.encode(status), lease=self.lease)
                except LeaseExpired:
                    # The keepalive task registers again, and that queues
                    # every status anew.
                    return
                if self.statuses.get(key) is status:
                    self._status_todo.discard(key)

    @staticmethod
    def _try(fn: Callable[..., object], *args: object, **kw: object) -> bool:
        """One datapath change; a refusal is logged, not fatal: the next
        apply tries again what did not take."""
        try:
            fn(*args, **kw)
        except (NativeError, UvxlanError, OSError) as exc:
            log.warning("%s", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug, but not one to stop forwarding for
            log.exception("unexpected error from %s: %s", getattr(fn, "__name__", fn), exc)
            return False
        return True


def _net_name(key: str) -> tuple[str, str]:
    """(network, name) of an endpoint key."""
    network, _, name = key[len(cluster.ENDPOINTS):].partition("/")
    return network, name

