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
