"""uvxlan-cni: a CNI plugin (spec 1.0.0 and 1.1.0) that puts containers on
uvxlan networks.

A container runtime (podman, containerd, CRI-O, anything built on libcni)
executes this program with the operation in ``CNI_COMMAND``, the
container in ``CNI_CONTAINERID``, ``CNI_NETNS`` (a path) and
``CNI_IFNAME``, and the network configuration as JSON on stdin; the
answer is JSON on stdout, an error an object with a code.

The plugin does what ``uvxlan attach`` does: it writes the endpoint to the
cluster store and waits until this host's agent reports it ready.  The
agent is the one that makes TAPs (persistent, adopted across its
restarts), so the plugin never touches one; addresses come from the store,
unique across hosts, so there is no ``ipam`` section.  Each attachment is
the endpoint ``cni-TAG-CID-HASH`` (``endpoint_name``): TAG names the CNI
network, HASH the (network, container, interface) triple, so DEL needs no
state of its own and GC knows which endpoints this network made here.

Run with arguments, it is a small admin command: ``uvxlan-cni install``
writes a launcher where runtimes look for plugins.  docs/cni.md has the
configuration, each operation and a podman example.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import socket
import stat
import sys
import sysconfig
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from uvxlan import validate as rules
from uvxlan.control import CONTROL_DIR, query_agent
from uvxlan.errors import (
    ClusterError,
    CniError,
    ConfigError,
    NetlinkError,
    RecordError,
    StoreError,
    StoreUnavailable,
    UvxlanError,
)

T = TypeVar("T")
SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# The spec's error codes (SPEC.md, "Error"), and uvxlan's own from 100.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2        # the message names the key and its value
UNKNOWN_CONTAINER = 3        # the netns is gone: nothing to clean up either
INVALID_ENVIRONMENT = 4      # the message names the variable
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11         # the store does not answer now
NOT_AVAILABLE = 50           # STATUS: cannot serve ADD now
NOT_AVAILABLE_DEGRADED = 51  # STATUS: and existing containers lose traffic (no agent)
CLUSTER_REFUSED = 100        # the store's state refuses: no such network or host, address taken
AGENT_FAILED = 101           # the agent could not make the interface, or not in time
NOT_AS_EXPECTED = 102        # CHECK: the attachment differs from prevResult
INTERNAL_ERROR = 199         # a bug in uvxlan-cni

# Keys the spec gives a meaning (or the runtime inserts), besides uvxlan's
# own: any other key is refused (code 2), so a typo never goes unseen.
SPEC_KEYS = frozenset({"cniVersion", "cniVersions", "name", "type", "disableCheck",
                       "disableGC", "loadOnlyInlinedPlugins", "capabilities",
                       "runtimeConfig", "args", "prevResult", "dns"})
UVXLAN_KEYS = frozenset({"agent", "network", "store", "controlDir", "timeout"})
CAPABILITIES = frozenset({"ips", "mac"})   # CONVENTIONS.md: a fixed address or MAC
DEFAULT_TIMEOUT = 30.0
TIMEOUT_MAX = 600.0
DEL_WAIT_S = 5.0             # DEL waits this long at most for the agent to remove the TAP
NETNS_DIRS = ("/run/netns/", "/var/run/netns/")
# Where runtimes look for plugins: podman's and Debian's containernetworking-plugins.
PLUGIN_DIR = "/usr/lib/cni"
PROGRAM = "uvxlan-cni"


@dataclass(frozen=True)
class NetConf:
    """The network configuration from stdin, checked."""

    cni_version: str
    name: str                       # the CNI network's name
    network: str                    # the uvxlan network (default: name)
    agent: str | None               # this host's agent (default: the one running)
    store: str
    control_dir: str
    timeout: float
    dns: dict[str, Any] = field(default_factory=dict)
    prev_result: dict[str, Any] | None = None
    ip: str | None = None           # runtimeConfig "ips" (capability)
    mac: str | None = None          # runtimeConfig "mac" (capability)
    valid_attachments: frozenset[tuple[str, str]] | None = None   # GC


@dataclass(frozen=True)
class Invocation:
    """The CNI_* environment, checked for the command."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = field(default_factory=dict)


# --- Parsing ----------------------------------------------------------------------


def _default_store() -> str:
    from uvxlan.store import DEFAULT_SQLITE_PATH

    return f"sqlite://{DEFAULT_SQLITE_PATH}"


def parse_env(env: Mapping[str, str]) -> Invocation:
    """The invocation from the environment; CniError 4 naming a variable
    that a command needs and is missing or malformed."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT,
                       f"CNI_COMMAND={command!r}: expected one of {', '.join(COMMANDS)}")
    if command not in ("ADD", "DEL", "CHECK"):
        return Invocation(command)
    cid = env.get("CNI_CONTAINERID", "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cid):
        raise CniError(INVALID_ENVIRONMENT,
                       f"CNI_CONTAINERID={cid!r}: expected a letter or digit, then letters, "
                       "digits, _ . -")
    ifname = env.get("CNI_IFNAME", "")
    try:
        rules.ifname(ifname)
    except ConfigError as exc:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {exc}") from None
    netns = env.get("CNI_NETNS", "")
    if netns and not netns.startswith("/"):
        raise CniError(INVALID_ENVIRONMENT,
                       f"CNI_NETNS={netns!r}: expected the path of a network namespace")
    if not netns and command != "DEL":         # DEL cleans up without one
        raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS is required for {command}")
    return Invocation(command, cid, netns, ifname, parse_args(env.get("CNI_ARGS", "")))


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS: "K=V;K2=V2".  IP and MAC are read (CONVENTIONS.md); other
    keys are for other plugins of a chain, and ignored."""
    out: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _want(conf: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str
          ) -> Any:
    value = conf[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CniError(INVALID_CONFIG, f"network config: {key} {value!r}: expected {what}")
    return value


def _shown(value: object, limit: int = 80) -> str:
    """A value for a one-line message: its JSON, cut short."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_config(data: bytes, command: str) -> NetConf:
    """The network configuration on stdin, checked for command."""
    try:
        conf = json.loads(data)
    except (ValueError, RecursionError):
        raise CniError(DECODE_FAILURE, "network config on stdin is not JSON") from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "network config on stdin is not a JSON object")
    version = conf.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION,
                       f"cniVersion {version!r} is not supported (supported: "
                       f"{', '.join(SUPPORTED_VERSIONS)})")
    if "ipam" in conf:
        raise CniError(UNSUPPORTED_FIELD,
                       f"network config: ipam (value {_shown(conf['ipam'])}) is not "
                       "supported: uvxlan's store hands out the addresses, unique across "
                       "hosts; remove it")
    for key, value in conf.items():
        if key not in SPEC_KEYS and key not in UVXLAN_KEYS and not key.startswith("cni.dev/"):
            raise CniError(UNSUPPORTED_FIELD,
                           f"network config: unknown key {key!r} (value {_shown(value)}); "
                           f"uvxlan-cni takes {', '.join(sorted(UVXLAN_KEYS))}")
    for key in ("name", "type"):
        if key not in conf:
            raise CniError(INVALID_CONFIG, f"network config: {key} is missing")
    _want(conf, "type", str, "the plugin's file name")
    name = _want(conf, "name", str, "a network name")
    try:
        rules.name(name)
        network = rules.name(conf.get("network", name))
    except ConfigError as exc:
        raise CniError(INVALID_CONFIG, f"network config: {exc}") from None
    agent = None
    if "agent" in conf:
        try:
            agent = rules.name(conf["agent"])
        except ConfigError as exc:
            raise CniError(INVALID_CONFIG, f"network config: agent {exc}") from None
    store = _want(conf, "store", str, "a store URL") if "store" in conf else _default_store()
    control_dir = (_want(conf, "controlDir", str, "an absolute path")
                   if "controlDir" in conf else CONTROL_DIR)
    if not control_dir.startswith("/"):
        raise CniError(INVALID_CONFIG, f"network config: controlDir {control_dir!r}: "
                                       "expected an absolute path")
    timeout = DEFAULT_TIMEOUT
    if "timeout" in conf:
        timeout = _want(conf, "timeout", (int, float), "seconds")
        if not 0 < timeout <= TIMEOUT_MAX:
            raise CniError(INVALID_CONFIG, f"network config: timeout {timeout}: expected "
                                           f"more than 0 and at most {TIMEOUT_MAX:g} seconds")
    for key in ("disableCheck", "disableGC", "loadOnlyInlinedPlugins"):
        if key in conf:
            _want(conf, key, bool, "true or false")
    caps = _want(conf, "capabilities", dict, "an object") if "capabilities" in conf else {}
    for cap, on in caps.items():
        if on and cap not in CAPABILITIES:
            raise CniError(UNSUPPORTED_FIELD,
                           f"network config: capability {cap!r} (value {json.dumps(on)}) is "
                           f"not supported (uvxlan-cni supports {', '.join(sorted(CAPABILITIES))})")
    dns = _want(conf, "dns", dict, "an object") if "dns" in conf else {}
    prev: dict[str, Any] | None = None
    if "prevResult" in conf:
        prev = _want(conf, "prevResult", dict, "a result object")
    ip, mac = _runtime_config(conf)
    return NetConf(cni_version=version, name=name, network=network, agent=agent, store=store,
                   control_dir=control_dir, timeout=float(timeout), dns=dns, prev_result=prev,
                   ip=ip, mac=mac, valid_attachments=_valid_attachments(conf, command))


def _runtime_config(conf: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The "ips" and "mac" capability arguments a runtime passed."""
    rc = _want(conf, "runtimeConfig", dict, "an object") if "runtimeConfig" in conf else {}
    ip = mac = None
    ips = rc.get("ips")
    if ips is not None:
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
            raise CniError(INVALID_CONFIG, f"runtimeConfig ips {ips!r}: expected a list of "
                                           "addresses")
        if len(ips) > 1 or any(":" in i for i in ips):
            raise CniError(INVALID_CONFIG, f"runtimeConfig ips {ips!r}: one IPv4 address at "
                                           "most (uvxlan networks are IPv4)")
        ip = ips[0] if ips else None
    if rc.get("mac") is not None:
        if not isinstance(rc["mac"], str):
            raise CniError(INVALID_CONFIG, f"runtimeConfig mac {rc['mac']!r}: expected a MAC")
        mac = rc["mac"]
    return ip, mac


def _valid_attachments(conf: Mapping[str, Any], command: str
                       ) -> frozenset[tuple[str, str]] | None:
    """GC's list of attachments still in use.  libcni sends it under both
    names (containernetworking/cni#1101: the spec once misnamed it)."""
    if command != "GC":
        return None
    items = conf.get("cni.dev/valid-attachments", conf.get("cni.dev/attachments"))
    if items is None:
        # No list is not an empty list: collecting everything on a
        # malformed request would cut every container off.
        raise CniError(INVALID_CONFIG, "GC: cni.dev/valid-attachments is missing")
    out = set()
    if not isinstance(items, list):
        raise CniError(INVALID_CONFIG, "GC: cni.dev/valid-attachments is not a list")
    for item in items:
        if (not isinstance(item, dict) or not isinstance(item.get("containerID"), str)
                or not isinstance(item.get("ifname"), str)):
            raise CniError(INVALID_CONFIG, f"GC: attachment {item!r}: expected "
                                           '{"containerID": ..., "ifname": ...}')
        out.add((item["containerID"], item["ifname"]))
    return frozenset(out)


# --- Names, netns, results --------------------------------------------------------


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def network_tag(cni_name: str) -> str:
    """The part of an endpoint's name that says which CNI network made it."""
    return _digest("uvxlan-cni", cni_name)[:6]


def endpoint_name(cni_name: str, container_id: str, ifname: str) -> str:
    """The store endpoint of an attachment: the same for every call about
    it (DEL and CHECK find it with no state of their own), readable in
    ``uvxlan endpoint ls`` (the container id's start) and within the name
    rule's 64 characters however long the id is."""
    return (f"cni-{network_tag(cni_name)}-{container_id[:12]}-"
            f"{_digest(cni_name, container_id, ifname)[:10]}")


def made_here(cni_name: str, ep_name: str) -> bool:
    """Whether an endpoint name is one this CNI network makes."""
    return re.fullmatch(rf"cni-{network_tag(cni_name)}-[A-Za-z0-9_.-]{{1,12}}-[0-9a-f]{{10}}",
                        ep_name) is not None


def netns_ref(path: str) -> str:
    """What uvxlan calls the netns at path: the name of one in /run/netns
    (as `ip netns` makes them, and podman), else the path itself."""
    for d in NETNS_DIRS:
        if path.startswith(d) and "/" not in path[len(d):]:
            return path[len(d):]
    return path


def build_result(conf: NetConf, inv: Invocation, *, mac: str, ip: str, mtu: int
                 ) -> dict[str, Any]:
    """ADD's result: the container's interface, its address and the
    network's DNS, after whatever a previous plugin of a chain returned."""
    prev = conf.prev_result or {}
    interfaces = list(prev.get("interfaces") or [])
    iface: dict[str, Any] = {"name": inv.ifname, "mac": mac, "sandbox": inv.netns}
    if conf.cni_version != "1.0.0":
        iface["mtu"] = mtu                   # new in 1.1.0
    interfaces.append(iface)
    ips = list(prev.get("ips") or [])
    # No gateway: the overlay has none (its first address is reserved for
    # one the user may add), so no default route either.
    ips.append({"address": ip, "interface": len(interfaces) - 1})
    result: dict[str, Any] = {"cniVersion": conf.cni_version, "interfaces": interfaces,
                              "ips": ips, "routes": list(prev.get("routes") or [])}
    dns = conf.dns or prev.get("dns")
    if dns:
        result["dns"] = dns
    return result


def error_object(version: str, exc: CniError) -> dict[str, Any]:
    obj: dict[str, Any] = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
    if exc.details:
        obj["details"] = exc.details
    return obj


def as_cni_error(exc: UvxlanError) -> CniError:
    """uvxlan's errors as CNI codes."""
    if isinstance(exc, CniError):
        return exc
    if isinstance(exc, StoreUnavailable):
        return CniError(TRY_AGAIN_LATER, f"the store does not answer: {exc}")
    if isinstance(exc, StoreError):
        return CniError(IO_FAILURE, f"the store: {exc}")
    if isinstance(exc, ConfigError):
        return CniError(INVALID_CONFIG, str(exc))
    if isinstance(exc, RecordError | ClusterError):
        return CniError(CLUSTER_REFUSED, str(exc))
    if isinstance(exc, NetlinkError):
        return CniError(NOT_AS_EXPECTED, str(exc))
    return CniError(IO_FAILURE, str(exc))


# --- The operations ---------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # asyncio (and argparse) are imported where used: a runtime asks
    # VERSION before every ADD and DEL, and under load their imports were
    # most of its second.
    import asyncio

    return asyncio.run(coro)


def _agent_name(conf: NetConf) -> str:
    if conf.agent is not None:
        return conf.agent
    found = sorted(p.name[:-5] for p in Path(conf.control_dir).glob("*.sock"))
    if len(found) == 1:
        return found[0]
    raise CniError(INVALID_CONFIG,
                   "network config: name this host's agent with \"agent\" ("
                   + (f"several run here: {', '.join(found)})" if found else
                      f"no agent's control socket in {conf.control_dir})"))


def _control_socket(conf: NetConf, agent: str) -> str:
    return os.path.join(conf.control_dir, f"{agent}.sock")


def _netns_exists(path: str) -> bool:
    return os.path.exists(path)


_CLONE_NEWNET = 0x40000000


def has_link(netns_path: str, ifname: str) -> bool:
    """Whether the netns at netns_path has an interface ifname.  ADD and
    DEL ask only this, so they never import pyroute2 (about a third of a
    second of a runtime's container start): setns on this thread, the
    kernel's name lookup, and back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetlinkError(f"netns {netns_path}: {exc.strerror}") from None
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise NetlinkError(f"netns {netns_path}: cannot enter: "
                                   f"{os.strerror(ctypes.get_errno())}")
            try:
                socket.if_nametoindex(ifname)
                return True
            except OSError:
                return False
            finally:
                if libc.setns(home, _CLONE_NEWNET) != 0:   # never go on in the container's
                    raise SystemExit(f"{PROGRAM}: cannot return to the runtime's netns")
        finally:
            os.close(target)
    finally:
        os.close(home)


async def _add(conf: NetConf, inv: Invocation, agent: str) -> dict[str, Any]:
    import asyncio

    from uvxlan import cluster
    from uvxlan.store import open_store

    store = open_store(conf.store, env={}, create=False)
    try:
        net = await cluster.get_network(store, conf.network)
        record = await cluster.attach(
            store, conf.network, host=agent, netns=netns_ref(inv.netns),
            name=endpoint_name(conf.name, inv.container_id, inv.ifname),
            ip=conf.ip or inv.args.get("IP") or None,
            mac=conf.mac or inv.args.get("MAC") or None, ifname=inv.ifname)
        try:
            await cluster.wait_ready(store, record, conf.timeout)
        except (ClusterError, asyncio.CancelledError) as exc:
            # Leave nothing behind: the runtime's DEL may never come.
            await cluster.undo_attach(store, record)
            raise CniError(AGENT_FAILED, str(exc)) from None
    finally:
        await store.close()
    return build_result(conf, inv, mac=record.mac, ip=record.ip, mtu=net.mtu)


def cmd_add(conf: NetConf, inv: Invocation) -> dict[str, Any]:
    agent = _agent_name(conf)
    if not _netns_exists(inv.netns):
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {inv.netns}: no such network namespace")
    # The spec: an interface of that name already there is an error.
    if has_link(inv.netns, inv.ifname):
        raise CniError(NOT_AS_EXPECTED, f"interface {inv.ifname} already exists in "
                                        f"{inv.netns}")
    return _run(_add(conf, inv, agent))


async def _del(conf: NetConf, inv: Invocation) -> bool:
    """Remove the attachment's endpoint; whether there was one."""
    from uvxlan import cluster
    from uvxlan.store import open_store

    store = open_store(conf.store, env={}, create=False)
    try:
        key = cluster.endpoint_key(conf.network,
                                   endpoint_name(conf.name, inv.container_id, inv.ifname))
        kv = await store.get(key)
        if kv is None:
            return False
        return await cluster.undo_attach(store, cluster.decode(cluster.EndpointRecord,
                                                               kv.value, kv.key))
    finally:
        await store.close()


def cmd_del(conf: NetConf, inv: Invocation) -> None:
    """DEL: gone already is success (the spec: DEL is idempotent), and so
    is a store file that was never made; a store that does not answer is
    "try again later", since the endpoint would otherwise stay forever."""
    if conf.store.startswith("sqlite://") and not os.path.exists(conf.store[9:].split("?")[0]):
        return
    removed = _run(_del(conf, inv))
    if not removed or not inv.netns or not _netns_exists(inv.netns):
        return
    # The agent removes the TAP; wait a little so the runtime that deletes
    # the netns next finds it gone, but never fail a DEL for it.
    deadline = time.monotonic() + min(DEL_WAIT_S, conf.timeout)
    while time.monotonic() < deadline:
        try:
            if not has_link(inv.netns, inv.ifname):
                return
        except UvxlanError:
            return
        time.sleep(0.05)


def _expected(conf: NetConf, inv: Invocation) -> tuple[dict[str, Any], list[str]]:
    """CHECK: our interface in prevResult and its addresses."""
    prev = conf.prev_result
    if prev is None:
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult (the result of the ADD)")
    interfaces = prev.get("interfaces") or []
    for index, iface in enumerate(interfaces):
        if (isinstance(iface, dict) and iface.get("name") == inv.ifname
                and iface.get("sandbox") == inv.netns):
            ips = [str(i.get("address")) for i in prev.get("ips") or []
                   if isinstance(i, dict) and i.get("interface") == index]
            return iface, ips
    raise CniError(NOT_AS_EXPECTED, f"prevResult has no interface {inv.ifname} in "
                                    f"{inv.netns}")


async def _check_store(conf: NetConf, inv: Invocation, agent: str) -> tuple[Any, int]:
    from uvxlan import cluster
    from uvxlan.store import open_store

    store = open_store(conf.store, env={}, create=False)
    try:
        net = await cluster.get_network(store, conf.network)
        name = endpoint_name(conf.name, inv.container_id, inv.ifname)
        for record, status in await cluster.list_endpoints(store, conf.network):
            if record.name == name:
                if record.host != agent:
                    raise CniError(NOT_AS_EXPECTED, f"endpoint {name} is on host "
                                                    f"{record.host}, not {agent}")
                if status is None or status.state != "ready":
                    why = "no status yet" if status is None else status.error or status.state
                    raise CniError(NOT_AS_EXPECTED, f"agent {agent} has not made endpoint "
                                                    f"{name}: {why}")
                return record, net.mtu
        raise CniError(NOT_AS_EXPECTED, f"endpoint {name} is not in network {conf.network} "
                                        "(detached by someone else?)")
    finally:
        await store.close()


def cmd_check(conf: NetConf, inv: Invocation) -> None:
    from uvxlan import netlink

    iface, ips = _expected(conf, inv)
    agent = _agent_name(conf)
    try:
        _agent_status(conf, agent)    # "external dependencies such as a daemon"
    except CniError as exc:           # 50 and 51 are STATUS's codes
        raise CniError(NOT_AS_EXPECTED, exc.msg) from None
    record, mtu = _run(_check_store(conf, inv, agent))
    if not _netns_exists(inv.netns):
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {inv.netns}: no such network namespace")
    ns = netns_ref(inv.netns)
    state = netlink.link_state(inv.ifname, ns)
    if state is None:
        raise CniError(NOT_AS_EXPECTED, f"interface {inv.ifname} is missing in {inv.netns}")
    problems = []
    if state["mac"].lower() != str(iface.get("mac", "")).lower():
        problems.append(f"MAC {state['mac']}, not {iface.get('mac')}")
    if state["mac"].lower() != record.mac:
        problems.append(f"MAC {state['mac']}, not the store's {record.mac}")
    want_mtu = iface.get("mtu", mtu)
    if state["mtu"] != mtu or state["mtu"] != want_mtu:
        problems.append(f"MTU {state['mtu']}, not {want_mtu}")
    have = {f"{a}/{p}" for name, a, p in netlink.addresses(ns) if name == inv.ifname}
    for want in ips:
        if want not in have:
            problems.append(f"address {want} missing")
    if record.ip not in ips:
        problems.append(f"the store's address is {record.ip}, prevResult's "
                        f"{', '.join(ips) or 'none'}")
    if problems:
        raise CniError(NOT_AS_EXPECTED, f"interface {inv.ifname} in {inv.netns}: "
                                        + "; ".join(problems))


def _agent_status(conf: NetConf, agent: str) -> dict[str, Any]:
    socket_path = _control_socket(conf, agent)
    try:
        st = query_agent(socket_path, "status")
    except UvxlanError as exc:
        # The agent forwards every packet: without it, the containers
        # already attached are cut off too.
        raise CniError(NOT_AVAILABLE_DEGRADED,
                       f"uvxlan agent {agent} is not running ({exc})") from None
    return st


async def _status_store(conf: NetConf, agent: str) -> None:
    from uvxlan import cluster
    from uvxlan.store import open_store

    store = open_store(conf.store, env={}, create=False)
    try:
        await cluster.get_network(store, conf.network)
        if agent not in {h.name for h in await cluster.list_hosts(store)}:
            raise CniError(NOT_AVAILABLE, f"agent {agent} is not registered in the store")
    finally:
        await store.close()


def cmd_status(conf: NetConf) -> None:
    agent = _agent_name(conf)
    st = _agent_status(conf, agent)
    if st.get("synced") is False:
        raise CniError(NOT_AVAILABLE, f"agent {agent} has not synced with the store yet")
    if "synced" not in st:
        raise CniError(NOT_AVAILABLE, f"agent {agent} runs without a store")
    try:
        _run(_status_store(conf, agent))
    except CniError:
        raise
    except UvxlanError as exc:
        raise CniError(NOT_AVAILABLE, f"cannot serve ADD: {exc}") from None


async def _gc(conf: NetConf, agent: str) -> list[str]:
    from uvxlan import cluster
    from uvxlan.store import open_store

    assert conf.valid_attachments is not None
    keep = {endpoint_name(conf.name, cid, ifname) for cid, ifname in conf.valid_attachments}
    store = open_store(conf.store, env={}, create=False)
    removed, errors = [], []
    try:
        for record, _ in await cluster.list_endpoints(store, conf.network):
            # Only what this CNI network made on this host: the other
            # hosts' runtimes keep their own lists.
            if record.host != agent or not made_here(conf.name, record.name):
                continue
            if record.name in keep:
                continue
            try:
                if await cluster.undo_attach(store, record):
                    removed.append(record.name)
            except UvxlanError as exc:        # go on: remove as much as possible
                errors.append(f"{record.name}: {exc}")
    finally:
        await store.close()
    if errors:
        raise CniError(IO_FAILURE, f"GC removed {len(removed)} endpoint(s); could not "
                                   f"remove {len(errors)}", "; ".join(errors))
    return removed


def cmd_gc(conf: NetConf) -> None:
    if conf.store.startswith("sqlite://") and not os.path.exists(conf.store[9:].split("?")[0]):
        return
    removed = _run(_gc(conf, _agent_name(conf)))
    for name in removed:
        print(f"{PROGRAM}: GC removed endpoint {name} from network {conf.network}",
              file=sys.stderr)


def run_plugin(env: Mapping[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    """One invocation: (exit code, what to print on stdout, if anything)."""
    version = LATEST
    try:
        inv = parse_env(env)
        if inv.command == "VERSION":
            return 0, _version(stdin)
        conf = parse_config(stdin, inv.command)
        version = conf.cni_version
        if inv.command == "ADD":
            return 0, cmd_add(conf, inv)
        if inv.command == "DEL":
            cmd_del(conf, inv)
        elif inv.command == "CHECK":
            cmd_check(conf, inv)
        elif inv.command == "STATUS":
            cmd_status(conf)
        else:
            cmd_gc(conf)
        return 0, None
    except UvxlanError as exc:
        return 1, error_object(version, as_cni_error(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: still an answer the runtime can read
        return 1, error_object(version, CniError(
            INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc} (a bug: please "
                            "report it)"))


def _version(stdin: bytes) -> dict[str, Any]:
    try:
        asked = json.loads(stdin or b"{}").get("cniVersion") or LATEST
    except (ValueError, AttributeError, RecursionError):
        asked = LATEST
    return {"cniVersion": asked if isinstance(asked, str) else LATEST,
            "supportedVersions": list(SUPPORTED_VERSIONS)}


# --- The launcher -----------------------------------------------------------------


def launcher_text(python: str, package_parent: str | None) -> str:
    """A shell script that runs this module with this Python; the
    package's directory on PYTHONPATH when it is not installed.  -P: the
    runtime's working directory (a user's, for rootless podman) is not
    put on sys.path, so no module planted there runs as root."""
    path = "" if package_parent is None else f"PYTHONPATH={_sh(package_parent)} "
    return ("#!/bin/sh\n"
            f"# {PROGRAM}: the uvxlan CNI plugin (written by `{PROGRAM} install`)\n"
            f"{path}exec {_sh(python)} -P -m uvxlan.cni \"$@\"\n")


def _sh(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def unsafe_for_root(paths: Sequence[Path]) -> str | None:
    """The first of paths (or a directory above one) that a user other than
    root and the one installing could change, named with why; None if
    there is none.  Runtimes run the plugin as root on every container
    start: code another user can write would run as root."""
    trusted = {0, os.geteuid()}
    seen: set[Path] = set()
    for path in paths:
        for p in [path, *path.parents]:
            if p in seen:
                continue
            seen.add(p)
            try:
                st = p.stat()
            except OSError:
                continue                 # not there: nothing to change
            if st.st_uid not in trusted:
                return f"{p} belongs to uid {st.st_uid}"
            # A sticky directory (/tmp) lets nobody replace another's entry.
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
                    stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
                return f"{p} is writable by its group or others (mode {st.st_mode & 0o7777:o})"
    return None


def install(directory: str) -> str:
    """Write the launcher into directory (where runtimes look for
    plugins); its path.  Refused when the Python, uvxlan or a directory
    on their paths could be changed by another user (unsafe_for_root)."""
    here = Path(__file__).resolve().parent.parent
    site = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"])}
    parent = None if here in site else str(here)
    target = Path(directory) / PROGRAM
    code = [Path(sys.executable).resolve(), here / "uvxlan",
            *(Path(p).resolve() for p in sys.path if p and os.path.isdir(p)),
            target.parent]
    why = unsafe_for_root(code)
    if why is not None:
        raise ConfigError(f"not installed: runtimes run {PROGRAM} as root, and {why}: "
                          "make it root's alone (chmod go-w, chown root) first")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{PROGRAM}.{os.getpid()}")
        tmp.write_text(launcher_text(sys.executable, parent))
        tmp.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        tmp.replace(target)       # a runtime never executes half a file
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    return str(target)


def main(argv: Sequence[str] | None = None, stdin: IO[bytes] | None = None,
         stdout: IO[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    out = sys.stdout if stdout is None else stdout
    if args:
        return _admin(args)
    try:
        data = (sys.stdin.buffer if stdin is None else stdin).read()
    except OSError as exc:
        failed = error_object(LATEST, CniError(IO_FAILURE, f"cannot read stdin: {exc}"))
        print(json.dumps(failed), file=out)
        return 1
    code, obj = run_plugin(os.environ, data)
    if obj is not None:
        print(json.dumps(obj), file=out)
    if code and obj is not None:
        print(f"{PROGRAM}: {obj['msg']}", file=sys.stderr)
    return code


def _admin(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description="The uvxlan CNI plugin.  Container runtimes execute it with "
                    "CNI_COMMAND and a network config on stdin (docs/cni.md); run by hand, "
                    "it installs itself where runtimes look for plugins.")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="write the launcher where runtimes look for plugins",
                       description="Write a small launcher, DIR/uvxlan-cni, that runs this "
                                   "uvxlan with this Python.")
    i.add_argument("--dir", default=PLUGIN_DIR,
                   help="plugin directory (default %(default)s, where podman and Debian's "
                        "containernetworking-plugins look; containerd: /opt/cni/bin)")
    args = p.parse_args(argv)
    try:
        print(install(args.dir))
    except UvxlanError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
