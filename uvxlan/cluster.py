"""The cluster's state in the store: hosts, networks and endpoints.

What Docker's overlay driver kept in consul, kept here in a ``Store``
(``uvxlan.store``).  Every value is one JSON object; the layout:

    /uvxlan/hosts/HOST                  HostRecord      under the agent's lease
    /uvxlan/networks/NAME               NetworkRecord
    /uvxlan/endpoints/NETWORK/NAME      EndpointRecord  (the desired endpoint)
    /uvxlan/ipam/NETWORK/IP             endpoint NAME   (the address is taken)
    /uvxlan/status/HOST/NETWORK/NAME    EndpointStatus  under the agent's lease

Writers keep the invariants with transactions (``Store.txn``): a network's
name, VNI and subnet are unique, an endpoint's IP and MAC unique in its
network.  The CLI writes networks and endpoints; the agent of HOST reads
everything, realises the endpoints whose ``host`` is HOST, and writes
their status back.  Agents never write networks or endpoints.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from uvxlan.errors import StoreError

ROOT = "/uvxlan/"
HOSTS = ROOT + "hosts/"
NETWORKS = ROOT + "networks/"
ENDPOINTS = ROOT + "endpoints/"
IPAM = ROOT + "ipam/"
STATUS = ROOT + "status/"

VNI_FIRST = 256                      # allocated VNIs start here, as Docker's
VNI_MAX = (1 << 24) - 1


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

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


@dataclass(frozen=True)
class EndpointRecord:
    """A container's interface on a network, as the user asked for it."""

    name: str
    network: str
    host: str              # the agent that realises it
    netns: str             # the container's network namespace (by name)
    ifname: str            # inside the netns, eth0 by default
    mac: str               # lower-case aa:bb:cc:dd:ee:ff
    ip: str                # the address with the network's prefix, 10.0.0.2/24
    created: float = 0.0

    @property
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


def decode(kind: type[R], value: bytes, key: str = "") -> R:
    """A record from its stored bytes; StoreError if it is not one (a
    key written by something else, or by a newer uvxlan)."""
    try:
        data: Any = json.loads(value)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        names = {f.name for f in fields(kind)}
        return kind(**{k: v for k, v in data.items() if k in names})
    except (ValueError, TypeError) as exc:
        raise StoreError(f"store key {key or '?'}: not a {kind.__name__}: {exc}") from None
