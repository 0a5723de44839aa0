"""The agent's control plane: keep the datapath in step with the store.

    store ──list──▶ model ──Screener──▶ accepted records ──▶ Desired + dirty
      │               ▲                                           │ apply(): the
      └─watch(rev+1)──┘                                           ▼ dirty entries
                                                   NodePort: datapath + TAPs

The agent registers its host under a lease, lists everything under
/uvxlan/ at one revision, and watches from the next one.  Every change
updates the model; ``records.Screener`` re-screens the records it can
affect, ``_rewant`` updates what this host's datapath should hold from
those, marking each entry whose wanting changed, and ``apply()`` makes
the smallest change that gets there, looking at those entries only — so
an event costs in proportion to the change, not to the cluster — and
removals first, so a MAC or IP that moved is never briefly at two places
(the stale-entry bug of moby#35401).

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

A broken watch (compaction, cancellation, store restart) means a fresh
list; a list every ``resync`` seconds repairs drift.  Whatever the store
fails with (unreachable, full, permission revoked, locked, corrupt), the
datapath keeps its last state, the agent retries with capped exponential
backoff and jitter (``Backoff``), and logs one line when the episode
starts and one when the store is back (``StoreHealth``); a lease that went
while the store was away is granted anew and our keys written again.  A
store that refuses our credentials (StoreDenied) ends the agent before it
first registers; after that, it is logged as an error and retried every
5-10 s (BACKOFF_MAX with jitter) while forwarding goes on.

The controller changes the host only through ``NodePort``, the handful of
operations reconcile needs: ``uvxlan.node.Node`` implements it on the C
datapath, the unit tests with an in-memory fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from uvxlan import cluster
from uvxlan._version import __version__
from uvxlan.cluster import EndpointRecord, EndpointStatus, HostRecord, NetworkRecord, shown
from uvxlan.config import EndpointConfig, HostConfig
from uvxlan.errors import (
    ClusterError,
    LeaseExpired,
    NativeError,
    RecordError,
    StoreCompacted,
    StoreDenied,
    StoreError,
    StoreUnavailable,
    UvxlanError,
)
from uvxlan.gbp import Policy
from uvxlan.records import Here, Screener, Touched, shapes_datapath
from uvxlan.state import AgentState
from uvxlan.store import KV, Event, Store

log = logging.getLogger("uvxlan.controller")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0

Fdb = tuple[int, str, str, int]        # vni, mac, VTEP ip, VTEP port
Flood = tuple[int, str, int]           # vni, VTEP ip, VTEP port
Arp = tuple[int, str, str]             # vni, ip, mac
Peer = tuple[int, str]                 # vni, VTEP ip admitted
T = TypeVar("T")


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

    def set_gbp(self, vni: int, on: bool, policy: Policy) -> None:
        """VXLAN-GBP in the VNI, and its policy between groups."""

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
    """What this host's datapath should hold, kept up to date from the
    records ``records.Screener`` accepts, one changed record at a time.
    The multisets count the records that want an entry (a flood-list entry
    is wanted by every endpoint behind that VTEP); admitted peers are every
    VNI here times every live host's VTEP but ours."""

    vnis: dict[int, str] = field(default_factory=dict)           # vni -> network
    vni_of: dict[str, int] = field(default_factory=dict)         # network -> vni
    local: dict[str, EndpointRecord] = field(default_factory=dict)   # key -> record
    mtu: dict[str, int] = field(default_factory=dict)            # network -> MTU
    fdb: Counter[Fdb] = field(default_factory=Counter)
    flood: Counter[Flood] = field(default_factory=Counter)
    arp: Counter[Arp] = field(default_factory=Counter)
    vteps: Counter[str] = field(default_factory=Counter)        # live hosts' underlays
    admission: dict[int, tuple[str, bool]] = field(default_factory=dict)   # vni -> admit, learning
    gbp: dict[int, tuple[bool, Policy]] = field(default_factory=dict)    # vni -> on, policy

    def wants_peer(self, pe: Peer) -> bool:
        return pe[0] in self.vnis and pe[1] in self.vteps


@dataclass
class Dirty:
    """What apply() must look at: entries whose wanting changed since the
    last apply, or that did not take then (retried at the next)."""

    vnis: set[int] = field(default_factory=set)
    local: set[str] = field(default_factory=set)
    fdb: set[Fdb] = field(default_factory=set)
    flood: set[Flood] = field(default_factory=set)
    arp: set[Arp] = field(default_factory=set)
    peers: set[Peer] = field(default_factory=set)
    admission: set[int] = field(default_factory=set)
    gbp: set[int] = field(default_factory=set)

    def shrink(self) -> None:
        """Copy each set into one sized for what it holds now.  A set
        emptied one discard at a time keeps the table of its largest size,
        and iterating it scans all of that table: after a full list filled
        them with the whole cluster, every apply would cost in proportion
        to the cluster.  A copy costs what one iteration does."""
        for name in ("vnis", "local", "fdb", "flood", "arp", "peers", "admission", "gbp"):
            setattr(self, name, set(getattr(self, name)))


# What one accepted endpoint wants: its local record, or its FDB and flood
# entries; and its ARP entry.
Wants = tuple[EndpointRecord | None, Fdb | None, Flood | None, Arp | None]


@dataclass
class Applied:
    vnis: dict[int, str] = field(default_factory=dict)
    vni_of: dict[str, int] = field(default_factory=dict)         # network -> vni
    # key -> record, its interface and the VNI it was attached to
    local: dict[str, tuple[EndpointRecord, EndpointConfig, int]] = field(default_factory=dict)
    failed: dict[str, EndpointRecord] = field(default_factory=dict)
    fdb: set[Fdb] = field(default_factory=set)
    flood: set[Flood] = field(default_factory=set)
    arp: set[Arp] = field(default_factory=set)
    peers: set[Peer] = field(default_factory=set)
    admission: dict[int, tuple[str, bool]] = field(default_factory=dict)
    gbp: dict[int, tuple[bool, Policy]] = field(default_factory=dict)


# A VNI's GBP as a new one has it: off, the default policy.
GBP_OFF = (False, Policy())


class Backoff:
    """Capped exponential backoff with jitter: BACKOFF_FIRST, doubling up
    to BACKOFF_MAX, each delay drawn from its upper half, so agents that
    lost the store together do not all come back at the same instant."""

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self._rand = rand
        self._delay = BACKOFF_FIRST

    def next(self, *, slow: bool = False) -> float:
        """The delay before the next try (slow: a refusal, which only an
        operator mends: the cap at once)."""
        delay = BACKOFF_MAX if slow else self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX)
        return delay / 2 + self._rand() * delay / 2

    def reset(self) -> None:
        self._delay = BACKOFF_FIRST


class StoreHealth:
    """One log line per store episode, whatever the retries: the first
    failure of any task (and the first of each other kind of failure while
    it lasts) is logged, and once every task that failed has succeeded
    again, one line says the store is back.  ``episodes`` and ``failing``
    are for the control socket and the tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.failing: dict[str, str] = {}       # task -> its last error
        self.episodes = 0
        self._kinds: set[str] = set()
        self._since = 0.0
        self._retries = 0

    def failed(self, task: str, exc: StoreError) -> None:
        kind = _fault(exc)
        if not self.failing:
            self.episodes += 1
            self._since, self._retries, self._kinds = self._clock(), 0, set()
        self._retries += 1
        self.failing[task] = f"{kind}: {exc}"
        if kind in self._kinds:
            return
        self._kinds.add(kind)
        level = logging.ERROR if isinstance(exc, StoreDenied) else logging.WARNING
        log.log(level, "store %s (%s); forwarding goes on with the last known state, "
                "retrying with backoff", kind, exc)

    def ok(self, task: str) -> None:
        if self.failing.pop(task, None) is None or self.failing:
            return
        log.info("store back after %.1f s (%d failed tries); in step again",
                 self._clock() - self._since, self._retries)


def _fault(exc: StoreError) -> str:
    """What kind of store failure exc is, in the words the log uses."""
    if isinstance(exc, StoreDenied):
        return "refused us"
    if isinstance(exc, StoreUnavailable):
        return "unreachable"
    if isinstance(exc, LeaseExpired):
        return "dropped our new lease"
    return "failing"


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
        # The model screened (its ``refused``: key -> why, for the control
        # socket); what was logged of each refusal, so each is logged once
        # per change; our endpoints refused.
        self._screener = Screener(self._here())
        self._told: dict[str, tuple[bytes, str]] = {}
        self._refused_here: set[str] = set()
        # What the accepted records want, what each of them adds to it,
        # what the datapath holds, and what apply must look at.
        self.want = Desired()
        self._wants: dict[str, Wants] = {}                  # endpoint key ->
        self._net_wants: dict[str, NetworkRecord] = {}      # network name ->
        self._host_wants: dict[str, HostRecord] = {}        # host name ->
        self.applied = Applied()
        self.dirty = Dirty()
        # Work done, for ``counts()``: store events that changed the model,
        # records re-screened, calls into the node.
        self.work: Counter[str] = Counter(events=0, rescreened=0, node_calls=0, full_syncs=0)
        self.lease = 0
        self.synced = asyncio.Event()       # set after the first full apply
        # Our endpoints' statuses as they should be in the store, and the
        # keys still to write there (absent from statuses: delete).
        self.statuses: dict[str, EndpointStatus] = {}
        self._status_todo: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._registered = asyncio.Event()
        self.health = StoreHealth()

    def counts(self) -> dict[str, int]:
        """What the datapath holds from the store, what is left to apply,
        and the work done so far (cheap: sizes and counters)."""
        have, dirty = self.applied, self.dirty
        return {"networks": len(have.vnis), "local": len(have.local),
                "failed": len(have.failed), "fdb": len(have.fdb), "flood": len(have.flood),
                "arp": len(have.arp), "peers": len(have.peers),
                "refused": len(self.refused),
                "pending": (len(dirty.vnis) + len(dirty.local) + len(dirty.fdb)
                            + len(dirty.flood) + len(dirty.arp) + len(dirty.peers)
                            + len(dirty.admission)),
                **self.work}

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
            for _, epc, _ in self.applied.local.values():
                with contextlib.suppress(UvxlanError, OSError):
                    self.node.detach(epc)
        self.applied.local.clear()

    def wanted_endpoints(self) -> set[tuple[str, str]]:
        """(netns, ifname) of every endpoint the store asks of this host,
        applied or not (Node.settle keeps their TAPs)."""
        return {(ep.netns, ep.ifname) for ep in self.want.local.values()}

    async def endpoint_health(self, epc: EndpointConfig, error: str | None) -> None:
        """An endpoint of ours was lost (error: why; its netns went away)
        or made again (None): its status says so."""
        key = next((k for k, (_, e, _) in self.applied.local.items() if e is epc), None)
        if key is None:
            return
        rec = self.applied.local[key][0]
        self._set_status(key, EndpointStatus(state="error" if error else "ready", error=error or "",
                                             mac=rec.mac, ip=rec.ip, at=time.time()))
        await self._flush_status_later()

    async def _keep_registered(self) -> None:
        """Register, then keep the lease alive every ttl/3 and write the
        statuses still queued.  A store error is retried with backoff (an
        expired lease at once, by registering again); only a refusal
        before the first registration ends the controller."""
        backoff = Backoff()
        wait = 0.0
        told_taken = ""
        while True:
            try:
                if self.lease:
                    await asyncio.sleep(wait)
                    await self.store.lease_keepalive(self.lease)
                    await self._reclaim_host_key()
                    await self._flush_status()
                else:
                    await self._register()
            except LeaseExpired as exc:
                if self.lease:
                    # Kept away longer than the TTL, or revoked by hand:
                    # our keys are gone.  Take a new lease, write them again.
                    log.warning("lease %x expired or was revoked; registering again",
                                self.lease)
                    self.lease = 0
                    continue
                self.health.failed("registration", exc)     # the new lease went at once
                wait = backoff.next()
            except ClusterError as exc:
                # Our name is held by another live agent: at start the
                # agent ends with it; later (our lease was lost, and it
                # took the name meanwhile) forwarding goes on and we try
                # again slowly, in case it goes.  Logged once per holder.
                if not self._registered.is_set():
                    raise
                if str(exc) != told_taken:
                    told_taken = str(exc)
                    log.error("%s; forwarding goes on, retrying every %.0f s", exc, BACKOFF_MAX)
                wait = BACKOFF_MAX
            except StoreDenied as exc:
                # Credentials refused: at start the agent ends with it;
                # later it keeps forwarding and tries again slowly (the
                # store's operator may mend the user or its role).
                if not self._registered.is_set():
                    raise
                self.health.failed("registration", exc)
                wait = self._retry_in(backoff.next(slow=True))
            except StoreError as exc:
                self.health.failed("registration", exc)
                wait = self._retry_in(backoff.next())
            else:
                self.health.ok("registration")
                backoff.reset()
                told_taken = ""
                wait = self.ttl / 3
            if not self.lease:
                await asyncio.sleep(wait)

    def _retry_in(self, delay: float) -> float:
        """A lease we hold is tried at least every ttl/3, whatever the
        backoff: once the store is back it must be renewed before it ends."""
        return min(delay, self.ttl / 3) if self.lease else delay

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
            await self._claim_host_key(lease)
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

    async def _claim_host_key(self, lease: int) -> None:
        """Write our host key under lease, unless a live agent of our name
        holds it.  A key under another lease is held by a live agent (the
        store deletes a key when its lease ends): one on another control
        directory, or another machine, which NAME.lock cannot see.  The
        lease this name's previous agent left in NAME.state is ours (a
        restart after SIGKILL, its lease still alive); a key under no lease
        was written by hand.  Compare-and-swap, so that of two agents
        starting at once, one wins and the other sees its key."""
        key, mine = cluster.host_key(self.me), cluster.encode(self.record)
        while True:
            held = await self.store.get(key)
            if held is not None and held.lease not in (0, lease):
                raise ClusterError(self._held_by(held))
            if await self.store.cas(key, mine, lease=lease,
                                    mod_revision=0 if held is None else held.mod_revision):
                return

    def _held_by(self, held: KV) -> str:
        """The one line that refuses our name to us."""
        try:
            rec = cluster.checked(HostRecord, held)     # every field checked: printable
            who = (f"underlay {rec.underlay}:{rec.port}, started "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(rec.started))}")
        except (RecordError, OverflowError, OSError):
            who = "its record unreadable"
        return (f"host {self.me} is registered by a live agent (lease {held.lease:x}, {who}): "
                f"refused; stop that agent, or give this one another --name (a dead "
                f"agent's lease ends within its TTL)")

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
        """List, apply, watch until the resync period ends; again.  A store
        error (a watch cancelled or cut, a list refused) means listing
        again after a backoff; the datapath keeps what it has meanwhile."""
        await self._registered.wait()
        backoff = Backoff()
        while True:
            try:
                rev = await self.full_sync()
                self.synced.set()
                self.health.ok("sync")
                backoff.reset()
                await self._watch(rev + 1)
            except StoreCompacted:
                # Not a fault: the history we asked for is gone (another
                # agent compacted, or we were away long): list again now.
                log.info("watch history compacted; listing again")
            except StoreError as exc:
                self.health.failed("sync", exc)
                await asyncio.sleep(backoff.next(slow=isinstance(exc, StoreDenied)))

    async def full_sync(self) -> int:
        """List the store, apply all of it; the revision listed."""
        kvs, rev = await self.store.list(cluster.ROOT)
        listed = {kv.key: (kv.value, kv.create_revision) for kv in kvs
                  if shapes_datapath(kv.key)}
        # What the list says that the model does not (all of it the first
        # time): the screener and ``want`` follow changes exactly as they
        # follow events, so a resync screens the changes the watch missed,
        # not the cluster (2 s of CPU every resync at 10,000 endpoints).
        changes: dict[str, tuple[bytes, int] | None] = {
            k: v for k, v in listed.items() if (self.model.get(k), self.created.get(k)) != v}
        changes.update(dict.fromkeys(self.model.keys() - listed.keys()))
        self.model = {k: v for k, (v, _) in listed.items()}
        self.created = {k: c for k, (_, c) in listed.items()}
        # A full list retries endpoints that failed (the netns may exist by
        # now) and looks at everything the datapath holds and should hold:
        # that is what repairs drift.
        self.applied.failed.clear()
        touched = self._screener.update(changes)
        self.work["full_syncs"] += 1
        self.work["rescreened"] += len(touched.keys)
        self._rewant(touched)
        have, dirty = self.applied, self.dirty
        dirty.vnis |= set(have.vnis) | set(self.want.vnis)
        dirty.admission |= dirty.vnis
        dirty.local |= set(have.local) | set(self.want.local)
        dirty.fdb |= have.fdb | set(self.want.fdb)
        dirty.flood |= have.flood | set(self.want.flood)
        dirty.arp |= have.arp | set(self.want.arp)
        dirty.peers |= have.peers | {(v, u) for v in self.want.vnis for u in self.want.vteps}
        self._told_refused(touched.keys | set(self._told))
        self._report_refused(touched.endpoints | self._refused_here)
        await self.apply()
        return rev

    async def on_event(self, ev: Event) -> bool:
        """One change from the watch, applied if it changes what the
        datapath should hold: whether it did.  The work is in proportion
        to what the change touches (``records.Screener``), not to the
        cluster."""
        # Statuses, address reservations and a network key put again
        # unchanged (every attach does that) cannot change what the
        # datapath should hold: no reconcile for them.
        if not shapes_datapath(ev.key):
            return False
        change: tuple[bytes, int] | None
        if ev.type == "put":
            if self.model.get(ev.key) == ev.value:
                return False
            self.created.setdefault(ev.key, ev.revision)   # a new key: created now
            self.model[ev.key] = ev.value
            change = (ev.value, self.created[ev.key])
        elif self.model.pop(ev.key, None) is None:
            return False
        else:
            self.created.pop(ev.key, None)
            change = None
        touched = self._screener.update({ev.key: change})
        self.work["events"] += 1
        self.work["rescreened"] += len(touched.keys)
        self._rewant(touched)
        self._told_refused(touched.keys)
        self._report_refused(touched.endpoints)
        await self.apply()
        if change is None and ev.key == cluster.host_key(self.me) and self.lease:
            # Our host key deleted (by hand): back now, not at the next
            # keepalive, so the other hosts lose our entries for one watch
            # round trip only.  If our lease ended (the store deletes the
            # key with it), the put fails and the keepalive round
            # registers again.
            with contextlib.suppress(StoreError):
                await self._reclaim_host_key()
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

    # What the datapath should hold -----------------------------------------------

    def _here(self) -> Here:
        # Two owners for one VNI would fight over its flood list and FDB:
        # the config file's network wins (Here.static_vnis).
        return Here(self.me, self.record.underlay, self.record.mtu,
                    frozenset(self.node.static_vnis))

    @property
    def refused(self) -> dict[str, str]:
        """Records the checks refuse (key -> why), for the control socket."""
        return self._screener.out.refused

    def _rewant(self, t: Touched) -> None:
        """Update ``want`` for what the screener re-screened: what those
        records wanted goes, what they want now comes (each change marked
        dirty for apply)."""
        for key in t.endpoints:
            self._unwant_endpoint(key)
        for name in t.networks:
            self._unwant_network(name)
        for name in t.hosts:
            self._unwant_host(name)
        out = self._screener.out
        for name in t.hosts:
            if name in out.hosts:
                self._want_host(out.hosts[name])
        for name in t.networks:
            if name in out.networks:
                self._want_network(out.networks[name])
        for key in t.endpoints:
            self._want_endpoint(key)

    def _want_network(self, n: NetworkRecord) -> None:
        want, dirty = self.want, self.dirty
        self._net_wants[n.name] = n
        want.vnis[n.vni] = n.name
        want.vni_of[n.name] = n.vni
        want.mtu[n.name] = n.mtu
        # Members speak: every live host but this one, in every network.
        want.admission[n.vni] = (n.admit, n.learning)
        want.gbp[n.vni] = (n.gbp, n.gbp_policy)
        dirty.vnis.add(n.vni)
        dirty.admission.add(n.vni)
        dirty.gbp.add(n.vni)
        dirty.peers.update((n.vni, u) for u in want.vteps)

    def _unwant_network(self, name: str) -> None:
        n = self._net_wants.pop(name, None)
        if n is None:
            return
        want, dirty = self.want, self.dirty
        if want.vnis.get(n.vni) == name:
            del want.vnis[n.vni]
            want.admission.pop(n.vni, None)
            want.gbp.pop(n.vni, None)
        want.vni_of.pop(name, None)
        want.mtu.pop(name, None)
        dirty.vnis.add(n.vni)
        dirty.admission.add(n.vni)
        dirty.peers.update((n.vni, u) for u in want.vteps)

    def _want_host(self, h: HostRecord) -> None:
        self._host_wants[h.name] = h
        self.want.vteps[h.underlay] += 1
        self.dirty.peers.update((v, h.underlay) for v in self.want.vnis)

    def _unwant_host(self, name: str) -> None:
        h = self._host_wants.pop(name, None)
        if h is None:
            return
        _uncount(self.want.vteps, h.underlay)
        self.dirty.peers.update((v, h.underlay) for v in self.want.vnis)

    def _want_endpoint(self, key: str) -> None:
        ep = self._screener.out.endpoints.get(key)
        self.dirty.local.add(key)
        vni = None if ep is None else self.want.vni_of.get(ep.network)
        if ep is None or vni is None:
            return
        local: EndpointRecord | None = None
        fdb: Fdb | None = None
        flood: Flood | None = None
        if ep.host == self.me:
            local = ep
            self.want.local[key] = ep
        elif ep.host in self._host_wants:
            # Only live hosts: a host whose lease ended is gone, and so
            # are the paths to its endpoints.
            h = self._host_wants[ep.host]
            fdb, flood = (vni, ep.mac, h.underlay, h.port), (vni, h.underlay, h.port)
            self.want.fdb[fdb] += 1
            self.want.flood[flood] += 1
            self.dirty.fdb.add(fdb)
            self.dirty.flood.add(flood)
        else:
            return
        arp = (vni, str(ep.address.ip), ep.mac)
        self.want.arp[arp] += 1
        self.dirty.arp.add(arp)
        self._wants[key] = (local, fdb, flood, arp)

    def _unwant_endpoint(self, key: str) -> None:
        wants = self._wants.pop(key, None)
        self.dirty.local.add(key)
        if wants is None:
            return
        local, fdb, flood, arp = wants
        if local is not None:
            self.want.local.pop(key, None)
        if fdb is not None:
            _uncount(self.want.fdb, fdb)
            self.dirty.fdb.add(fdb)
        if flood is not None:
            _uncount(self.want.flood, flood)
            self.dirty.flood.add(flood)
        if arp is not None:
            _uncount(self.want.arp, arp)
            self.dirty.arp.add(arp)

    # Reconcile ---------------------------------------------------------------------

    async def apply(self) -> None:
        """Make the datapath hold ``want``, looking only at what is dirty:
        removals first.  What does not take stays dirty, for the next
        apply to try again."""
        want, have, dirty, node = self.want, self.applied, self.dirty, self.node

        for a in _gone(dirty.arp, have.arp, want.arp):
            self._try(node.arp_del, a[0], a[1])
            have.arp.discard(a)
        for f in _gone(dirty.fdb, have.fdb, want.fdb):
            self._try(node.fdb_del, f[0], f[1])
            have.fdb.discard(f)
        for fl in _gone(dirty.flood, have.flood, want.flood):
            self._try(node.del_remote, *fl)
            have.flood.discard(fl)
        for pe in [p for p in dirty.peers if p in have.peers and not want.wants_peer(p)]:
            self._try(node.forget_peer, *pe)
            have.peers.discard(pe)
            dirty.peers.discard(pe)
        for key in [k for k in dirty.local if k in have.local]:
            rec, epc, vni = have.local[key]
            if want.local.get(key) != rec or vni not in want.vnis:
                log.info("endpoint %s/%s: removing", rec.network, rec.name)
                self._try(node.detach, epc)
                del have.local[key]
                self._set_status(key, None)
        for key in [k for k in dirty.local if k in have.failed]:
            if want.local.get(key) != have.failed[key]:
                del have.failed[key]
                self._set_status(key, None)
        for vni in [v for v in dirty.vnis if v in have.vnis and v not in want.vnis]:
            if vni not in node.static_vnis:
                self._try(node.remove_network, vni)
            have.vni_of.pop(have.vnis.pop(vni), None)
            have.admission.pop(vni, None)
            have.gbp.pop(vni, None)

        for vni in list(dirty.vnis):
            name = want.vnis.get(vni)
            if name is not None and have.vnis.get(vni) not in (None, name):
                # The VNI now belongs to another network (removed and made
                # anew between two lists): same datapath VNI, new name.
                have.vni_of.pop(have.vnis[vni], None)
                have.vnis[vni], have.vni_of[name] = name, vni
                node.rename_network(vni, name)
            if name is not None and vni not in have.vnis:
                if not self._try(node.add_network, name, vni):
                    continue
                self._try(node.set_arp, vni, self.arp_mode)
                have.vnis[vni], have.vni_of[name] = name, vni
            dirty.vnis.discard(vni)
        for key in list(dirty.local):
            wanted = want.local.get(key)
            if wanted is not None and key not in have.local and have.failed.get(key) != wanted:
                if wanted.network not in have.vni_of:
                    continue                   # its network is not served (yet)
                self._realise(key, wanted)
                # Creating TAPs takes netlink round trips: let the keepalive
                # run between them, so a long list cannot outlast the lease.
                await asyncio.sleep(0)
            dirty.local.discard(key)
        for f in _new(dirty.fdb, have.fdb, want.fdb):
            if f[0] in have.vnis and self._try(node.fdb_add, *f):
                have.fdb.add(f)
                dirty.fdb.discard(f)
        for fl in _new(dirty.flood, have.flood, want.flood):
            if fl[0] in have.vnis and self._try(node.add_remote, *fl):
                have.flood.add(fl)
                dirty.flood.discard(fl)
        for a in _new(dirty.arp, have.arp, want.arp):
            if a[0] in have.vnis and self._try(node.arp_add, *a):
                have.arp.add(a)
                dirty.arp.discard(a)
        for vni in list(dirty.admission):
            mode = want.admission.get(vni)
            if mode is None or have.admission.get(vni) == mode:
                dirty.admission.discard(vni)
            elif vni in have.vnis and self._try(node.set_admission, vni, *mode):
                have.admission[vni] = mode
                dirty.admission.discard(vni)
        for vni in list(dirty.gbp):
            gbp = want.gbp.get(vni)
            if gbp is None or have.gbp.get(vni, GBP_OFF) == gbp:
                dirty.gbp.discard(vni)
            elif vni in have.vnis and self._try(node.set_gbp, vni, *gbp):
                have.gbp[vni] = gbp
                dirty.gbp.discard(vni)
        for pe in list(dirty.peers):
            if not want.wants_peer(pe) or pe in have.peers:
                dirty.peers.discard(pe)
            elif pe[0] in have.vnis and self._try(node.admit_peer, *pe):
                have.peers.add(pe)
                dirty.peers.discard(pe)
        dirty.shrink()
        # Never a bare flush here: a failing status write would end the
        # sync (a relist loop; on the first sync, never synced).
        await self._flush_status_later()

    def _told_refused(self, keys: Iterable[str]) -> None:
        """Log each refusal among keys once per change of its key's value
        or reason, and a refused key accepted again; never fatal."""
        refused = self._screener.out.refused
        for key in keys:
            why = refused.get(key)
            if why is not None:
                told = (self.model[key], why)
                if self._told.get(key) != told:
                    self._told[key] = told
                    log.warning("store key %s: refused: %s", shown(key), why)
            elif self._told.pop(key, None) is not None and key in self.model:
                log.info("store key %s: accepted", shown(key))

    def _report_refused(self, keys: Iterable[str]) -> None:
        """Our endpoints the checks refuse get an error status that says
        why (``uvxlan attach`` fails at once, ``endpoint ls`` shows it)."""
        out = self._screener.out
        for key in list(keys):
            rec = out.refused_here.get(key)
            if rec is not None:
                error = f"refused: {out.refused[key]}"
                st = self.statuses.get(key)
                if st is None or st.error != error or (st.mac, st.ip) != (rec.mac, rec.ip):
                    self._set_status(key, EndpointStatus(state="error", error=error,
                                                         mac=rec.mac, ip=rec.ip,
                                                         at=time.time()))
                self._refused_here.add(key)
            elif key in self._refused_here:
                self._refused_here.discard(key)
                if key not in self.want.local:
                    self._set_status(key, None)

    def _realise(self, key: str, rec: EndpointRecord) -> None:
        vni = self.applied.vni_of[rec.network]
        epc = EndpointConfig(network=rec.network, netns=rec.netns, address=rec.address,
                             mac=rec.mac, ifname=rec.ifname, group=rec.group)
        self.work["node_calls"] += 1
        try:
            # A learned or store entry for this MAC (it lived elsewhere
            # before) gives way to the local port.
            self.node.attach(epc, vni, self.want.mtu[rec.network])
        except Exception as exc:  # noqa: BLE001 - reported in its status, never fatal
            log.error("endpoint %s/%s in netns %s: %s", rec.network, rec.name, rec.netns, exc)
            self.applied.failed[key] = rec
            self._set_status(key, EndpointStatus(state="error", error=str(exc),
                                                 mac=rec.mac, ip=rec.ip, at=time.time()))
            return
        log.info("endpoint %s/%s: %s %s in netns %s", rec.network, rec.name, rec.ip,
                 rec.mac, rec.netns)
        self.applied.local[key] = (rec, epc, vni)
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

    async def _flush_status_later(self) -> None:
        """Flush now if the store takes it; if not, what is left stays
        queued and the registration task writes it at its next round (and
        reports the episode): a status write that fails (a full etcd, a
        locked file) must not break the watch that keeps the datapath."""
        try:
            await self._flush_status()
        except StoreError as exc:
            log.debug("statuses not written now (%s); queued", exc)

    def _try(self, fn: Callable[..., object], *args: object, **kw: object) -> bool:
        """One datapath change; a refusal is logged, not fatal: the next
        apply tries again what did not take."""
        self.work["node_calls"] += 1
        try:
            fn(*args, **kw)
        except (NativeError, UvxlanError, OSError) as exc:
            log.warning("%s", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug, but not one to stop forwarding for
            log.exception("unexpected error from %s: %s", getattr(fn, "__name__", fn), exc)
            return False
        return True


def _uncount(c: Counter[T], item: T) -> None:
    c[item] -= 1
    if c[item] <= 0:
        del c[item]


def _gone(dirty: set[T], have: set[T], want: Counter[T]) -> list[T]:
    """Dirty entries the datapath holds and nothing wants (now clean)."""
    out = [x for x in dirty if x in have and x not in want]
    dirty.difference_update(out)
    return out


def _new(dirty: set[T], have: set[T], want: Counter[T]) -> list[T]:
    """Dirty entries wanted and not held (they stay dirty until they
    take); the others are clean."""
    out = [x for x in dirty if x in want and x not in have]
    dirty.intersection_update(out)
    return out


def _net_name(key: str) -> tuple[str, str]:
    """(network, name) of an endpoint key."""
    network, _, name = key[len(cluster.ENDPOINTS):].partition("/")
    return network, name

