"""The agent's configuration file (TOML), parsed and checked up front.

Static configuration is how a uvxlan host joins peers that no store knows,
such as hosts running Linux's own vxlan device.  Every problem is reported
as one ``ConfigError`` line naming the file and the field.

    [host]
    name = "h1"                 # names the control socket
    underlay = "10.77.0.1"      # address to bind and send from
    port = 4789                 # VXLAN UDP port (8472 for older Linux peers)
    mtu = 1500                  # underlay MTU; endpoints get mtu - 50

    [[network]]
    name = "net1"
    vni = 256
    remotes = ["10.77.0.2"]     # flood list: "ip" or "ip:port"
    static = [{ mac = "02:42:0a:00:00:03", remote = "10.77.0.2" }]

    [[endpoint]]
    network = "net1"
    netns = "c1"                # an existing named network namespace
    address = "10.0.0.2/24"
    # ifname = "eth0", mac = derived from the address, gateway = none
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from uvxlan.errors import ConfigError
from uvxlan.offload import MODES as OFFLOAD_MODES
from uvxlan.proto import PORT_IANA, VNI_MAX, mac_to_bytes, mac_to_str

ENCAP_OVERHEAD = 50      # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")

_HOST_KEYS = {"name", "underlay", "port", "mtu", "ageing", "learn_limit",
              "src_ports", "accept_reserved", "udp_checksum", "batch",
              "control_dir", "offload", "send_sockets", "threads",
              "arp_suppression", "lease_ttl", "resync", "rx_linger_us", "cpus",
              "tap_queue"}
_NETWORK_KEYS = {"name", "vni", "remotes", "static"}
_STATIC_KEYS = {"mac", "remote", "port"}
_ENDPOINT_KEYS = {"network", "netns", "ifname", "mac", "address", "gateway"}


@dataclass(frozen=True)
class Remote:
    ip: str
    port: int


@dataclass(frozen=True)
class StaticEntry:
    mac: str
    remote: Remote


@dataclass
class NetworkConfig:
    name: str
    vni: int
    remotes: list[Remote] = field(default_factory=list)
    static: list[StaticEntry] = field(default_factory=list)


@dataclass
class EndpointConfig:
    network: str
    netns: str
    address: ipaddress.IPv4Interface
    mac: str
    ifname: str = "eth0"
    gateway: str | None = None


@dataclass(frozen=True)
class DatapathConfig:
    """What the C datapath is built with (``struct uvx_config``), field for
    field; ``native.Datapath`` takes it whole."""

    local_ip: str
    dst_port: int = PORT_IANA
    src_port_min: int = 49152       # RFC 7348 section 5: the dynamic range
    src_port_max: int = 65535
    ageing_ms: int = 300_000        # Linux's and 802.1D's default
    learn_limit: int = 1024         # learned entries per VNI; 0: no cap
    fdb_capacity: int = 65536       # entries in the pool, static + learned
    batch: int = 32                 # frames per read, 1..64
    accept_reserved: bool = False
    udp_csum: bool = False
    rx_linger_us: int = 0


@dataclass
class HostConfig:
    underlay: str
    name: str = "uvxlan"
    port: int = PORT_IANA
    mtu: int = 1500
    ageing: float = 300.0
    learn_limit: int = 1024
    src_ports: tuple[int, int] = (49152, 65535)
    accept_reserved: bool = False
    udp_checksum: bool = False
    batch: int = 32
    control_dir: str = "/run/uvxlan"
    offload: str = "auto"
    send_sockets: int = 8
    threads: bool = True
    # Without UDP GRO: how long the receive side waits for the rest of a
    # TCP burst before writing what it joined (0: never waits).
    rx_linger_us: int = 50
    # CPUs the agent (and its datapath threads) may run on; empty: any.
    # Sharing a core with the containers saves a cross-core wake-up per
    # hop: lower latency, less parallelism.
    cpus: tuple[int, ...] = ()
    # Frames a container's eth0 may queue for the agent (its txqueuelen):
    # room for the agent's time off the CPU, where the kernel's default
    # (1000) dropped 1-2 % of 64-byte packets at 100 kpps here.
    tap_queue: int = 10000
    # With a cluster store (uvxlan agent --store): how ARP requests for
    # addresses the store knows are treated (answer | answer-only | off),
    # the TTL of the host's lease, and the period of full reconciles.
    arp_suppression: str = "answer"
    lease_ttl: float = 10.0
    resync: float = 30.0

    def datapath(self) -> DatapathConfig:
        return DatapathConfig(
            local_ip=self.underlay,
            dst_port=self.port,
            src_port_min=self.src_ports[0],
            src_port_max=self.src_ports[1],
            ageing_ms=int(self.ageing * 1000),
            learn_limit=self.learn_limit,
            batch=self.batch,
            accept_reserved=self.accept_reserved,
            udp_csum=self.udp_checksum,
            rx_linger_us=self.rx_linger_us,
        )

    @property
    def endpoint_mtu(self) -> int:
        return self.mtu - ENCAP_OVERHEAD

    @property
    def control_socket(self) -> str:
        return f"{self.control_dir}/{self.name}.sock"


@dataclass
class AgentConfig:
    host: HostConfig
    networks: list[NetworkConfig]
    endpoints: list[EndpointConfig]

    def network(self, name: str) -> NetworkConfig:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)


def derived_mac(address: ipaddress.IPv4Address) -> str:
    """A locally administered MAC from an IPv4 address, as Docker does:
    02:42 and its 4 bytes (an IPv4Interface gives its address's)."""
    return mac_to_str(b"\x02\x42" + address.packed)


class _Reader:
    """Typed access to one TOML table, with errors that say where."""

    def __init__(self, where: str, table: Any, allowed: set[str]) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        self.where = where
        self.table = table

    def fail(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.table

    def str_(self, key: str, default: str | None = None) -> str:
        v = self.table.get(key, default)
        if v is None:
            raise self.fail(key, "is required")
        if not isinstance(v, str):
            raise self.fail(key, f"must be a string, not {v!r}")
        return v

    def int_(self, key: str, default: int | None, lo: int, hi: int) -> int:
        v = self.table.get(key, default)
        if v is None:
            raise self.fail(key, "is required")
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(key, f"must be a whole number, not {v!r}")
        if not lo <= v <= hi:
            raise self.fail(key, f"{v} is outside {lo}..{hi}")
        return v

    def bool_(self, key: str, default: bool) -> bool:
        v = self.table.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, not {v!r}")
        return v

    def ipv4(self, key: str, default: str | None = None) -> str:
        v = self.str_(key, default)
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise self.fail(key, f"{v!r} is not an IPv4 address") from None

    def mac(self, key: str, default: str | None = None) -> str:
        v = self.str_(key, default)
        try:
            raw = mac_to_bytes(v.lower())
        except ValueError:
            raise self.fail(key, f"{v!r} is not a MAC address") from None
        if raw[0] & 1 or not any(raw):
            raise self.fail(key, f"{v} is not a unicast address")
        return mac_to_str(raw)

    def list_(self, key: str) -> list[Any]:
        v = self.table.get(key, [])
        if not isinstance(v, list):
            raise self.fail(key, "must be a list")
        return v


def _remote(where: str, text: Any, default_port: int) -> Remote:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: {text!r} is not \"ip\" or \"ip:port\"")
    ip, _, port = text.partition(":")
    try:
        ip = str(ipaddress.IPv4Address(ip))
        number = int(port) if port else default_port
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not \"ip\" or \"ip:port\"") from None
    if not 1 <= number <= 65535:
        raise ConfigError(f"{where}: port {number} is outside 1..65535")
    return Remote(ip, number)


def parse(data: dict[str, Any], source: str = "config",
          host_overrides: dict[str, Any] | None = None) -> AgentConfig:
    """host_overrides: [host] keys given on the command line, which win."""
    if host_overrides:
        data = dict(data)
        data["host"] = {**(data.get("host") or {}), **host_overrides}
    top = _Reader(source, data, {"host", "network", "endpoint"})
    h = _Reader(f"{source}: [host]", data.get("host"), _HOST_KEYS)
    host = HostConfig(
        underlay=h.ipv4("underlay"),
        name=h.str_("name", "uvxlan"),
        port=h.int_("port", PORT_IANA, 1, 65535),
        mtu=h.int_("mtu", 1500, 68 + ENCAP_OVERHEAD, 65535),
        ageing=float(h.int_("ageing", 300, 1, 1_000_000)),
        learn_limit=h.int_("learn_limit", 1024, 0, 1 << 24),
        accept_reserved=h.bool_("accept_reserved", False),
        udp_checksum=h.bool_("udp_checksum", False),
        batch=h.int_("batch", 32, 1, 64),
        control_dir=h.str_("control_dir", "/run/uvxlan"),
        offload=h.str_("offload", "auto"),
        send_sockets=h.int_("send_sockets", 8, 1, 64),
        threads=h.bool_("threads", True),
        rx_linger_us=h.int_("rx_linger_us", 50, 0, 1000),
        tap_queue=h.int_("tap_queue", 10000, 1, 1_000_000),
        arp_suppression=h.str_("arp_suppression", "answer"),
        lease_ttl=float(h.int_("lease_ttl", 10, 2, 3600)),
        resync=float(h.int_("resync", 30, 1, 86400)),
    )
    if host.arp_suppression not in ("answer", "answer-only", "off"):
        raise h.fail("arp_suppression",
                     f"{host.arp_suppression!r} is not answer, answer-only or off")
    if host.offload not in OFFLOAD_MODES:
        raise h.fail("offload", f"{host.offload!r} is not auto, off or none")
    if not _NAME.match(host.name):
        raise h.fail("name", f"{host.name!r} is not a valid name")
    cpus = h.list_("cpus")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus):
        raise h.fail("cpus", f"{cpus!r} is not a list of CPU numbers")
    usable = os.sched_getaffinity(0)
    if set(cpus) - usable:
        raise h.fail("cpus", f"CPU {min(set(cpus) - usable)} is not available here "
                     f"(available: {', '.join(map(str, sorted(usable)))})")
    host.cpus = tuple(sorted(set(cpus)))
    ports = h.list_("src_ports") or [49152, 65535]
    if (len(ports) != 2 or not all(isinstance(p, int) for p in ports)
            or not 1 <= ports[0] <= ports[1] <= 65535):
        raise h.fail("src_ports", f"{ports!r} is not [low, high] within 1..65535")
    host.src_ports = (ports[0], ports[1])

    networks: list[NetworkConfig] = []
    for i, raw in enumerate(top.list_("network")):
        n = _Reader(f"{source}: network #{i + 1}", raw, _NETWORK_KEYS)
        name = n.str_("name")
        if not _NAME.match(name):
            raise n.fail("name", f"{name!r} is not a valid name")
        n.where = f"{source}: network {name!r}"
        net = NetworkConfig(name=name, vni=n.int_("vni", None, 1, VNI_MAX))
        for other in networks:
            if other.name == name:
                raise ConfigError(f"{n.where}: declared twice")
            if other.vni == net.vni:
                raise n.fail("vni", f"{net.vni} is also network {other.name!r}'s")
        for text in n.list_("remotes"):
            r = _remote(f"{n.where}: remotes", text, host.port)
            if r in net.remotes:
                raise n.fail("remotes", f"{text} is listed twice")
            net.remotes.append(r)
        for j, st in enumerate(n.list_("static")):
            s = _Reader(f"{n.where}: static #{j + 1}", st, _STATIC_KEYS)
            entry = StaticEntry(
                mac=s.mac("mac"),
                remote=Remote(s.ipv4("remote"), s.int_("port", host.port, 1, 65535)),
            )
            if any(e.mac == entry.mac for e in net.static):
                raise s.fail("mac", f"{entry.mac} has two static entries")
            net.static.append(entry)
        networks.append(net)

    endpoints: list[EndpointConfig] = []
    for i, raw in enumerate(top.list_("endpoint")):
        e = _Reader(f"{source}: endpoint #{i + 1}", raw, _ENDPOINT_KEYS)
        network = e.str_("network")
        if not any(n.name == network for n in networks):
            raise e.fail("network", f"no network named {network!r}")
        text = e.str_("address")
        try:
            address = ipaddress.IPv4Interface(text)
        except ValueError:
            raise e.fail("address", f"{text!r} is not an IPv4 address/prefix") from None
        if "/" not in text:
            raise e.fail("address", f"{text!r} needs a prefix length, e.g. {text}/24")
        ep = EndpointConfig(
            network=network,
            netns=e.str_("netns"),
            address=address,
            mac=e.mac("mac") if e.has("mac") else derived_mac(address),
            ifname=e.str_("ifname", "eth0"),
            gateway=e.ipv4("gateway") if e.has("gateway") else None,
        )
        if not _IFNAME.match(ep.ifname):
            raise e.fail("ifname", f"{ep.ifname!r} is not a valid interface name")
        for prev in endpoints:
            if prev.netns == ep.netns and prev.ifname == ep.ifname:
                raise e.fail("ifname", f"{ep.ifname} in netns {ep.netns!r} is declared twice")
            if prev.network != network:
                continue
            # The address first: a duplicate address also duplicates the MAC
            # derived from it, and the address is what the user wrote.
            if prev.address.ip == ep.address.ip:
                raise e.fail("address", f"{ep.address.ip} is used twice in network {network!r}")
            if prev.mac == ep.mac:
                raise e.fail("mac", f"{ep.mac} is used twice in network {network!r}")
        owner = next(n for n in networks if n.name == network)
        if any(s.mac == ep.mac for s in owner.static):
            raise e.fail("mac", f"{ep.mac} is also a static remote entry in {network!r}")
        endpoints.append(ep)
    return AgentConfig(host=host, networks=networks, endpoints=endpoints)


def load(path: str | Path, host_overrides: dict[str, Any] | None = None) -> AgentConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse(data, str(p), host_overrides)
