"""The agent's configuration file (TOML), parsed and checked up front.

Static configuration is how a uvxlan host joins peers that no store knows,
such as hosts running Linux's own vxlan device.  Every problem is reported
as one ``ConfigError`` line naming the file and the field.

    [host]
    name = "h1"                 # names the control socket
    underlay = "10.77.0.1"      # address to bind and send from
    port = 4789                 # VXLAN UDP port (8472 for older Linux peers)
    mtu = 1500                  # underlay MTU; endpoints get mtu - 50
                                # (left out: the MTU of underlay's interface)

    [[network]]
    name = "net1"
    vni = 256
    remotes = ["10.77.0.2"]     # flood list: "ip" or "ip:port"
    static = [{ mac = "02:42:0a:00:00:03", remote = "10.77.0.2" }]
    admit = "members"           # VXLAN from remotes and static peers only;
                                # "any": from anyone (Linux's vxlan)
    learning = true             # learn MACs behind peers and containers
    gbp = false                 # VXLAN-GBP: carry endpoints' groups, apply policy
    policy_default = "allow"    # with gbp: pairs of groups without a rule
    policy = [{ from = 10, to = 20, action = "deny" }]

    [[endpoint]]
    network = "net1"
    netns = "c1"                # an existing named network namespace
    address = "10.0.0.2/24"
    # ifname = "eth0", mac = derived from the address, gateway = none,
    # group = 0 (its VXLAN-GBP group, 0..65535)
"""

from __future__ import annotations

import grp
import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from uvxlan import gbp as groups
from uvxlan import validate
from uvxlan.control import CONTROL_DIR
from uvxlan.errors import ConfigError
from uvxlan.offload import MODES as OFFLOAD_MODES
from uvxlan.proto import ENCAP_OVERHEAD, PORT_IANA, SRC_PORT_MAX, SRC_PORT_MIN, derived_mac
from uvxlan.validate import Bounds

T = TypeVar("T")

ARP_SUPPRESSION = ("answer", "answer-only", "off")
# Who may send into a network: its members only (the default: uvxlan knows
# them), or anyone (Linux's vxlan; flood-and-learn with unknown peers).
ADMIT = ("members", "any")


def setting(default: T, bounds: Bounds | None = None, *, choices: tuple[str, ...] = (),
            rule: Callable[[object], object] | None = None) -> T:
    """A [host] setting: its one default, and the bounds (whole numbers),
    choices or rule (``uvxlan.validate``) a value in the file must meet."""
    return field(default=default,
                 metadata={"bounds": bounds, "choices": choices, "rule": rule})


# Where dockerd looks for the plugin called uvxlan (moby pkg/plugins discovery).
DOCKER_PLUGIN = "/run/docker/plugins/uvxlan.sock"


def _socket_path(path: object) -> str:
    """An absolute path for a unix socket (108 bytes with its NUL), or ""."""
    if path == "":
        return ""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ConfigError(f"{path!r}: expected an absolute path")
    if len(path.encode()) > 107:
        raise ConfigError(f"{path!r}: longer than a unix socket's path may be (107 bytes)")
    return path


def _group(name: object) -> str:
    """A group of this host, or "" for none."""
    if name == "":
        return ""
    try:
        grp.getgrnam(str(name))
    except KeyError:
        raise ConfigError(f"no group {name!r} on this host") from None
    return str(name)


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
    admit: str = "members"          # one of ADMIT
    learning: bool = True           # learn MACs behind remotes and ports
    gbp: bool = False               # VXLAN-GBP: groups on the wire, policy (uvxlan.gbp)
    policy: groups.Policy = field(default_factory=groups.Policy)   # keys policy(_default)

    @property
    def peers(self) -> list[str]:
        """The VTEP addresses admitted: its remotes and static entries'."""
        ips = [r.ip for r in self.remotes] + [s.remote.ip for s in self.static]
        return list(dict.fromkeys(ips))


@dataclass
class EndpointConfig:
    network: str
    netns: str
    address: ipaddress.IPv4Interface
    mac: str
    ifname: str = "eth0"
    gateway: str | None = None
    group: int = 0                  # VXLAN-GBP group (uvxlan.gbp)


@dataclass(frozen=True)
class DatapathConfig:
    """What the C datapath is built with (``struct uvx_config``), field for
    field; ``native.Datapath`` takes it whole.  Its defaults are the host
    configuration's too (``HostConfig`` refers to them)."""

    local_ip: str
    dst_port: int = PORT_IANA
    src_port_min: int = SRC_PORT_MIN
    src_port_max: int = SRC_PORT_MAX
    ageing_ms: int = 300_000        # Linux's and 802.1D's default
    learn_limit: int = 1024         # learned entries per VNI; 0: no cap
    fdb_capacity: int = 65536       # entries in the pool, static + learned
    batch: int = 32                 # frames per read
    accept_reserved: bool = False
    udp_csum: bool = False
    # Without UDP GRO: how long the receive side waits for the rest of a
    # TCP burst before writing what it joined (0: never waits).
    rx_linger_us: int = 50
    # The largest IPv4 packet the underlay carries; a frame whose VXLAN
    # datagram would be larger is dropped (frag_needed), never fragmented.
    underlay_mtu: int = 1500


@dataclass
class HostConfig:
    """The [host] table: each field is one key of the file, with its only
    default and its bounds.  ``parse`` reads them from here."""

    underlay: str
    name: str = setting("uvxlan", rule=validate.name)
    port: int = setting(DatapathConfig.dst_port, validate.PORT)
    # endpoints get mtu - ENCAP_OVERHEAD
    mtu: int = setting(DatapathConfig.underlay_mtu, validate.UNDERLAY_MTU)
    ageing: float = setting(DatapathConfig.ageing_ms / 1000, Bounds(1, 1_000_000))
    learn_limit: int = setting(DatapathConfig.learn_limit, Bounds(0, 1 << 24))
    src_ports: tuple[int, int] = setting(
        (DatapathConfig.src_port_min, DatapathConfig.src_port_max), validate.PORT)
    accept_reserved: bool = setting(DatapathConfig.accept_reserved)
    udp_checksum: bool = setting(DatapathConfig.udp_csum)
    batch: int = setting(DatapathConfig.batch, Bounds(1, 64))     # the C side's UVX_BATCH_MAX
    control_dir: str = setting(CONTROL_DIR)
    # The group whose members may use the control socket (mode 0660);
    # empty: root only (0600).
    control_group: str = setting("", rule=_group)
    offload: str = setting("auto", choices=OFFLOAD_MODES)
    send_sockets: int = setting(8, Bounds(1, 64))
    threads: bool = setting(True)
    rx_linger_us: int = setting(DatapathConfig.rx_linger_us, Bounds(0, 1000))
    # CPUs the agent (and its datapath threads) may run on; empty: any.
    # Sharing a core with the containers saves a cross-core wake-up per
    # hop: lower latency, less parallelism.
    cpus: tuple[int, ...] = setting(())
    # Frames a container's eth0 may queue for the agent (its txqueuelen):
    # room for the agent's time off the CPU, where the kernel's default
    # (1000) dropped 1-2 % of 64-byte packets at 100 kpps here.
    tap_queue: int = setting(10000, Bounds(1, 1_000_000))
    # With a cluster store (uvxlan agent --store): how ARP requests for
    # addresses the store knows are treated, the TTL of the host's lease,
    # and the period of full reconciles.
    arp_suppression: str = setting("answer", choices=ARP_SUPPRESSION)
    lease_ttl: float = setting(10.0, Bounds(2, 3600))
    resync: float = setting(30.0, Bounds(1, 86400))
    # With a store: seconds an endpoint's netns may be gone before the
    # agent deletes its record (uvxlan.collect); 0: never.
    collect_after: float = setting(60.0, Bounds(0, 31_536_000))

    # Prometheus metrics (GET /metrics), "IP:PORT"; empty: not served.
    # They show the host's networks, containers and peers: an address
    # beyond loopback is refused unless metrics_public says it is meant.
    metrics: str = setting("", rule=validate.listen)
    metrics_public: bool = setting(False)
    # Docker's network and IPAM driver (uvxlan.docker) on this unix
    # socket; empty: not served.  Needs a cluster store.
    docker_plugin: str = setting("", rule=_socket_path)

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
            underlay_mtu=self.mtu,
        )

    @property
    def metrics_beyond_loopback(self) -> bool:
        """Metrics served where other hosts may reach them."""
        return bool(self.metrics) and not ipaddress.ip_address(
            self.metrics.rpartition(":")[0].strip("[]")).is_loopback

    @property
    def endpoint_mtu(self) -> int:
        return self.mtu - ENCAP_OVERHEAD


@dataclass
class AgentConfig:
    host: HostConfig
    networks: list[NetworkConfig]
    endpoints: list[EndpointConfig]
    # [host] mtu left out: the agent takes the MTU of the interface holding
    # the underlay address, read at start (uvxlan.underlay.settle_mtu).
    derive_mtu: bool = False

    def network(self, name: str) -> NetworkConfig:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)


def _keys(cls: Any) -> set[str]:
    return {f.name for f in fields(cls)}


def _default(cls: Any, name: str) -> Any:
    return next(f.default for f in fields(cls) if f.name == name)


_HOST_KEYS = _keys(HostConfig)
_NETWORK_KEYS = _keys(NetworkConfig) | {"policy_default"}
_STATIC_KEYS = {"mac", "remote", "port"}
_ENDPOINT_KEYS = _keys(EndpointConfig)


def _one_of(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


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

    def int_(self, key: str, default: int | None, bounds: Bounds) -> int:
        v = self.table.get(key, default)
        if v is None:
            raise self.fail(key, "is required")
        if not validate.is_int(v):
            raise self.fail(key, f"must be a whole number, not {v!r}")
        if v not in bounds:
            raise self.fail(key, f"{v} is outside {bounds}")
        assert isinstance(v, int)
        return v

    def bool_(self, key: str, default: bool) -> bool:
        v = self.table.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, not {v!r}")
        return v

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        v = self.str_(key, default)
        if v not in choices:
            raise self.fail(key, f"{v!r} is not {_one_of(choices)}")
        return v

    def rule(self, key: str, rule: Callable[[object], T], default: str | None = None) -> T:
        """A string that must meet a rule of ``uvxlan.validate``."""
        v = self.str_(key, default)
        try:
            return rule(v)
        except ConfigError as exc:
            raise self.fail(key, str(exc)) from None

    def list_(self, key: str) -> list[Any]:
        v = self.table.get(key, [])
        if not isinstance(v, list):
            raise self.fail(key, "must be a list")
        return v

    def setting(self, f: Field[Any]) -> Any:
        """One [host] setting, read as its field (type, default, bounds) says."""
        default, bounds = f.default, f.metadata["bounds"]
        if isinstance(default, bool):
            return self.bool_(f.name, default)
        if isinstance(default, int):
            return self.int_(f.name, default, bounds)
        if isinstance(default, float):          # whole seconds in the file
            return float(self.int_(f.name, int(default), bounds))
        if isinstance(default, str):
            choices, rule = f.metadata["choices"], f.metadata["rule"]
            if choices:
                return self.choice(f.name, choices, default)
            return self.rule(f.name, rule, default) if rule else self.str_(f.name, default)
        raise TypeError(f"[host] {f.name}: no reader for {default!r}")  # pragma: no cover


def _src_ports(h: _Reader, f: Field[Any]) -> tuple[int, int]:
    default: tuple[int, int] = f.default  # type: ignore[assignment]
    ports = h.list_(f.name) or list(default)
    bounds: Bounds = f.metadata["bounds"]
    if (len(ports) != 2 or not all(validate.is_int(p) for p in ports)
            or not bounds.lo <= ports[0] <= ports[1] <= bounds.hi):
        raise h.fail(f.name, f"{ports!r} is not [low, high] within {bounds}")
    return (ports[0], ports[1])


def _cpus(h: _Reader, f: Field[Any]) -> tuple[int, ...]:
    cpus = h.list_(f.name)
    if not all(validate.is_int(c) and c >= 0 for c in cpus):
        raise h.fail(f.name, f"{cpus!r} is not a list of CPU numbers")
    usable = os.sched_getaffinity(0)
    if set(cpus) - usable:
        raise h.fail(f.name, f"CPU {min(set(cpus) - usable)} is not available here "
                     f"(available: {', '.join(map(str, sorted(usable)))})")
    return tuple(sorted(set(cpus)))


# [host] settings that are not one number, flag or string.
_READERS: dict[str, Callable[[_Reader, Field[Any]], Any]] = {
    "underlay": lambda h, f: h.rule(f.name, validate.ipv4),
    "src_ports": _src_ports,
    "cpus": _cpus,
}


def _remote(where: str, text: Any, default_port: int) -> Remote:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: {text!r} is not \"ip\" or \"ip:port\"")
    ip, _, port = text.partition(":")
    try:
        ip = str(ipaddress.IPv4Address(ip))
        number = int(port) if port else default_port
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not \"ip\" or \"ip:port\"") from None
    if number not in validate.PORT:
        raise ConfigError(f"{where}: port {number} is outside {validate.PORT}")
    return Remote(ip, number)


def parse(data: dict[str, Any], source: str = "config",
          host_overrides: dict[str, Any] | None = None) -> AgentConfig:
    """host_overrides: [host] keys given on the command line, which win."""
    if host_overrides:
        data = dict(data)
        data["host"] = {**(data.get("host") or {}), **host_overrides}
    top = _Reader(source, data, {"host", "network", "endpoint"})
    h = _Reader(f"{source}: [host]", data.get("host"), _HOST_KEYS)
    host = HostConfig(**{f.name: _READERS.get(f.name, _Reader.setting)(h, f)
                         for f in fields(HostConfig)})

    if host.metrics_beyond_loopback and not host.metrics_public:
        raise h.fail("metrics", f"{host.metrics} is not a loopback address: metrics show "
                     "this host's networks, containers and peers to whoever reaches it; "
                     "metrics_public = true (--metrics-public) serves them there")

    networks: list[NetworkConfig] = []
    for i, raw in enumerate(top.list_("network")):
        n = _Reader(f"{source}: network #{i + 1}", raw, _NETWORK_KEYS)
        name = n.rule("name", validate.name)
        n.where = f"{source}: network {name!r}"
        net = NetworkConfig(name=name, vni=n.int_("vni", None, validate.VNI),
                            admit=n.choice("admit", ADMIT, _default(NetworkConfig, "admit")),
                            learning=n.bool_("learning", _default(NetworkConfig, "learning")),
                            gbp=n.bool_("gbp", _default(NetworkConfig, "gbp")))
        if n.has("policy") or n.has("policy_default"):
            if not net.gbp:
                raise n.fail("policy", "applies only with gbp = true")
            net.policy = groups.policy_from(n.table.get("policy_default", groups.DEFAULT_ACTION),
                                         n.list_("policy"), f"{n.where}: policy")
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
                mac=s.rule("mac", validate.mac),
                remote=Remote(s.rule("remote", validate.ipv4),
                              s.int_("port", host.port, validate.PORT)),
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
        address = e.rule("address", validate.interface)
        ep = EndpointConfig(
            network=network,
            netns=e.rule("netns", validate.netns),
            address=address,
            mac=e.rule("mac", validate.mac) if e.has("mac") else derived_mac(address.ip),
            ifname=e.rule("ifname", validate.ifname, _default(EndpointConfig, "ifname")),
            gateway=e.rule("gateway", validate.ipv4) if e.has("gateway") else None,
            group=groups.group(e.table.get("group", 0), f"{e.where}: group"),
        )
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
        if ep.group and not owner.gbp:
            raise e.fail("group", f"applies only in a network with gbp = true ({network!r})")
        if any(s.mac == ep.mac for s in owner.static):
            raise e.fail("mac", f"{ep.mac} is also a static remote entry in {network!r}")
        endpoints.append(ep)
    return AgentConfig(host=host, networks=networks, endpoints=endpoints,
                       derive_mtu=not h.has("mtu"))


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
