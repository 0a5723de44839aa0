"""Hostile records: what an agent acts on, and what it refuses.

Whoever can write to the store can write any value under /uvxlan/.
``screen()`` sorts the store's hosts, networks and endpoints into the
records a host may act on and the ones it refuses, each refusal with a
one-line reason; the agent's controller builds its desired state from the
accepted ones only, and ``uvxlan check`` (``check_store``) runs the same
function from the point of view of every registered host.  One record's own
fields are ``cluster.checked``'s (decode, ``cluster.validate``, the key it
sits at); what depends on other records is here:

- a host claiming this host's underlay address, or one another host
  registered first;
- a network whose VNI another network created first holds, or that this
  host's config file serves; a network whose MTU this host's underlay
  cannot carry (not served here: its endpoints here get an error status);
- an endpoint whose address is not a host address of its network's subnet
  with its prefix, or is its gateway; whose host's underlay MTU cannot
  carry its network; whose network or host is refused;
- an endpoint claiming a MAC or IP another endpoint of its network holds:
  an endpoint of this host wins, then the key created first (the store's
  create revision, which a writer cannot choose), then the lower key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from uvxlan import cluster
from uvxlan import validate as rules
from uvxlan.cluster import EndpointRecord, HostRecord, NetworkRecord
from uvxlan.errors import RecordError
from uvxlan.proto import ENCAP_OVERHEAD
from uvxlan.store import KV, Store


@dataclass(frozen=True)
class Here:
    """The host a screening is for: its name, underlay address and MTU,
    and the VNIs its config file serves."""

    name: str
    underlay: str
    mtu: int
    static_vnis: frozenset[int] = frozenset()


@dataclass
class Screened:
    # name -> record; never this host's own (what it says of us, we know)
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    networks: dict[str, NetworkRecord] = field(default_factory=dict)    # name -> record
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)  # key -> record
    refused: dict[str, str] = field(default_factory=dict)               # key -> why
    # Refused endpoints of this host: their status says why.
    refused_here: dict[str, EndpointRecord] = field(default_factory=dict)


def shapes_datapath(key: str) -> bool:
    """Is key one screen() reads (a host, network or endpoint)?"""
    return key.startswith((cluster.HOSTS, cluster.NETWORKS, cluster.ENDPOINTS))


@dataclass
class Decoded:
    """The model's records that pass their own checks, in the order their
    keys were created (then by key), and the others (key -> why)."""

    hosts: list[tuple[str, HostRecord]] = field(default_factory=list)
    networks: list[tuple[str, NetworkRecord]] = field(default_factory=list)
    endpoints: list[tuple[str, EndpointRecord]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    created: Mapping[str, int] = field(default_factory=dict)


def decode(model: Mapping[str, bytes], created: Mapping[str, int]) -> Decoded:
    """Each record of model (key -> value) checked on its own
    (``cluster.checked``).  created: each key's create revision (missing:
    0), which decides who claimed something first."""
    out = Decoded(created=created)
    for key in sorted(model, key=lambda k: (created.get(k, 0), k)):
        kv = KV(key, model[key], 0, 0, 0)
        try:
            if key.startswith(cluster.HOSTS):
                out.hosts.append((key, cluster.checked(HostRecord, kv)))
            elif key.startswith(cluster.NETWORKS):
                out.networks.append((key, cluster.checked(NetworkRecord, kv)))
            elif key.startswith(cluster.ENDPOINTS):
                out.endpoints.append((key, cluster.checked(EndpointRecord, kv)))
        except RecordError as exc:
            out.refused[key] = str(exc).removeprefix(f"store key {key}: ")
    return out


def screen(model: Mapping[str, bytes], created: Mapping[str, int],
           here: Here | None) -> Screened:
    """The records of model (key -> value) that host ``here`` may act on,
    and the refused ones with why (see ``decode`` for created).  here
    None: the checks that hold for every host."""
    return screen_decoded(decode(model, created), here)


def screen_decoded(d: Decoded, here: Here | None) -> Screened:
    """screen() of records decoded once (``uvxlan check`` screens them
    from every host's point of view)."""
    out = Screened(refused=dict(d.refused))
    hosts, networks, endpoints = d.hosts, d.networks, d.endpoints   # first created first

    # Hosts: one VTEP address, one host.  Ours is ours; among the others
    # the one registered first keeps it.
    vtep_of: dict[str, str] = {}                      # underlay -> host name
    if here is not None:
        vtep_of[here.underlay] = here.name
    for key, h in hosts:
        if here is not None and h.name == here.name:
            continue                                  # our own record: never acted on
        owner = vtep_of.setdefault(h.underlay, h.name)
        if owner != h.name:
            out.refused[key] = f"underlay {h.underlay} is host {owner}'s"
            continue
        out.hosts[h.name] = h

    # Networks: one VNI, one network (created first); served here only if
    # the config file does not own the VNI and the underlay carries it.
    vni_of: dict[int, str] = {}
    for key, n in networks:
        owner = vni_of.setdefault(n.vni, n.name)
        if owner != n.name:
            out.refused[key] = f"VNI {n.vni} is network {owner}'s (created first)"
        elif here is not None and n.vni in here.static_vnis:
            out.refused[key] = (f"VNI {n.vni} belongs to a network of host {here.name}'s "
                                "config file; not served there")
        elif here is not None and not rules.carries(here.mtu, n.mtu):
            out.refused[key] = (f"MTU {n.mtu} needs an underlay MTU of "
                                f"{n.mtu + ENCAP_OVERHEAD}; host {here.name}'s is "
                                f"{here.mtu}: not served there")
        else:
            out.networks[n.name] = n

    # Endpoints: an address of the network's, a host that carries it, and
    # no MAC or IP someone else claimed first.  Endpoints of hosts not
    # registered now still claim theirs: a host that restarts must not
    # find them taken.
    def mine(ep: EndpointRecord) -> bool:
        return here is not None and ep.host == here.name

    claims: dict[tuple[str, str], EndpointRecord] = {}   # (network, "mac M"/"ip A") -> owner
    for key, ep in sorted(endpoints, key=lambda e: not mine(e[1])):    # a stable sort
        why = _endpoint_problem(ep, out, mine(ep))
        if why is None:
            whats = (f"mac {ep.mac}", f"ip {ep.address.ip}")
            taken = [(w, claims[ep.network, w]) for w in whats if (ep.network, w) in claims]
            if taken:
                what, holder = taken[0]
                why = f"{what} is endpoint {ep.network}/{holder.name}'s"
            else:
                claims.update({(ep.network, w): ep for w in whats})
        if why is None:
            out.endpoints[key] = ep
            continue
        out.refused[key] = why
        if mine(ep):
            out.refused_here[key] = ep
    return out


def _endpoint_problem(ep: EndpointRecord, s: Screened, mine: bool) -> str | None:
    net = s.networks.get(ep.network)
    if net is None:                      # refused, or not there (then not served)
        why = s.refused.get(cluster.network_key(ep.network))
        return None if why is None else f"network {ep.network} is refused: {why}"
    why = cluster.address_problem(net, ep.address)
    if why is not None:
        return why
    if mine:                             # our own record is never read (Screened.hosts)
        return None
    host = s.hosts.get(ep.host)
    if host is None and cluster.host_key(ep.host) in s.refused:
        return f"host {ep.host} is refused: {s.refused[cluster.host_key(ep.host)]}"
    if host is not None and not rules.carries(host.mtu, net.mtu):
        return (f"host {ep.host}'s underlay MTU {host.mtu} cannot carry network "
                f"{net.name}'s MTU {net.mtu} (+{ENCAP_OVERHEAD} of VXLAN)")
    return None


# `uvxlan check` ------------------------------------------------------------------


async def check_store(store: Store) -> dict[str, str]:
    """What the agents would refuse in the store now: key -> why (the
    hosts it is refused on when not on all), by key."""
    kvs, _ = await store.list(cluster.ROOT)
    model = {kv.key: kv.value for kv in kvs if shapes_datapath(kv.key)}
    created = {kv.key: kv.create_revision for kv in kvs}
    return refusals(model, created)


def refusals(model: Mapping[str, bytes], created: Mapping[str, int]) -> dict[str, str]:
    """screen() from every registered host's point of view (from none when
    no host is): key -> each reason once, with the hosts that refuse it
    when not every host does (an endpoint's own host keeps it)."""
    decoded = decode(model, created)
    everywhere = screen_decoded(decoded, None)
    views = [Here(h.name, h.underlay, h.mtu) for h in everywhere.hosts.values()]
    if not views:
        return dict(sorted(everywhere.refused.items()))
    seen: dict[str, dict[str, list[str]]] = {}        # key -> why -> hosts
    for here in views:
        for key, why in screen_decoded(decoded, here).refused.items():
            seen.setdefault(key, {}).setdefault(why, []).append(here.name)
    return {key: "; ".join(why if len(names) == len(views)
                           else f"{why} (on {', '.join(sorted(names))})"
                           for why, names in seen[key].items())
            for key in sorted(seen)}


# Incremental screening (the controller's) -----------------------------------------

Record = HostRecord | NetworkRecord | EndpointRecord
K = TypeVar("K")


@dataclass
class Touched:
    """What one Screener.update re-screened: their outcome may have
    changed (and nothing else's did)."""

    hosts: set[str] = field(default_factory=set)         # host names
    networks: set[str] = field(default_factory=set)      # network names
    endpoints: set[str] = field(default_factory=set)     # endpoint keys
    keys: set[str] = field(default_factory=set)          # every key re-screened


class Screener:
    """screen() kept up to date one change at a time, for the agent: its
    ``out`` always equals ``screen(model, created, here)``, and an update
    re-screens only what the changed keys can affect, so a store event
    costs the agent work in proportion to the change, not to the cluster:

    - a host key: the hosts claiming its underlay (old and new);
    - a network key: the networks claiming its VNI (old and new);
    - endpoints: those of a host or network whose outcome changed, the
      changed ones, and every endpoint linked to them through a MAC or IP
      claimed in the same network (who wins a claim depends on all who
      claim it, and what a loser would claim next).
    """

    def __init__(self, here: Here) -> None:
        self.here = here
        self.out = Screened()
        self._rec: dict[str, Record] = {}              # key -> record that passed its own checks
        self._bad: dict[str, str] = {}                 # key -> why its own checks failed
        self._created: dict[str, int] = {}
        self._by_underlay: dict[str, set[str]] = {}    # underlay -> host keys
        self._by_vni: dict[int, set[str]] = {}         # VNI -> network keys
        self._of_network: dict[str, set[str]] = {}     # network name -> endpoint keys
        self._of_host: dict[str, set[str]] = {}        # host name -> endpoint keys
        self._claimants: dict[tuple[str, str], set[str]] = {}   # (network, "mac M"/"ip A") -> keys

    def update(self, changes: Mapping[str, tuple[bytes, int] | None]) -> Touched:
        """Apply changes (key -> (value, create revision), or None: gone)
        to the keys screen() reads; what was re-screened."""
        t = Touched()
        underlays: set[str] = set()
        vnis: set[int] = set()
        claims: set[tuple[str, str]] = set()
        host_names: set[str] = set()
        net_names: set[str] = set()
        for key, change in changes.items():
            old = self._rec.pop(key, None)
            if old is not None:
                self._unindex(key, old)
            self._bad.pop(key, None)
            self._created.pop(key, None)
            self.out.refused.pop(key, None)
            t.keys.add(key)
            new: Record | None = None
            if change is not None:
                value, created = change
                self._created[key] = created
                new = self._decode(key, value)
                if new is None:
                    self.out.refused[key] = self._bad[key]
                else:
                    self._rec[key] = new
                    self._index(key, new)
            for rec in (old, new):
                if isinstance(rec, HostRecord):
                    underlays.add(rec.underlay)
                elif isinstance(rec, NetworkRecord):
                    vnis.add(rec.vni)
                elif isinstance(rec, EndpointRecord):
                    claims.update(_claims(rec))
            # A key that decodes no more still decides its host's or
            # network's refusal, which its endpoints quote.
            if key.startswith(cluster.HOSTS):
                host_names.add(key[len(cluster.HOSTS):])
                t.hosts.add(key[len(cluster.HOSTS):])
            elif key.startswith(cluster.NETWORKS):
                net_names.add(key[len(cluster.NETWORKS):])
                t.networks.add(key[len(cluster.NETWORKS):])
            elif key.startswith(cluster.ENDPOINTS):
                t.endpoints.add(key)
                self.out.endpoints.pop(key, None)
                self.out.refused_here.pop(key, None)

        for u in underlays:
            host_names |= self._screen_hosts(u, t)
        for v in vnis:
            net_names |= self._screen_networks(v, t)
        seeds = {k for k in t.endpoints if k in self._rec}
        for name in host_names:
            seeds |= self._of_host.get(name, set())
        for name in net_names:
            seeds |= self._of_network.get(name, set())
        t.endpoints |= self._screen_endpoints(seeds, claims)
        t.keys |= t.endpoints
        return t

    # One group at a time, in screen()'s order ------------------------------------

    def _order(self, key: str) -> tuple[int, str]:
        return self._created.get(key, 0), key

    def _screen_hosts(self, underlay: str, t: Touched) -> set[str]:
        """Re-screen the hosts claiming underlay: the names whose outcome
        (what their endpoints depend on) changed."""
        here, out = self.here, self.out
        owner: str | None = here.name if underlay == here.underlay else None
        changed = set()
        for key in sorted(self._by_underlay.get(underlay, ()), key=self._order):
            h = self._rec[key]
            assert isinstance(h, HostRecord)
            if h.name == here.name:
                continue                                  # our own record: never acted on
            t.keys.add(key)
            t.hosts.add(h.name)
            before = (_host_view(out.hosts.get(h.name)), out.refused.pop(key, None))
            out.hosts.pop(h.name, None)
            owner = owner or h.name
            if owner != h.name:
                out.refused[key] = f"underlay {h.underlay} is host {owner}'s"
            else:
                out.hosts[h.name] = h
            if before != (_host_view(out.hosts.get(h.name)), out.refused.get(key)):
                changed.add(h.name)
        return changed

    def _screen_networks(self, vni: int, t: Touched) -> set[str]:
        here, out = self.here, self.out
        owner: str | None = None
        changed = set()
        for key in sorted(self._by_vni.get(vni, ()), key=self._order):
            n = self._rec[key]
            assert isinstance(n, NetworkRecord)
            t.keys.add(key)
            t.networks.add(n.name)
            before = (out.networks.pop(n.name, None), out.refused.pop(key, None))
            owner = owner or n.name
            if owner != n.name:
                out.refused[key] = f"VNI {n.vni} is network {owner}'s (created first)"
            elif n.vni in here.static_vnis:
                out.refused[key] = (f"VNI {n.vni} belongs to a network of host {here.name}'s "
                                    "config file; not served there")
            elif not rules.carries(here.mtu, n.mtu):
                out.refused[key] = (f"MTU {n.mtu} needs an underlay MTU of "
                                    f"{n.mtu + ENCAP_OVERHEAD}; host {here.name}'s is "
                                    f"{here.mtu}: not served there")
            else:
                out.networks[n.name] = n
            if before != (out.networks.get(n.name), out.refused.get(key)):
                changed.add(n.name)
        return changed

    def _screen_endpoints(self, seeds: set[str], claims: set[tuple[str, str]]) -> set[str]:
        """Re-screen seeds and every endpoint that shares a claim with them
        (transitively): that group's claims are nobody else's."""
        group, todo = set(), list(claims)
        for key in seeds:
            group.add(key)
            todo.extend(_claims(self._endpoint(key)))
        seen = set(claims)
        while todo:
            for key in self._claimants.get(todo.pop(), ()):
                if key not in group:
                    group.add(key)
                    for c in _claims(self._endpoint(key)):
                        if c not in seen:
                            seen.add(c)
                            todo.append(c)
        here, out = self.here, self.out

        def order(key: str) -> tuple[bool, int, str]:
            return self._endpoint(key).host != here.name, *self._order(key)

        held: dict[tuple[str, str], EndpointRecord] = {}
        for key in sorted(group, key=order):
            ep = self._endpoint(key)
            out.endpoints.pop(key, None)
            out.refused.pop(key, None)
            out.refused_here.pop(key, None)
            mine = ep.host == here.name
            why = _endpoint_problem(ep, out, mine)
            if why is None:
                taken = [(w[1], held[w]) for w in _claims(ep) if w in held]
                if taken:
                    what, holder = taken[0]
                    why = f"{what} is endpoint {ep.network}/{holder.name}'s"
                else:
                    held.update(dict.fromkeys(_claims(ep), ep))
            if why is None:
                out.endpoints[key] = ep
                continue
            out.refused[key] = why
            if mine:
                out.refused_here[key] = ep
        return group

    # Records and indexes -----------------------------------------------------------

    def _decode(self, key: str, value: bytes) -> Record | None:
        kv = KV(key, value, 0, 0, 0)
        try:
            if key.startswith(cluster.HOSTS):
                return cluster.checked(HostRecord, kv)
            if key.startswith(cluster.NETWORKS):
                return cluster.checked(NetworkRecord, kv)
            return cluster.checked(EndpointRecord, kv)
        except RecordError as exc:
            self._bad[key] = str(exc).removeprefix(f"store key {key}: ")
            return None

    def _endpoint(self, key: str) -> EndpointRecord:
        ep = self._rec[key]
        assert isinstance(ep, EndpointRecord)
        return ep

    def _index(self, key: str, rec: Record) -> None:
        if isinstance(rec, HostRecord):
            self._by_underlay.setdefault(rec.underlay, set()).add(key)
        elif isinstance(rec, NetworkRecord):
            self._by_vni.setdefault(rec.vni, set()).add(key)
        else:
            self._of_network.setdefault(rec.network, set()).add(key)
            self._of_host.setdefault(rec.host, set()).add(key)
            for c in _claims(rec):
                self._claimants.setdefault(c, set()).add(key)

    def _unindex(self, key: str, rec: Record) -> None:
        if isinstance(rec, HostRecord):
            _forget(self._by_underlay, rec.underlay, key)
            self.out.hosts.pop(rec.name, None)
        elif isinstance(rec, NetworkRecord):
            _forget(self._by_vni, rec.vni, key)
            self.out.networks.pop(rec.name, None)
        else:
            _forget(self._of_network, rec.network, key)
            _forget(self._of_host, rec.host, key)
            for c in _claims(rec):
                _forget(self._claimants, c, key)


def _forget(index: dict[K, set[str]], k: K, key: str) -> None:
    keys = index[k]
    keys.discard(key)
    if not keys:
        del index[k]


def _claims(ep: EndpointRecord) -> tuple[tuple[str, str], tuple[str, str]]:
    """What an endpoint claims in its network: its MAC and its IP."""
    return (ep.network, f"mac {ep.mac}"), (ep.network, f"ip {ep.address.ip}")


def _host_view(h: HostRecord | None) -> tuple[str, int, int] | None:
    """What a host's endpoints depend on (not its version or start time)."""
    return None if h is None else (h.underlay, h.port, h.mtu)
