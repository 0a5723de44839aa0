"""Docker's remote network driver and IPAM driver, served by the agent.

``uvxlan agent --docker-plugin [PATH]`` serves Docker's plugin protocol
(HTTP/1.1 POSTs with JSON bodies, moby's libnetwork docs/remote.md and
docs/ipam.md) on a unix socket, by default /run/docker/plugins/uvxlan.sock,
where dockerd finds the plugin ``uvxlan`` by its name.  One Docker network
is one store network, named with ``-o uvxlan.network=NAME`` (Docker does
not tell a driver its network's name), so the same command on every host
makes or finds the same network:

    docker network create -d uvxlan --ipam-driver uvxlan --subnet 10.10.0.0/24 \\
        -o uvxlan.network=net1 net1

The calls, in the order Docker makes them (docs/docker.md):

- ``IpamDriver.RequestPool``: the pool is the store network's subnet
  (``--subnet``, else ``--ipam-opt uvxlan.network=NAME``'s subnet, else
  the first free /24); its id is the subnet itself, so nothing is kept.
- ``IpamDriver.RequestAddress``: Docker's gateway request gets the
  subnet's first address, which the store never gives to a container and
  nobody answers (containers get no default route through it); a
  container's request reserves the lowest free address in the store
  (``/uvxlan/ipam/NETWORK/IP``, by compare-and-swap, so unique across
  hosts), as ``uvxlan attach`` picks one.
- ``NetworkDriver.CreateNetwork``: the store network is made if absent,
  else checked against the options and the pool; this host's record of
  the Docker network (``/uvxlan/docker/HOST/NETWORK-ID``: the store
  network, the gateway asked for) is written.
- ``NetworkDriver.CreateEndpoint``: answers the MAC derived from the
  address (02:42 + its bytes), unless the user gave one.
- ``NetworkDriver.Join``: a persistent TAP ``uvx`` + 12 characters of the
  endpoint id, made in the agent's netns as any uvxlan endpoint (MTU,
  queue, offloads, alias ``uvxlan:NAME``; ``endpoint.handoff_tap``), that
  Docker moves into the container and names ``eth0``.  No gateway; and
  DisableGatewayService (no docker_gwbridge) unless this host's Docker
  network asked for ``-o uvxlan.gateway=gwbridge``, which CreateNetwork
  keeps in the store (``/uvxlan/docker/HOST/NETWORK-ID``, gone with
  DeleteNetwork).  Once Docker has configured
  it in the sandbox (SandboxKey, a netns file's path), the endpoint record
  ``docker-ID12`` is written (host: this agent, netns: the sandbox), and the
  controller adopts the TAP there as it adopts one after a restart: from
  then on it is an endpoint like any other (checks, ``NAME.state``, a
  restart keeps the container connected).  Until then, the address's
  reservation keeps what is known of the endpoint (id, MAC, sandbox), so
  an agent restarted between Docker's calls takes up where the last one
  was (``Plugin.resume``).
- ``Leave``: nothing (Docker moves the TAP back to the agent's netns after
  it); ``DeleteEndpoint``: the record goes (the controller removes the
  TAP), the address stays reserved until ``ReleaseAddress`` frees it.
- ``DeleteNetwork``: this host's record of the Docker network goes; the
  store network stays: other hosts' Docker networks map to it;
  ``uvxlan network rm NAME`` removes it once no endpoint is left.

Errors are one line, ``uvxlan: ...``, which ``docker`` prints after
"Error response from daemon: ".  The server is bounded as the control
socket and the metrics are: one request per connection, a head of
``HEAD_MAX`` and a body of ``BODY_MAX`` bytes within ``IDLE_S``, the reply
taken within ``send_s``, ``connections_max`` at once (``uvxlan.bounded``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from uvxlan import cluster, netlink, underlay
from uvxlan import validate as rules
from uvxlan.bounded import LISTEN_BACKLOG, BoundedServer
from uvxlan.cluster import EndpointRecord, NetworkRecord
from uvxlan.endpoint import handoff_tap
from uvxlan.errors import ClusterError, ConfigError, UvxlanError
from uvxlan.proto import derived_mac
from uvxlan.state import marker
from uvxlan.store import KV, Store

log = logging.getLogger("uvxlan.docker")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
HEAD_MAX = 8192            # request line and headers (dockerd sends ~200 bytes)
BODY_MAX = 65536           # a request's JSON (options and labels included)
ADDRESS_SPACE = "uvxlan"   # our IPAM's one address space: the store
SRC_PREFIX = "uvx"         # + 12 characters of the endpoint id: 15, IFNAMSIZ - 1
DST_PREFIX = "eth"         # Docker names the TAP eth0 (eth1 ...) in the container
ENDPOINT_PREFIX = "docker-"  # + 12 characters of the endpoint id: the store's name
ID_SHORT = 12
GATEWAY_REQUEST = "com.docker.network.gateway"   # RequestAddressType of the gateway
GENERIC = "com.docker.network.generic"           # the -o options, in CreateNetwork
# A container's address, reserved by RequestAddress until its endpoint is
# placed (the reservation then names the endpoint, as attach's do).
RESERVED = "(docker)"
PLACE_TIMEOUT_S = 30.0     # for Docker to move and configure the TAP after Join
PLACE_POLL_S = 0.01
REMOVE_WAIT_S = 3.0        # for the controller to remove a deleted endpoint's TAP

# -o: the store network (required); its VNI and MTU when it is made
# (checked when it exists); this host's gateway for its containers.
# --ipam-opt: the network whose subnet is the pool.
NETWORK_OPTIONS = ("uvxlan.network", "uvxlan.vni", "uvxlan.mtu", "uvxlan.gateway")
# -o uvxlan.gateway: none (the default: a container reaches its network
# only), or Docker's docker_gwbridge (a second interface, eth1, with the
# default route and Docker's NAT), as Docker's overlay driver gives.
GATEWAYS = ("none", "gwbridge")
IPAM_OPTIONS = ("uvxlan.network",)


# What the plugin asks of the agent's host ----------------------------------------


class Taps(Protocol):
    """The TAPs Join hands to Docker (``AgentTaps``; a fake in the tests)."""

    def make(self, name: str, mac: str, mtu: int) -> None:
        """A persistent TAP called name in the agent's netns, configured."""

    def find(self, netns: str, mac: str) -> netlink.FoundLink | None:
        """Ours with this MAC in netns, whatever Docker named it."""

    def exists(self, name: str) -> bool:
        """Whether ours called name is in the agent's netns."""

    def remove(self, name: str) -> None:
        """Delete ours called name in the agent's netns, if there."""


class AgentTaps:
    """Taps on this host: made as ``Endpoint`` makes them, for agent owner."""

    def __init__(self, owner: str, queue: int | None, vnet_hdr: Callable[[], bool]) -> None:
        """vnet_hdr: whether the node opens TAPs with IFF_VNET_HDR (known
        once it started)."""
        self.owner = owner
        self.queue = queue
        self.vnet_hdr = vnet_hdr

    def make(self, name: str, mac: str, mtu: int) -> None:
        # One left by a Join that did not complete (Docker tries again) goes.
        self.remove(name)
        handoff_tap(name, mac=mac, mtu=mtu, owner=self.owner, vnet_hdr=self.vnet_hdr(),
                    queue=self.queue)

    def find(self, netns: str, mac: str) -> netlink.FoundLink | None:
        return netlink.link_find(netns, mac=mac, alias=marker(self.owner))

    def exists(self, name: str) -> bool:
        found = netlink.link_state(name)
        return found is not None and found["alias"] == marker(self.owner)

    def remove(self, name: str) -> None:
        if self.exists(name):
            netlink.link_delete(name)


# The plugin: one method per call ---------------------------------------------------


@dataclass
class DockerEndpoint:
    """An endpoint between CreateEndpoint and DeleteEndpoint."""

    id: str
    network: str
    ip: ipaddress.IPv4Interface
    mac: str
    netns: str | None = None      # the sandbox, from Join

    @property
    def name(self) -> str:
        return endpoint_name(self.id)

    @property
    def srcname(self) -> str:
        return tap_name(self.id)


def endpoint_name(endpoint_id: str) -> str:
    """The store's name of Docker's endpoint endpoint_id."""
    return ENDPOINT_PREFIX + endpoint_id[:ID_SHORT]


def tap_name(endpoint_id: str) -> str:
    """The TAP Join makes for endpoint_id, in the agent's netns (SrcName)."""
    return SRC_PREFIX + endpoint_id[:ID_SHORT]


def _reservation(host: str, ep: DockerEndpoint | None = None) -> bytes:
    """An address reserved for Docker on host; with ep, what is known of
    its endpoint so far (id, MAC, and the sandbox once joined), so that an
    agent restarted between Docker's calls takes up where the last one was."""
    data: dict[str, Any] = {"endpoint": RESERVED, "host": host}
    if ep is not None:
        data["docker"] = {"id": ep.id, "mac": ep.mac, "netns": ep.netns or ""}
    return json.dumps(data, sort_keys=True).encode()


def _reserved_for(value: bytes, host: str) -> dict[str, Any] | None:
    """The reservation if value is one of host's for Docker, else None."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("endpoint") != RESERVED or data.get("host") != host:
        return None
    return data


def _docker_id(data: dict[str, Any]) -> str | None:
    docker = data.get("docker")
    return docker.get("id") if isinstance(docker, dict) else None


class Plugin:
    """Docker's NetworkDriver and IpamDriver calls, on the store."""

    def __init__(self, store: Store, host: str, taps: Taps) -> None:
        """host: this agent's name (its endpoints' host)."""
        self.store = store
        self.host = host
        self.taps = taps
        self.endpoints: dict[str, DockerEndpoint] = {}       # Docker's endpoint id ->
        self._placing: dict[str, asyncio.Task[None]] = {}
        self.calls: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "Plugin.Activate": self.activate,
            "NetworkDriver.GetCapabilities": self.capabilities,
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": self.nothing,
            "NetworkDriver.DiscoverDelete": self.nothing,
            "NetworkDriver.ProgramExternalConnectivity": self.nothing,
            "NetworkDriver.RevokeExternalConnectivity": self.nothing,
            "IpamDriver.GetCapabilities": self.ipam_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.nothing,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    async def call(self, method: str, request: Any) -> dict[str, Any] | None:
        """The answer to one call; None for a method we do not serve
        (404: Docker then treats an optional one as done).  A refusal is
        {"Err": ...} ({"Error": ...} for IPAM calls), one line."""
        handler = self.calls.get(method)
        if handler is None:
            return None
        try:
            if not isinstance(request, dict):
                request = {}
            return await handler(request)
        except UvxlanError as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not end the agent
            log.exception("docker plugin: %s failed", method)
            why = f"internal error in {method}: {type(exc).__name__}: {exc} (see the agent's log)"
        why = " ".join(why.split())
        log.info("docker plugin: %s refused: %s", method, why)
        key = "Error" if method.startswith("IpamDriver.") else "Err"
        return {key: f"uvxlan: {why}"}

    async def close(self) -> None:
        for task in self._placing.values():
            task.cancel()
        for task in list(self._placing.values()):
            with suppress(asyncio.CancelledError):
                await task

    # Handshake ------------------------------------------------------------------

    async def activate(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    async def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        # Local: each dockerd keeps its own networks (no swarm); global
        # connectivity: containers on every host reach each other.
        return {"Scope": "local", "ConnectivityScope": "global"}

    async def ipam_capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        # No MAC needed (the MAC comes from the address); no replay: the
        # store keeps the reservations across restarts of dockerd.
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    async def address_spaces(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    async def nothing(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    # IPAM ---------------------------------------------------------------------

    async def request_pool(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("V6"):
            raise ConfigError("IPv6 is not supported: create the network without --ipv6")
        if req.get("SubPool"):
            raise ConfigError("--ip-range is not supported: addresses come from the whole "
                              "subnet, unique across hosts")
        opts = _options(req.get("Options"), IPAM_OPTIONS, "--ipam-opt")
        want = opts.get("uvxlan.network")
        networks = await cluster.list_networks(self.store)
        named = next((n for n in networks if n.name == want), None)
        if req.get("Pool"):
            subnet = rules.check("subnet (--subnet)", rules.subnet, req["Pool"])
            for n in networks:
                if n.network != subnet and n.network.overlaps(subnet):
                    raise ClusterError(f"subnet {subnet} overlaps network {n.name} "
                                       f"({n.subnet})")
            if named is not None and named.network != subnet:
                raise ClusterError(f"network {named.name} has subnet {named.subnet}, "
                                   f"not {subnet}")
        elif named is not None:
            subnet = named.network
        else:
            # As `uvxlan network create` does: no subnet over a route of
            # this host's (docs/operations.md, "What overlay users hit").
            subnet = cluster._choose_subnet([n.network for n in networks],
                                           await cluster.list_hosts(self.store),
                                           avoid=list(underlay.host_routes()))
        return {"PoolID": str(subnet), "Pool": str(subnet), "Data": {}}

    async def request_address(self, req: dict[str, Any]) -> dict[str, Any]:
        pool = _pool(req.get("PoolID"))
        opts = req.get("Options") or {}
        gateway = pool.network_address + 1
        want = _address(req.get("Address"))
        if isinstance(opts, dict) and opts.get("RequestAddressType") == GATEWAY_REQUEST:
            # Docker asks for a gateway at every network creation: the
            # address the store keeps from containers, answered by nobody.
            if want is not None and want != gateway:
                raise ConfigError(f"--gateway {want}: uvxlan's gateway is the subnet's first "
                                  f"address, {gateway} (no container takes it)")
            return {"Address": f"{gateway}/{pool.prefixlen}", "Data": {}}
        net = await self._network_of(pool)
        address = await self._reserve(net.name, want)
        return {"Address": f"{address}/{pool.prefixlen}", "Data": {}}

    async def _network_of(self, subnet: ipaddress.IPv4Network) -> NetworkRecord:
        for n in await cluster.list_networks(self.store):
            if n.network == subnet:
                return n
        raise ClusterError(f"no uvxlan network has subnet {subnet} (removed with uvxlan "
                           "network rm?)")

    async def _reserve(self, network: str, want: ipaddress.IPv4Address | None
                       ) -> ipaddress.IPv4Address:
        """An address of network reserved in the store for this host: want,
        or the lowest free one (``cluster.pick_address``).  Compared as
        attach compares: two hosts never reserve the same address."""
        async def attempt() -> ipaddress.IPv4Address | None:
            net_kv = await self.store.get(cluster.network_key(network))
            if net_kv is None:
                raise ClusterError(f"network {network} is gone from the store")
            net = cluster.checked(NetworkRecord, net_kv)
            if want is not None:
                why = cluster.address_problem(net, ipaddress.IPv4Interface(
                    (want, net.network.prefixlen)))
                if why is not None:
                    raise ConfigError(why)
            ep_kvs, _ = await self.store.list(f"{cluster.ENDPOINTS}{network}/")
            ipam_kvs, _ = await self.store.list(f"{cluster.IPAM}{network}/")
            endpoints = cluster._decode_all(EndpointRecord, ep_kvs)
            address = cluster.pick_address(net, endpoints, ipam_kvs, want, None)
            key = cluster.ipam_key(network, str(address))
            ok = await self.store.txn(
                compare=[(net_kv.key, net_kv.mod_revision), (key, 0)],
                put=[(key, _reservation(self.host), 0), (net_kv.key, net_kv.value, 0)])
            return address if ok else None

        return await cluster._retrying(f"reserve an address in network {network}", attempt)

    async def release_address(self, req: dict[str, Any]) -> dict[str, Any]:
        pool = _pool(req.get("PoolID"))
        address = _address(req.get("Address"))
        if address is None or address == pool.network_address + 1:
            return {}
        for n in await cluster.list_networks(self.store):
            if n.network == pool:
                key = cluster.ipam_key(n.name, str(address))
                kv = await self.store.get(key)
                # Only our own reservation: an address an endpoint holds is
                # freed with the endpoint (DeleteEndpoint, uvxlan detach).
                if kv is not None and _reserved_for(kv.value, self.host) is not None:
                    await self.store.delete(key, mod_revision=kv.mod_revision)
        return {}

    # Networks -----------------------------------------------------------------

    async def create_network(self, req: dict[str, Any]) -> dict[str, Any]:
        options = req.get("Options") or {}
        opts = _options(options.get(GENERIC) if isinstance(options, dict) else None,
                        NETWORK_OPTIONS, "-o")
        name = opts.get("uvxlan.network")
        if not name:
            raise ConfigError("name the uvxlan network: docker network create -d uvxlan "
                              "--ipam-driver uvxlan -o uvxlan.network=NAME ...")
        cluster.check_name("-o uvxlan.network", name)
        vni = _int_option(opts, "uvxlan.vni", rules.vni)
        mtu = _int_option(opts, "uvxlan.mtu", rules.mtu)
        gateway = opts.get("uvxlan.gateway", GATEWAYS[0])
        if gateway not in GATEWAYS:
            raise ConfigError(f"-o uvxlan.gateway={gateway!s:.64}: expected "
                              f"{' or '.join(GATEWAYS)}")
        if req.get("IPv6Data"):
            raise ConfigError("IPv6 is not supported: create the network without --ipv6")
        v4 = req.get("IPv4Data") or []
        if not isinstance(v4, list) or len(v4) != 1 or not isinstance(v4[0], dict):
            raise ConfigError("give one IPv4 subnet (--subnet), or none")
        if v4[0].get("AddressSpace") != ADDRESS_SPACE:
            raise ConfigError("use --ipam-driver uvxlan: Docker's own IPAM hands out "
                              "addresses per host, uvxlan's are unique across hosts")
        subnet = rules.check("subnet", rules.subnet, v4[0].get("Pool"))
        key = cluster.docker_network_key(self.host, _network_id(req))
        net = await self._get_network(name)
        if net is None:
            try:
                net = await cluster.create_network(self.store, name, subnet=str(subnet),
                                                   vni=vni, mtu=mtu)
                log.info("docker plugin: network %s made (VNI %d, %s, MTU %d)", name,
                         net.vni, net.subnet, net.mtu)
            except ClusterError:
                # Made by another host meanwhile: checked below as found.
                net = await self._get_network(name)
                if net is None:
                    raise
        if net.network != subnet:
            raise ClusterError(f"network {name} has subnet {net.subnet}, not {subnet}: give "
                               f"--subnet {net.subnet} (or --ipam-opt uvxlan.network={name})")
        for what, wanted, has in (("uvxlan.vni", vni, net.vni), ("uvxlan.mtu", mtu, net.mtu)):
            if wanted is not None and wanted != has:
                raise ClusterError(f"network {name} has {what.split('.')[1].upper()} {has}, "
                                   f"not {wanted} (-o {what})")
        if gateway != "none":
            log.warning("docker plugin: network %s on this host: containers get a way out "
                        "through Docker's NAT, as this host's address: drop forwarded UDP "
                        "to the VXLAN port (iptables -I DOCKER-USER -p udp --dport 4789 "
                        "-j DROP; docs/docker.md)", name)
        # Kept in the store, not in memory: Join, after an agent restart
        # too, reads the gateway this host's Docker network asked for.
        await self.store.put(key, json.dumps({"network": name, "gateway": gateway},
                                             sort_keys=True).encode())
        return {}

    async def _get_network(self, name: str) -> NetworkRecord | None:
        kv = await self.store.get(cluster.network_key(name))
        return None if kv is None else cluster.checked(NetworkRecord, kv)

    async def delete_network(self, req: dict[str, Any]) -> dict[str, Any]:
        # The store network stays: other hosts' Docker networks use it.
        with suppress(ConfigError):
            await self.store.delete(cluster.docker_network_key(self.host, _network_id(req)))
        return {}

    async def _gateway(self, req: dict[str, Any]) -> str:
        """The gateway the Docker network of req's NetworkID asked for on
        this host (none for one the store does not know)."""
        try:
            kv = await self.store.get(cluster.docker_network_key(self.host, _network_id(req)))
        except ConfigError:
            return GATEWAYS[0]
        try:
            gateway = json.loads(kv.value)["gateway"] if kv is not None else GATEWAYS[0]
        except (ValueError, KeyError, TypeError):
            gateway = GATEWAYS[0]
        return gateway if gateway in GATEWAYS else GATEWAYS[0]

    # Endpoints ----------------------------------------------------------------

    async def create_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        eid = _endpoint_id(req)
        iface = req.get("Interface") or {}
        if not isinstance(iface, dict) or not iface.get("Address"):
            raise ConfigError("no IPv4 address for the container: create the network "
                              "with --ipam-driver uvxlan")
        if iface.get("AddressIPv6"):
            raise ConfigError("IPv6 is not supported")
        try:
            ip = ipaddress.IPv4Interface(str(iface["Address"]))
        except ValueError:
            raise ConfigError(f"address {iface['Address']!r} is not IPv4") from None
        net = await self._network_of(ip.network)
        given = iface.get("MacAddress") or ""
        mac = cluster.check_mac(given) if given else derived_mac(ip.ip)
        kv = await self.store.get(cluster.ipam_key(net.name, str(ip.ip)))
        held = None if kv is None else _reserved_for(kv.value, self.host)
        if kv is None or held is None or _docker_id(held) not in (None, eid):
            raise ClusterError(f"address {ip.ip} is not reserved for this host in network "
                               f"{net.name}")
        for e in await _endpoints_of(self.store, net.name):
            if e.mac == mac:
                raise ClusterError(f"mac {mac} is already used by endpoint {e.name} in "
                                   f"network {net.name}")
        ep = DockerEndpoint(eid, net.name, ip, mac)
        await self._note(ep)
        self.endpoints[eid] = ep
        # A MAC Docker gave must not be answered (libnetwork refuses a
        # change); otherwise ours, derived from the address as the store's.
        return {} if given else {"Interface": {"MacAddress": mac}}

    async def endpoint_info(self, req: dict[str, Any]) -> dict[str, Any]:
        ep = self.endpoints.get(_endpoint_id(req))
        if ep is None:
            return {"Value": {}}
        return {"Value": {"uvxlan.network": ep.network, "uvxlan.endpoint": ep.name,
                          "uvxlan.tap": ep.srcname}}

    async def _note(self, ep: DockerEndpoint) -> None:
        """Keep what is known of ep in its address's reservation."""
        key = cluster.ipam_key(ep.network, str(ep.ip.ip))
        kv = await self.store.get(key)
        held = None if kv is None else _reserved_for(kv.value, self.host)
        if (kv is None or held is None or _docker_id(held) not in (None, ep.id)
                or not await self.store.cas(key, _reservation(self.host, ep),
                                            mod_revision=kv.mod_revision)):
            raise ClusterError(f"address {ep.ip.ip} is no longer reserved for endpoint "
                               f"{ep.name}")

    async def _reservations(self, eid: str | None = None, network: str | None = None
                            ) -> list[tuple[KV, str, dict[str, Any]]]:
        """This host's reservations that name a Docker endpoint (that one
        alone, if eid; in one network, if given): (key, network, what they
        hold)."""
        kvs, _ = await self.store.list(cluster.IPAM + (f"{network}/" if network else ""))
        out = []
        for kv in kvs:
            held = _reserved_for(kv.value, self.host)
            found = None if held is None else _docker_id(held)
            if found is not None and eid in (None, found):
                assert held is not None
                out.append((kv, kv.key[len(cluster.IPAM):].split("/", 1)[0], held))
        return out

    async def resume(self, eid: str | None = None) -> None:
        """Take up the endpoints Docker set up with the agent before this
        one (every one, or eid's) that have no record yet: known again,
        and placed once found in their sandbox."""
        networks = {n.name: n for n in await cluster.list_networks(self.store)}
        for kv, network, held in await self._reservations(eid):
            net, docker = networks.get(network), held["docker"]
            if net is None or not isinstance(docker.get("id"), str):
                continue
            try:
                ip = ipaddress.IPv4Interface((kv.key.rsplit("/", 1)[1], net.network.prefixlen))
                ep = DockerEndpoint(docker["id"], network, ip, cluster.check_mac(docker["mac"]),
                                    rules.netns(docker["netns"]) if docker.get("netns") else None)
            except (ValueError, KeyError, TypeError):
                continue
            if await self.store.get(cluster.endpoint_key(network, ep.name)) is not None:
                continue                               # placed: the controller has it
            self.endpoints[ep.id] = ep
            if ep.netns is not None and ep.id not in self._placing:
                log.info("docker plugin: endpoint %s: taken up where the last agent was",
                         ep.name)
                self._placing[ep.id] = asyncio.create_task(self._place(ep))

    async def join(self, req: dict[str, Any]) -> dict[str, Any]:
        eid = _endpoint_id(req)
        netns = rules.check("SandboxKey", rules.netns, req.get("SandboxKey"))
        ep = self.endpoints.get(eid)
        if ep is None:
            # CreateEndpoint was answered by the agent before this one.
            await self.resume(eid)
            ep = self.endpoints.get(eid)
        if ep is None:
            raise ClusterError(f"endpoint {eid[:ID_SHORT]} is unknown to this agent: run the "
                               "container again")
        net = await cluster.get_network(self.store, ep.network)
        gateway = await self._gateway(req)
        # Noted before the TAP is made: an agent restarted from here on
        # finds the TAP in the sandbox and places it (resume).
        ep.netns = netns
        await self._note(ep)
        await asyncio.to_thread(self.taps.make, ep.srcname, ep.mac, net.mtu)
        old = self._placing.pop(eid, None)
        if old is not None:
            old.cancel()
        self._placing[eid] = asyncio.create_task(self._place(ep))
        # No Gateway of ours: by default Docker's gateway service is off
        # too (no docker_gwbridge), and containers reach their network
        # only; with -o uvxlan.gateway=gwbridge libnetwork gives the
        # container docker_gwbridge for the default route (its
        # sandbox.needDefaultGW: no endpoint with a gateway).
        return {"InterfaceName": {"SrcName": ep.srcname, "DstPrefix": DST_PREFIX},
                "DisableGatewayService": gateway == "none"}

    async def _place(self, ep: DockerEndpoint) -> None:
        """Once Docker has moved the TAP into the sandbox, renamed it,
        addressed it and set it up, write the endpoint record: the
        controller then adopts the TAP there (before that, it would make a
        TAP of its own in the sandbox)."""
        assert ep.netns is not None
        deadline = time.monotonic() + PLACE_TIMEOUT_S
        try:
            while True:
                try:
                    found = await asyncio.to_thread(self.taps.find, ep.netns, ep.mac)
                except UvxlanError:
                    found = None               # the sandbox not there yet, or gone
                if (found is not None and found["ifname"] != ep.srcname and found["up"]
                        and str(ep.ip) in found["addresses"]):
                    break
                if time.monotonic() > deadline:
                    log.error("docker plugin: endpoint %s: Docker did not set up %s in %s "
                              "within %.0f s; not placed", ep.name, ep.srcname, ep.netns,
                              PLACE_TIMEOUT_S)
                    return
                await asyncio.sleep(PLACE_POLL_S)
            record = await place(self.store, ep, found["ifname"], self.host)
            log.info("docker plugin: endpoint %s/%s: %s %s as %s in %s", record.network,
                     record.name, record.ip, record.mac, record.ifname, record.netns)
        except UvxlanError as exc:
            log.error("docker plugin: endpoint %s: not placed: %s", ep.name, exc)
        finally:
            if self._placing.get(ep.id) is asyncio.current_task():
                del self._placing[ep.id]

    async def leave(self, req: dict[str, Any]) -> dict[str, Any]:
        # Docker moves the TAP back out of the container after this call;
        # DeleteEndpoint, which follows, removes it.
        task = self._placing.pop(_endpoint_id(req), None)
        if task is not None:
            task.cancel()
        return {}

    async def delete_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        eid = _endpoint_id(req)
        task = self._placing.pop(eid, None)
        if task is not None:
            task.cancel()
        ep = self.endpoints.pop(eid, None)
        name = endpoint_name(eid)
        networks = ([ep.network] if ep is not None else
                    [n.name for n in await cluster.list_networks(self.store)])
        for network in networks:
            kv = await self.store.get(cluster.endpoint_key(network, name))
            if kv is None:
                continue
            record = cluster.checked(EndpointRecord, kv)
            if record.host != self.host:
                continue
            # The address stays reserved for ReleaseAddress, which follows.
            await self.store.txn(
                compare=[(kv.key, kv.mod_revision)], delete=[kv.key],
                put=[(cluster.ipam_key(network, str(record.address.ip)),
                      _reservation(self.host), 0)])
            log.info("docker plugin: endpoint %s/%s removed", network, name)
        for kv, _, _ in await self._reservations(eid, None if ep is None else ep.network):
            # Never placed: the reservation forgets it, for ReleaseAddress.
            await self.store.cas(kv.key, _reservation(self.host),
                                 mod_revision=kv.mod_revision)
        srcname = tap_name(eid)
        # The controller removes an adopted TAP on the record's deletion;
        # one it never adopted (Docker failed before it was placed) goes here.
        deadline = time.monotonic() + REMOVE_WAIT_S
        while await asyncio.to_thread(self.taps.exists, srcname):
            if time.monotonic() > deadline:
                await asyncio.to_thread(self.taps.remove, srcname)
                break
            await asyncio.sleep(PLACE_POLL_S * 5)
        return {}


async def place(store: Store, ep: DockerEndpoint, ifname: str, host: str) -> EndpointRecord:
    """Write ep's endpoint record (host, the sandbox, the name Docker gave
    the TAP) in place of its address reservation, as one transaction that
    compares the network (as attach does) and the reservation."""
    assert ep.netns is not None

    async def attempt() -> EndpointRecord | None:
        net_kv = await store.get(cluster.network_key(ep.network))
        if net_kv is None:
            raise ClusterError(f"network {ep.network} is gone from the store")
        ep_key = cluster.endpoint_key(ep.network, ep.name)
        ip_key = cluster.ipam_key(ep.network, str(ep.ip.ip))
        ip_kv = await store.get(ip_key)
        held = None if ip_kv is None else _reserved_for(ip_kv.value, host)
        if ip_kv is None or held is None or _docker_id(held) != ep.id:
            raise ClusterError(f"address {ep.ip.ip} is no longer reserved for it")
        for e in await _endpoints_of(store, ep.network):
            if e.mac == ep.mac and e.name != ep.name:
                raise ClusterError(f"mac {ep.mac} is already used by endpoint {e.name}")
        record = EndpointRecord(name=ep.name, network=ep.network, host=host, netns=str(ep.netns),
                                ifname=ifname, mac=ep.mac, ip=str(ep.ip), created=time.time())
        cluster.validate(record)
        ok = await store.txn(
            compare=[(net_kv.key, net_kv.mod_revision), (ep_key, 0),
                     (ip_key, ip_kv.mod_revision)],
            put=[(ep_key, cluster.encode(record), 0),
                 (ip_key, json.dumps({"endpoint": ep.name}).encode(), 0),
                 (net_kv.key, net_kv.value, 0)])
        return record if ok else None

    return await cluster._retrying(f"place endpoint {ep.name}", attempt)


async def _endpoints_of(store: Store, network: str) -> list[EndpointRecord]:
    kvs, _ = await store.list(f"{cluster.ENDPOINTS}{network}/")
    return cluster._decode_all(EndpointRecord, kvs)


def _options(given: object, known: tuple[str, ...], flag: str) -> dict[str, str]:
    """The uvxlan options of a request: any other refused, naming it."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ConfigError(f"{flag} options: expected KEY=VALUE pairs")
    for key in given:
        if key not in known:
            raise ConfigError(f"unknown option {flag} {key!s:.64} (known: "
                              f"{', '.join(known)})")
    return {k: str(v) for k, v in given.items()}


def _int_option(opts: dict[str, str], key: str, rule: Callable[[object], object]
                ) -> int | None:
    if key not in opts:
        return None
    try:
        value = int(opts[key])
    except ValueError:
        raise ConfigError(f"-o {key}={opts[key]!s:.64}: expected a whole number") from None
    rules.check(f"-o {key}", rule, value)
    return value


def _pool(pool_id: object) -> ipaddress.IPv4Network:
    """A pool id: the subnet RequestPool answered."""
    try:
        return ipaddress.IPv4Network(str(pool_id))
    except ValueError:
        raise ConfigError(f"pool {pool_id!s:.64} is not one of uvxlan's") from None


def _address(text: object) -> ipaddress.IPv4Address | None:
    if not text:
        return None
    try:
        return ipaddress.IPv4Interface(str(text)).ip
    except ValueError:
        raise ConfigError(f"address {text!s:.64} is not IPv4") from None


def _network_id(req: dict[str, Any]) -> str:
    nid = req.get("NetworkID")
    if not isinstance(nid, str) or not 0 < len(nid) <= 128 or not all(
            c in "0123456789abcdef" for c in nid):
        raise ConfigError(f"network id {nid!r:.80} is not Docker's")
    return nid


def _endpoint_id(req: dict[str, Any]) -> str:
    eid = req.get("EndpointID")
    if not isinstance(eid, str) or len(eid) < ID_SHORT or not all(
            c in "0123456789abcdef" for c in eid):
        raise ConfigError(f"endpoint id {eid!r:.80} is not Docker's")
    return eid


# The HTTP server ---------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _response(status: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data


def _error(status: int, why: str) -> bytes:
    return _response(status, {"Err": f"uvxlan: {why}"})


def parse_head(head: bytes) -> tuple[str, int] | bytes:
    """(method, body length) of a request head, or the error response."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return _error(400, "the request is not ASCII")
    line, _, rest = text.partition("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return _error(400, "expected: POST /METHOD HTTP/1.1")
    if parts[0] != "POST":
        return _error(405, "only POST is served")
    length = 0
    for header in rest.split("\r\n"):
        name, _, value = header.partition(":")
        name = name.strip().lower()
        if name == "transfer-encoding":
            return _error(411, "send the body with a Content-Length")
        if name == "content-length":
            if not value.strip().isdigit():
                return _error(400, "bad Content-Length")
            length = int(value)
    if length > BODY_MAX:
        return _error(413, f"body larger than {BODY_MAX} bytes")
    return parts[1].lstrip("/"), length


class PluginServer(BoundedServer):
    """The plugin's socket on the event loop, bounded as the metrics are."""

    def __init__(self, sock: socket.socket, plugin: Plugin) -> None:
        super().__init__(sock)
        self.path = sock.getsockname()
        self.inode = os.stat(self.path).st_ino
        self.plugin = plugin

    async def start(self) -> None:
        try:
            await self.plugin.resume()
        except UvxlanError as exc:
            # Docker's calls find them later (Join, DeleteEndpoint).
            log.warning("docker plugin: endpoints set up before this agent not taken up: %s",
                        exc)
        await self.serve(HEAD_MAX)

    async def close(self) -> None:
        """Stop serving; the socket file goes (if it is still ours)."""
        await self.stop()
        await self.plugin.close()
        with suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)

    def refusal(self, status: int, why: str) -> bytes:
        return _error(status, why)

    async def read(self, reader: asyncio.StreamReader) -> tuple[str, bytes] | bytes:
        """(method, body), or the refusal of a head parse_head refused."""
        head = await reader.readuntil(b"\r\n\r\n")
        parsed = parse_head(head[:-4])
        if isinstance(parsed, bytes):
            return parsed
        method, length = parsed
        return method, await reader.readexactly(length)

    async def reply(self, request: tuple[str, bytes] | bytes) -> bytes:
        if isinstance(request, bytes):
            return request
        method, body = request
        try:
            call = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            return _error(400, "the body is not JSON")
        answer = await self.plugin.call(method, call)
        if answer is None:
            return _error(404, f"{method[:64]!r} is not served here")
        return _response(200, answer)


def bind_plugin(path: str) -> socket.socket:
    """The plugin socket at path, bound and listening, root's only (0600):
    made before anything else, so a path in use is one line at start.  A
    stale socket of a dead agent is replaced; a live one is refused."""
    if not path.startswith("/"):
        raise ConfigError(f"docker_plugin {path!r}: must be an absolute path")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ConfigError(f"docker_plugin {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)                 # nobody answers: a dead agent's
        else:
            raise ConfigError(f"docker_plugin {path}: another process serves it")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"docker_plugin {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    return sock
