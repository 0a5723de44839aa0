"""The cluster's state in the store: hosts, networks and endpoints.

What Docker's overlay driver kept in consul, kept here in a ``Store``
(``uvxlan.store``).  Every value is one JSON object; the layout:

    /uvxlan/hosts/HOST                  HostRecord      under the agent's lease
    /uvxlan/networks/NAME               NetworkRecord
    /uvxlan/endpoints/NETWORK/NAME      EndpointRecord  (the desired endpoint)
    /uvxlan/ipam/NETWORK/IP             endpoint NAME   (the address is taken;
                                                        {"endpoint": NAME}, IP bare)
    /uvxlan/status/HOST/NETWORK/NAME    EndpointStatus  under the agent's lease
    /uvxlan/meta/networks               {"created": NAME}  moved by every network
                                                        creation (a txn guard)
    /uvxlan/docker/HOST/NETWORK-ID      {"network": NAME, "gateway": G}  a host's
                                                        Docker network (uvxlan.docker)

Writers keep the invariants with transactions (``Store.txn``): a network's
name, VNI and subnet are unique, an endpoint's IP and MAC unique in its
network.  The CLI writes networks and endpoints; the agent of HOST reads
everything, realises the endpoints whose ``host`` is HOST, and writes
their status back.  Agents never write networks or endpoints.  An attach
puts the network's key again, unchanged (see "Operations on the store"
below): a reader sees a put of a network it already has, and ignores it.

The operations (``create_network``, ``list_networks``, ``get_network``,
``remove_network``, ``attach``, ``detach``, ``undo_attach``,
``list_endpoints``, ``list_hosts``, ``wait_ready``) raise ConfigError for bad input (one line,
naming the field; the rules are ``uvxlan.validate``'s, as for the config
file), ClusterError for a conflict or something not found, RecordError for
a stored value that is not a usable record, and StoreError when the store
fails; they leave nothing half-written: each write is one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, TypeVar

from uvxlan import gbp as groups
from uvxlan import validate as rules
from uvxlan.config import ADMIT
from uvxlan.errors import (
    ClusterError,
    ConfigError,
    RecordError,
    StoreCompacted,
    StoreUnavailable,
)
from uvxlan.proto import ENCAP_OVERHEAD, VNI_MAX, derived_mac
from uvxlan.store import KV, Store

log = logging.getLogger("uvxlan.cluster")

ROOT = "/uvxlan/"
HOSTS = ROOT + "hosts/"
NETWORKS = ROOT + "networks/"
ENDPOINTS = ROOT + "endpoints/"
IPAM = ROOT + "ipam/"
STATUS = ROOT + "status/"
DOCKER = ROOT + "docker/"        # each host's Docker networks (uvxlan.docker)

VNI_FIRST = 256                      # allocated VNIs start here, as Docker's


def host_key(host: str) -> str:
    return HOSTS + host


def network_key(name: str) -> str:
    return NETWORKS + name


def endpoint_key(network: str, name: str) -> str:
    return f"{ENDPOINTS}{network}/{name}"


def ipam_key(network: str, ip: str) -> str:
    return f"{IPAM}{network}/{ip}"


def status_key(host: str, network: str, name: str) -> str:
    return f"{STATUS}{host}/{network}/{name}"


def docker_network_key(host: str, network_id: str) -> str:
    return f"{DOCKER}{host}/{network_id}"


@dataclass(frozen=True)
class HostRecord:
    """A live agent: where its VTEP is.  Gone when its lease ends."""

    name: str
    underlay: str          # IPv4 the other hosts send VXLAN to
    port: int              # its UDP port (4789)
    mtu: int = 1500        # its underlay MTU: networks' MTU is at most this - 50
    version: str = ""
    started: float = 0.0   # unix time


@dataclass(frozen=True)
class NetworkRecord:
    name: str
    vni: int
    subnet: str            # CIDR, e.g. 10.0.0.0/24
    gateway: str           # reserved address (first host), never handed out
    mtu: int               # the endpoints' MTU (underlay MTU - 50 at most)
    created: float = 0.0
    # Who may send into it: "members" (the live hosts) or "any"; learning
    # is off by default, as the store programs every path.  Records written
    # before these fields decode with the defaults.
    admit: str = "members"
    learning: bool = False
    # VXLAN-GBP (uvxlan.gbp): off, or on with its policy between groups,
    # rules as {"from": G1, "to": G2, "action": "allow"|"deny"}.
    gbp: bool = False
    policy_default: str = groups.DEFAULT_ACTION
    policy: list[dict[str, Any]] = field(default_factory=list)

    @cached_property
    def gbp_policy(self) -> groups.Policy:
        """The policy, checked (validate() refuses a record whose is not)."""
        return groups.policy_from(self.policy_default, self.policy, "policy")

    # Parsed once per record (the screener reads it for every endpoint it
    # screens); kept out of the fields, so never encoded or compared.
    @cached_property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


@dataclass(frozen=True)
class EndpointRecord:
    """A container's interface on a network, as the user asked for it."""

    name: str
    network: str
    host: str              # the agent that realises it
    netns: str             # the container's netns: a name (/run/netns/NAME) or a path
    ifname: str            # inside the netns, eth0 by default
    mac: str               # lower-case aa:bb:cc:dd:ee:ff
    ip: str                # the address with the network's prefix, 10.0.0.2/24
    created: float = 0.0
    group: int = 0         # its VXLAN-GBP group (uvxlan.gbp)

    @cached_property                     # as NetworkRecord.network
    def address(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.ip)


@dataclass(frozen=True)
class EndpointStatus:
    """What the agent made of an endpoint: ``ready`` or ``error``."""

    state: str             # "ready" | "error"
    error: str = ""
    mac: str = ""          # echoes the record it realised, so a waiting
    ip: str = ""           # CLI knows the status is for *its* attach
    at: float = 0.0


R = TypeVar("R", HostRecord, NetworkRecord, EndpointRecord, EndpointStatus)


def encode(record: HostRecord | NetworkRecord | EndpointRecord | EndpointStatus) -> bytes:
    return json.dumps(asdict(record), sort_keys=True).encode()


# The largest value read as a record: every record uvxlan writes is a few
# hundred bytes; a writer of the store must not make every agent and
# command parse megabytes.
RECORD_MAX = 4096


def decode(kind: type[R], value: bytes, key: str = "") -> R:
    """A record from its stored bytes; RecordError if it is not one (a
    key written by something else, or by a newer uvxlan)."""
    if len(value) > RECORD_MAX:
        raise RecordError(f"store key {key or '?'}: {len(value)} bytes, larger than any "
                          f"record ({RECORD_MAX})")
    try:
        data: Any = json.loads(value)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        names = {f.name for f in fields(kind)}
        return kind(**{k: v for k, v in data.items() if k in names})
    except (ValueError, TypeError) as exc:
        raise RecordError(f"store key {key or '?'}: not a {kind.__name__}: {exc}") from None
    except RecursionError:                    # [[[[...: nested deeper than the parser goes
        raise RecordError(f"store key {key or '?'}: not a {kind.__name__}: nested too "
                          "deep") from None


def key_of(record: HostRecord | NetworkRecord | EndpointRecord) -> str:
    """The key record belongs at.  A record found at another key (the
    key /uvxlan/hosts/A holding host B) is refused: the key is what every
    writer's transaction guards and what a lease covers."""
    if isinstance(record, HostRecord):
        return host_key(record.name)
    if isinstance(record, NetworkRecord):
        return network_key(record.name)
    return endpoint_key(record.network, record.name)


# Operations on the store ---------------------------------------------------------
#
# Every write is one Store.txn whose compares cover everything its checks
# read, so a check and its write cannot be separated by another writer's:
#
# - Network creations all re-put NETWORKS_GUARD and compare its
#   mod_revision as read *before* listing the networks.  A creation that
#   committed before that read is in the listing; one that commits after it
#   moves the guard, and ours fails and retries.  (Comparing only the
#   existing networks' keys would not do: two creations of *different* new
#   names compare disjoint keys and would both commit, with one VNI.)
#   Removals need not move it: they only free names, VNIs and subnets.
# - Attaches and removal serialise per network on the network's own key:
#   an attach compares it and puts it again (same value, new
#   mod_revision), after reading it *before* listing the endpoints and
#   addresses; so two attaches to one network never both commit on the same
#   listing (no duplicate IP, MAC or name), and a removal that found no
#   endpoints fails if an attach got in since.  Detaches only free things.
#
# A lost race retries from the reads, after a short random pause.

NETWORKS_GUARD = ROOT + "meta/networks"   # moved by every network creation (see above)
SUBNET_POOL = ipaddress.IPv4Network("10.0.0.0/8")   # chosen subnets: its /24s, in order
SUBNET_PREFIX = 24
MTU_MIN = rules.MTU.lo
DEFAULT_UNDERLAY_MTU = 1500         # when no host is registered
_ATTEMPTS = 1000    # lost races before giving up: each loss is another writer's success

T = TypeVar("T")


def _is_name(value: object) -> bool:
    """Can value be looked up as a name (a safe store key component)?"""
    return rules.is_key_component(value)


def check_name(field: str, value: object) -> str:
    """A new network or endpoint name (``rules.name``): it becomes a
    store key component."""
    return rules.check(field, rules.name, value)


def check_vni(vni: object) -> int:
    return rules.check("vni", rules.vni, vni)


def check_mac(mac: object) -> str:
    return rules.check("mac", rules.mac, mac)


def check_stored_mac(mac: object) -> str:
    """A record's MAC, which must be in the one form uvxlan writes (lower
    case, colons): the claim checks compare MACs as text, and another
    spelling of a container's MAC would slip past them."""
    normal = check_mac(mac)
    if normal != mac:
        raise ConfigError(f"mac {mac!r} is not written as {normal!r}")
    return normal


def shown(text: str) -> str:
    """A key, or a message that holds one, for a log line or a terminal:
    quoted if it holds anything that is not printable (a forged line
    break, a terminal escape)."""
    return text if text.isprintable() else repr(text)


async def _retrying(what: str, attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Run attempt until it returns a result (None: it lost a race)."""
    for n in range(_ATTEMPTS):
        result = await attempt()
        if result is not None:
            return result
        await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** n)))
    raise ClusterError(f"{what}: gave up after {_ATTEMPTS} attempts lost to concurrent writers")


def validate(record: HostRecord | NetworkRecord | EndpointRecord, key: str = "") -> None:
    """RecordError unless the record's fields are what this uvxlan can use
    (decode() checks the field names only), by the same rules
    (``uvxlan.validate``) as the config file and the commands.  Names are
    checked as store key components only, interface names as printable
    text only: a name an older uvxlan accepted must not make its agents
    drop a working endpoint.  What depends on other records (the network of an
    endpoint, who else claims an address) is ``uvxlan.records``'s."""
    def strings(*names: str) -> None:
        # Printed by the commands: nothing that moves a terminal's cursor.
        for name in names:
            value = getattr(record, name)
            if not isinstance(value, str) or not value.isprintable() or len(value) > 255:
                raise ConfigError(f"{name} {value!r} is not a printable string "
                                  "(255 characters at most)")

    def times(*names: str) -> None:
        for name in names:
            value = getattr(record, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and 0 <= value < float("inf")):
                raise ConfigError(f"{name} {value!r} is not a time")

    def key_components(*names: str) -> None:
        # Every name an older uvxlan accepted is one; no '/', no control
        # characters that would forge lines in a log.
        for name in names:
            if not rules.is_key_component(getattr(record, name)):
                raise ConfigError(f"{name} {getattr(record, name)!r} cannot be a store "
                                  "key's component (A-Z a-z 0-9 _ . -)")

    try:
        if isinstance(record, HostRecord):
            key_components("name")
            strings("version")
            times("started")
            rules.check("underlay", rules.vtep, record.underlay)
            rules.check("port", rules.port, record.port)
            if record.mtu not in rules.UNDERLAY_MTU:
                raise ConfigError(f"mtu {record.mtu!r} is not an underlay MTU "
                                  f"({rules.UNDERLAY_MTU})")
        elif isinstance(record, NetworkRecord):
            key_components("name")
            times("created")
            check_vni(record.vni)
            rules.check("subnet", rules.subnet, record.subnet)
            rules.check("mtu", rules.mtu, record.mtu)
            if record.admit not in ADMIT or not isinstance(record.learning, bool):
                raise ConfigError(f"admit {record.admit!r} / learning {record.learning!r}:"
                                  f" expected {' or '.join(ADMIT)} / true or false")
            if not isinstance(record.gbp, bool) or not isinstance(record.policy, list):
                raise ConfigError(f"gbp {record.gbp!r} / policy {record.policy!r}: expected"
                                  " true or false / a list of rules")
            if (record.policy or record.policy_default != groups.DEFAULT_ACTION) \
                    and not record.gbp:
                raise ConfigError("policy applies only with gbp")
            record.gbp_policy                    # noqa: B018 - checks it
            gateway = ipaddress.IPv4Address(rules.check("gateway", rules.ipv4, record.gateway))
            if gateway not in record.network or gateway in (
                    record.network.network_address, record.network.broadcast_address):
                raise ConfigError(f"gateway {record.gateway} is not a host address of "
                                  f"subnet {record.subnet}")
        else:
            key_components("name", "network", "host")
            strings("ifname", "netns")
            times("created")
            rules.check("netns", rules.netns, record.netns)
            rules.check("ip", rules.interface, record.ip)
            check_stored_mac(record.mac)
            groups.group(record.group)
    except (ValueError, TypeError) as exc:
        where = f"store key {key}: " if key else ""
        raise RecordError(f"{where}not a valid {type(record).__name__}: {exc}") from None


def checked(kind: type[R], kv: KV) -> R:
    """The record at kv, decoded and validated, and at its own key;
    RecordError naming the key if not."""
    record = decode(kind, kv.value, kv.key)
    if not isinstance(record, EndpointStatus):
        validate(record, kv.key)
        if key_of(record) != kv.key:
            raise RecordError(f"store key {kv.key}: holds the record of {key_of(record)}, "
                              "not its own")
    return record


def _decode_all(kind: type[R], kvs: list[KV]) -> list[R]:
    """The records that decode and validate; the others (written by hand,
    or by a newer uvxlan) are skipped with a warning, so one bad key does
    not stop every command."""
    out = []
    for kv in kvs:
        try:
            record = checked(kind, kv)
        except RecordError as exc:
            log.warning("%s (skipped)", shown(str(exc)))
            continue
        out.append(record)
    return out


def _reserved(ipam_kvs: list[KV]) -> set[ipaddress.IPv4Address]:
    out = set()
    for kv in ipam_kvs:
        try:
            out.add(ipaddress.IPv4Address(kv.key.rsplit("/", 1)[1]))
        except ValueError:
            log.warning("store key %s: skipped: not an address reservation", shown(kv.key))
    return out


def _names(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


async def list_hosts(store: Store) -> list[HostRecord]:
    """The registered (live) hosts, by name."""
    kvs, _ = await store.list(HOSTS)
    return _decode_all(HostRecord, kvs)


async def list_networks(store: Store) -> list[NetworkRecord]:
    """Every network, by name."""
    kvs, _ = await store.list(NETWORKS)
    return _decode_all(NetworkRecord, kvs)


async def get_network(store: Store, name: str) -> NetworkRecord:
    """The network called name; ClusterError if there is none."""
    kv = await store.get(network_key(name)) if _is_name(name) else None
    if kv is None:
        known = [n.name for n in await list_networks(store)]
        raise ClusterError(f"no network named {name!r} (networks: {_names(known)})")
    return checked(NetworkRecord, kv)


def _underlay_mtu(hosts: list[HostRecord]) -> int:
    return min((h.mtu for h in hosts), default=DEFAULT_UNDERLAY_MTU)


def _choose_subnet(taken: list[ipaddress.IPv4Network], hosts: list[HostRecord],
                   avoid: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /24 of SUBNET_POOL that overlaps no network and no route
    to avoid, and holds no host's underlay address (its traffic would be
    routed into the overlay)."""
    underlays = []
    for h in hosts:
        try:
            underlays.append(ipaddress.IPv4Address(h.underlay))
        except ValueError:
            continue
    for candidate in SUBNET_POOL.subnets(new_prefix=SUBNET_PREFIX):
        if any(candidate.overlaps(t) for t in taken):
            continue
        if any(a in candidate for a in underlays):
            continue
        if any(candidate.overlaps(r) for r in avoid):
            continue
        return candidate
    raise ClusterError(f"no free /{SUBNET_PREFIX} left in {SUBNET_POOL} (networks, hosts' "
                       "underlays and this host's routes take them all): give --subnet")


async def create_network(store: Store, name: str, *, subnet: str | None = None,
                         vni: int | None = None, mtu: int | None = None,
                         admit: str = "members", learning: bool = False,
                         avoid: Sequence[ipaddress.IPv4Network] = (),
                         gbp: bool = False) -> NetworkRecord:
    """A new network.  Unique name; vni given (1-16777215, unused) or the
    first free from 256; subnet given (IPv4 CIDR, prefix <= 30, the network
    address, overlapping no other) or the first free /24 of 10.0.0.0/8 that
    holds no host's underlay address and overlaps no route of ``avoid``
    (the asking host's: ``uvxlan.underlay.host_routes``); gateway its first
    address; mtu at most the smallest registered host's underlay MTU - 50,
    by default that.  ConfigError for bad input, ClusterError for a
    conflict."""
    check_name("network name", name)
    want_vni = None if vni is None else check_vni(vni)
    want_subnet = None if subnet is None else rules.check("subnet", rules.subnet, subnet)
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)):
        raise ConfigError(f"mtu {mtu!r}: expected an integer")
    if admit not in ADMIT:
        raise ConfigError(f"admit {admit!r}: expected {' or '.join(ADMIT)}")

    async def attempt() -> NetworkRecord | None:
        guard = await store.get(NETWORKS_GUARD)          # before the listing: see above
        networks = await list_networks(store)
        hosts = await list_hosts(store)
        if any(n.name == name for n in networks):
            raise ClusterError(f"network {name} already exists")
        used = {n.vni: n.name for n in networks}
        if want_vni is not None:
            if want_vni in used:
                raise ClusterError(f"VNI {want_vni} is already used by network {used[want_vni]}")
            the_vni = want_vni
        else:
            the_vni = next((v for v in range(VNI_FIRST, VNI_MAX + 1) if v not in used), 0)
            if not the_vni:
                raise ClusterError(f"no free VNI left from {VNI_FIRST} to {VNI_MAX}")
        if want_subnet is not None:
            for n in networks:
                if want_subnet.overlaps(n.network):
                    raise ClusterError(f"subnet {want_subnet} overlaps network {n.name} "
                                       f"({n.subnet})")
            net = want_subnet
        else:
            net = _choose_subnet([n.network for n in networks], hosts, avoid)
        limit = _underlay_mtu(hosts) - ENCAP_OVERHEAD
        if limit < MTU_MIN:
            raise ConfigError(f"the underlay MTU ({limit + ENCAP_OVERHEAD}) leaves less than "
                              f"{MTU_MIN} for a network")
        the_mtu = limit if mtu is None else mtu
        if the_mtu > limit:
            smallest = min(hosts, key=lambda h: h.mtu, default=None)
            raise ConfigError(f"MTU {the_mtu} is larger than the underlay allows ({limit})"
                              + ("" if smallest is None else
                                 f": host {smallest.name}'s underlay MTU is {smallest.mtu}, "
                                 f"less {ENCAP_OVERHEAD} for VXLAN"))
        if the_mtu < MTU_MIN:
            raise ConfigError(f"MTU {the_mtu} is below the minimum ({MTU_MIN})")
        record = NetworkRecord(name=name, vni=the_vni, subnet=str(net),
                               gateway=str(net.network_address + 1), mtu=the_mtu,
                               created=time.time(), admit=admit, learning=learning,
                               gbp=gbp)
        key = network_key(name)
        ok = await store.txn(
            compare=[(NETWORKS_GUARD, 0 if guard is None else guard.mod_revision), (key, 0)],
            put=[(key, encode(record), 0),
                 (NETWORKS_GUARD, json.dumps({"created": name}).encode(), 0)])
        return record if ok else None

    return await _retrying(f"create network {name}", attempt)


async def set_policy(store: Store, name: str,
                     change: Callable[[groups.Policy], groups.Policy]) -> NetworkRecord:
    """Change the VXLAN-GBP policy of a network with gbp on: change(the
    current policy) is written back in one transaction on the network's
    key, and every agent serving the network applies it."""
    async def attempt() -> NetworkRecord | None:
        kv = await store.get(network_key(name)) if _is_name(name) else None
        if kv is None:
            await get_network(store, name)               # the not-found error
            return None
        net = checked(NetworkRecord, kv)
        if not net.gbp:
            raise ClusterError(f"network {name} does not use GBP (network create --gbp)")
        policy = change(net.gbp_policy)
        record = dataclasses.replace(net, policy_default=policy.default,
                                     policy=[r.to_json() for r in policy.rules])
        value = encode(record)
        if len(value) > RECORD_MAX:
            raise ConfigError(f"network {name}: {len(policy.rules)} rules do not fit its store "
                              f"record ({RECORD_MAX} bytes); a config file network holds more")
        ok = await store.txn(compare=[(kv.key, kv.mod_revision)], put=[(kv.key, value, 0)])
        return record if ok else None

    return await _retrying(f"set the policy of network {name}", attempt)


async def remove_network(store: Store, name: str) -> NetworkRecord:
    """Remove a network; refused (ClusterError) while it has endpoints."""
    async def attempt() -> NetworkRecord | None:
        kv = await store.get(network_key(name)) if _is_name(name) else None
        if kv is None:
            await get_network(store, name)               # the not-found error
            return None
        record = decode(NetworkRecord, kv.value, kv.key)
        eps, _ = await store.list(f"{ENDPOINTS}{name}/")  # after the get: see above
        if eps:
            names = [decode(EndpointRecord, e.value, e.key).name for e in eps]
            many = len(names) != 1
            raise ClusterError(f"network {name} has {len(names)} endpoint{'s' if many else ''}"
                               f": {', '.join(names)}; detach {'them' if many else 'it'} first")
        # Reservations without an endpoint cannot be left by these
        # functions, but would haunt a network of the same name: go too.
        stale, _ = await store.list(f"{IPAM}{name}/")
        ok = await store.txn(compare=[(kv.key, kv.mod_revision)],
                             delete=[kv.key] + [s.key for s in stale])
        return record if ok else None

    return await _retrying(f"remove network {name}", attempt)


def address_problem(net: NetworkRecord, ip: ipaddress.IPv4Interface) -> str | None:
    """Why ip cannot be an endpoint's address in net, or None if it can: it
    has the subnet's prefix and is one of its hosts, not the gateway."""
    subnet, address = net.network, ip.ip
    if address not in subnet:
        return f"ip {address} is not in network {net.name}'s subnet {subnet}"
    if ip.network.prefixlen != subnet.prefixlen:
        return (f"ip {ip}: the prefix must be the network's (/{subnet.prefixlen}); "
                "another would route other subnets into the overlay")
    if address == subnet.network_address:
        return f"ip {address} is network {net.name}'s network address"
    if str(address) == net.gateway:
        return f"ip {address} is network {net.name}'s gateway"
    if address == subnet.broadcast_address:
        return f"ip {address} is network {net.name}'s broadcast address"
    return None


def _parse_ip(net: NetworkRecord, ip: object) -> ipaddress.IPv4Address:
    subnet = net.network
    try:
        iface = ipaddress.IPv4Interface(ip.strip()) if isinstance(ip, str) else None
    except ValueError:
        iface = None
    if iface is None:
        raise ConfigError(f"ip {ip!r}: expected an IPv4 address")
    assert isinstance(ip, str)
    if "/" in ip and iface.network.prefixlen != subnet.prefixlen:
        raise ConfigError(f"ip {ip}: the prefix must be the network's "
                          f"(/{subnet.prefixlen}), or left out")
    why = address_problem(net, ipaddress.IPv4Interface((iface.ip, subnet.prefixlen)))
    if why is not None:
        raise ConfigError(why)
    return iface.ip


def pick_address(net: NetworkRecord, endpoints: list[EndpointRecord], ipam_kvs: list[KV],
                 want_ip: ipaddress.IPv4Address | None,
                 want_mac: str | None) -> ipaddress.IPv4Address:
    """want_ip if it is free in net, else ClusterError; without one, the
    lowest free address after the gateway whose derived MAC nobody took
    by hand (unless want_mac is given).  Free: no endpoint holds it and no
    reservation (ipam_kvs, read under the same compare) names it."""
    ip_owner = {e.address.ip: e.name for e in endpoints}
    taken = set(ip_owner) | _reserved(ipam_kvs)
    if want_ip is not None:
        if want_ip in taken:
            raise ClusterError(f"ip {want_ip} is already used by endpoint "
                               f"{ip_owner.get(want_ip, '?')} in network {net.name}")
        return want_ip
    macs = {e.mac for e in endpoints}
    first = int(ipaddress.IPv4Address(net.gateway)) + 1
    for n in range(first, int(net.network.broadcast_address)):
        candidate = ipaddress.IPv4Address(n)
        # Skip an address whose derived MAC someone took by hand.
        if candidate not in taken and (want_mac is not None or derived_mac(candidate) not in macs):
            return candidate
    raise ClusterError(f"network {net.name} ({net.network}) has no free address left "
                       f"({len(taken)} in use)")


async def attach(store: Store, network: str, *, host: str, netns: str,
                 name: str | None = None, ip: str | None = None, mac: str | None = None,
                 ifname: str = "eth0", group: int = 0) -> EndpointRecord:
    """Add an endpoint for netns on host to a network (the agent of host
    then makes it).  name defaults to netns, unique in the network; ip given
    (in the subnet, not its network, gateway or broadcast address, free) or
    the lowest free after the gateway; mac given (unicast) or 02:42 + the
    IP's bytes, unique in the network; host must be registered."""
    rules.check("netns", rules.netns, netns)
    if name is None and netns.startswith("/"):
        raise ConfigError(f"netns {netns}: a netns given as a path needs an endpoint name "
                          "(--name)")
    ep_name = check_name("endpoint name" if name is not None else "endpoint name (from netns)",
                         netns if name is None else name)
    rules.check("ifname", rules.ifname, ifname)
    want_mac = None if mac is None else check_mac(mac)
    groups.group(group)

    async def attempt() -> EndpointRecord | None:
        net_kv = await store.get(network_key(network)) if _is_name(network) else None
        if net_kv is None:
            await get_network(store, network)            # the not-found error
            return None
        net = checked(NetworkRecord, net_kv)
        if group and not net.gbp:
            raise ConfigError(f"--group {group}: network {network} does not use GBP "
                              "(network create --gbp)")
        want_ip = None if ip is None else _parse_ip(net, ip)
        host_kv = await store.get(host_key(host)) if _is_name(host) else None
        if host_kv is None:
            known = [h.name for h in await list_hosts(store)]
            raise ClusterError(f"host {host!r} is not registered (hosts: {_names(known)}; "
                               "is its agent running?)")
        # What the agents would refuse, refused now (uvxlan.records).
        the_host = checked(HostRecord, host_kv)
        if not rules.carries(the_host.mtu, net.mtu):
            raise ClusterError(f"host {host}'s underlay MTU {the_host.mtu} cannot carry "
                               f"network {network}'s MTU {net.mtu} (+{ENCAP_OVERHEAD} of "
                               "VXLAN)")
        # Read after the network key: its compare below covers these.
        ep_kvs, _ = await store.list(f"{ENDPOINTS}{network}/")
        ipam_kvs, _ = await store.list(f"{IPAM}{network}/")
        endpoints = _decode_all(EndpointRecord, ep_kvs)
        if any(e.name == ep_name for e in endpoints):
            raise ClusterError(f"endpoint {ep_name} already exists in network {network}")
        address = pick_address(net, endpoints, ipam_kvs, want_ip, want_mac)
        mac_owner = {e.mac: e.name for e in endpoints}
        subnet = net.network
        the_mac = derived_mac(address) if want_mac is None else want_mac
        if the_mac in mac_owner:
            raise ClusterError(f"mac {the_mac} is already used by endpoint "
                               f"{mac_owner[the_mac]} in network {network}")
        record = EndpointRecord(name=ep_name, network=network, host=host, netns=netns,
                                ifname=ifname, mac=the_mac,
                                ip=f"{address}/{subnet.prefixlen}", created=time.time(),
                                group=group)
        ep_key, ip_key = endpoint_key(network, ep_name), ipam_key(network, str(address))
        ok = await store.txn(
            compare=[(net_kv.key, net_kv.mod_revision), (ep_key, 0), (ip_key, 0)],
            put=[(ep_key, encode(record), 0),
                 (ip_key, json.dumps({"endpoint": ep_name}).encode(), 0),
                 (net_kv.key, net_kv.value, 0)])          # moves the network's revision
        return record if ok else None

    return await _retrying(f"attach {ep_name} to network {network}", attempt)


async def detach(store: Store, network: str, name: str) -> EndpointRecord:
    """Remove an endpoint and free its address; returns what it was."""
    async def attempt() -> EndpointRecord | None:
        key = endpoint_key(network, name)
        kv = await store.get(key) if _is_name(network) and _is_name(name) else None
        if kv is None:
            await get_network(store, network)            # the unknown-network error first
            eps, _ = await store.list(f"{ENDPOINTS}{network}/")
            known = [decode(EndpointRecord, e.value, e.key).name for e in eps]
            raise ClusterError(f"no endpoint {name!r} in network {network} "
                               f"(endpoints: {_names(known)})")
        record = decode(EndpointRecord, kv.value, kv.key)
        return record if await _delete_endpoint(store, kv, record) else None

    return await _retrying(f"detach {name} from network {network}", attempt)


async def undo_attach(store: Store, record: EndpointRecord) -> bool:
    """Detach what attach() returned, if it is still that very record: an
    attach undoing itself must not remove a later attach's endpoint of the
    same name.  False if it is gone or was replaced."""
    async def attempt() -> bool | None:
        kv = await store.get(endpoint_key(record.network, record.name))
        if kv is None or decode(EndpointRecord, kv.value, kv.key) != record:
            return False
        return True if await _delete_endpoint(store, kv, record) else None

    return await _retrying(f"detach {record.name} from network {record.network}", attempt)


async def _delete_endpoint(store: Store, kv: KV, record: EndpointRecord) -> bool:
    """The endpoint at kv and its address reservation, if kv is unchanged."""
    return await store.txn(compare=[(kv.key, kv.mod_revision)],
                           delete=[kv.key, ipam_key(record.network, str(record.address.ip))])


def _status_of(record: EndpointRecord, since: int, kv: KV | None) -> EndpointStatus | None:
    """The status at kv if it is about this record: written after the
    record was (since: its create_revision) and echoing its MAC and IP;
    an older one is about an endpoint of the same name before it."""
    if kv is None or kv.mod_revision <= since:
        return None
    try:
        status = decode(EndpointStatus, kv.value, kv.key)
    except RecordError:
        return None                      # not an agent's: no word from the agent
    if not all(isinstance(v, str) for v in (status.state, status.error, status.mac,
                                              status.ip)):
        return None
    if (status.mac.lower() != record.mac
            or status.ip.split("/")[0] != record.ip.split("/")[0]):
        return None
    return status


async def list_endpoints(store: Store, network: str | None = None
                         ) -> list[tuple[EndpointRecord, EndpointStatus | None]]:
    """The endpoints (of one network, or all), by network and name, each
    with its agent's status for it, None while there is none."""
    if network is not None:
        await get_network(store, network)
    ep_kvs, _ = await store.list(ENDPOINTS if network is None else f"{ENDPOINTS}{network}/")
    status_kvs, _ = await store.list(STATUS)
    statuses = {kv.key: kv for kv in status_kvs}
    out = []
    for kv in ep_kvs:
        try:
            record = checked(EndpointRecord, kv)
        except RecordError as exc:          # `uvxlan check` shows it
            log.warning("%s (skipped)", shown(str(exc)))
            continue
        skv = statuses.get(status_key(record.host, record.network, record.name))
        out.append((record, _status_of(record, kv.create_revision, skv)))
    return out


async def wait_ready(store: Store, record: EndpointRecord, timeout: float) -> EndpointStatus:
    """Wait until the agent of record.host reports the endpoint: its status
    when ready; ClusterError with the agent's message when it failed, or
    when timeout seconds pass first."""
    lost: list[StoreUnavailable] = []                  # store outages ridden out
    try:
        async with asyncio.timeout(timeout):
            return await _await_status(store, record, lost)
    except TimeoutError:
        why = f" (the store: {lost[-1]})" if lost else " (is its agent running?)"
        raise ClusterError(f"host {record.host} did not realise endpoint {record.name} "
                           f"within {timeout:g} s{why}") from None


async def _await_status(store: Store, record: EndpointRecord,
                        lost: list[StoreUnavailable]) -> EndpointStatus:
    key = status_key(record.host, record.network, record.name)

    def verdict(since: int, kv: KV | None) -> EndpointStatus | None:
        status = _status_of(record, since, kv)
        if status is None or status.state not in ("ready", "error"):
            return None
        if status.state == "error":
            raise ClusterError(f"host {record.host} could not realise endpoint {record.name}: "
                               f"{status.error or 'no reason given'}")
        return status

    while True:
        try:
            ep = await store.get(endpoint_key(record.network, record.name))
            if ep is None or decode(EndpointRecord, ep.value, ep.key) != record:
                raise ClusterError(f"endpoint {record.name} in network {record.network} was "
                                   "detached or replaced while waiting for it")
            # List, then watch from the next revision: nothing is missed.
            kvs, rev = await store.list(key)
            done = verdict(ep.create_revision, next((kv for kv in kvs if kv.key == key), None))
            if done is not None:
                return done
            events = store.watch(key, start_revision=rev + 1)
            try:
                async for event in events:
                    if event.key != key or event.type != "put":
                        continue
                    done = verdict(ep.create_revision,
                                   KV(key, event.value, 0, event.revision, 0))
                    if done is not None:
                        return done
            finally:
                aclose: Callable[[], Awaitable[None]] | None = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()                       # end the watch's stream now
        except StoreCompacted:
            continue
        except StoreUnavailable as exc:
            lost[:] = [exc]
            await asyncio.sleep(0.5)                     # ride it out until the timeout
