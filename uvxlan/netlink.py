"""Thin typed wrapper over pyroute2 for the netlink work uvxlan needs.

Every function takes ``netns``: the name of a namespace under /run/netns,
the absolute path of a namespace file (/proc/PID/ns/net, a runtime's bind
mount such as /var/run/docker/netns/ID), or None for the namespace of the
calling process. Failures are raised as
:class:`uvxlan.errors.NetlinkError` with a one-line message naming the object;
malformed arguments (a bad name, MAC or CIDR) as
:class:`uvxlan.errors.ConfigError`. Nothing here shells out to ``ip``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import ipaddress
import os
import re
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, ParamSpec, TypedDict, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError

from uvxlan import validate
from uvxlan.errors import ConfigError, NetlinkError

__all__ = [
    "LinkInfo",
    "RouteInfo",
    "addresses",
    "bridge_create",
    "link_configure",
    "link_delete",
    "link_index",
    "link_info",
    "link_state",
    "neigh_flush_unresolved",
    "link_move",
    "link_set_master",
    "netns_create",
    "netns_exists",
    "netns_inode",
    "netns_list",
    "netns_remove",
    "route_add_default",
    "routes",
    "run_in_netns",
    "veth_create",
]

NETNS_DIR = "/run/netns"
_IFF_UP = 0x1
_MAIN_TABLE = 254

_P = ParamSpec("_P")
_R = TypeVar("_R")


class LinkInfo(TypedDict):
    mac: str
    mtu: int
    up: bool


class LinkState(TypedDict):
    index: int
    mac: str
    mtu: int
    txqlen: int
    alias: str | None   # ifalias: uvxlan marks its TAPs with it


class RouteInfo(TypedDict):
    family: int  # 4 or 6
    dst: str  # CIDR; the default route is "0.0.0.0/0" or "::/0"
    gateway: str | None
    dev: str | None
    prefsrc: str | None
    table: int


# --- plumbing ---------------------------------------------------------------


def _outside_event_loop(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` in a worker thread when called from a running event loop.

    pyroute2's synchronous IPRoute drives an asyncio loop of its own, which
    fails with "This event loop is already running" inside the daemon's loop.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return func(*args, **kwargs)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(func, *args, **kwargs).result()

    return wrapper


def _where(netns: str | None) -> str:
    return "the current netns" if netns is None else f"netns '{netns}'"


def _check_netns(netns: str) -> None:
    validate.check("invalid netns", validate.netns, netns)


def _check_netns_name(name: str) -> None:
    # What uvxlan makes and removes is a name: pyroute2 treats a name with a
    # '/' as a path, so keep everything it makes in /run/netns.
    validate.check("invalid netns name", validate.netns_name, name)


def _check_ifname(name: str) -> None:
    # the kernel's dev_valid_name() rules, checked early for a clearer message
    validate.check("invalid interface name", validate.ifname, name)


def _errno_of(exc: BaseException) -> int:
    if isinstance(exc, Pyroute2NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    return 0


def _fail(context: str, exc: BaseException) -> NoReturn:
    code = _errno_of(exc)
    if code:
        reason = os.strerror(code)
        reason = reason[:1].lower() + reason[1:]
    else:
        reason = str(exc) or type(exc).__name__
    error = NetlinkError(f"{context}: {reason}")
    error.errno = code or None  # for callers that branch on it; str() stays one line
    raise error from exc


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SHARED = 0x100000
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_void_p]


class _StepFailed(OSError):
    """A libc call failed; ``step`` says which, for the one-line error."""

    def __init__(self, step: str) -> None:
        err = ctypes.get_errno()
        super().__init__(err, os.strerror(err))
        self.step = step


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run_in_netns(netns: str, fn: Callable[[], _R]) -> _R:
    """fn() called with this thread inside ``netns``, then back.

    A socket (or a /dev/net/tun file) belongs to the netns it was created
    in, whatever thread uses it later.  pyroute2's own ``netns=`` forks a
    child to do this, and a fork of the running agent (datapath threads,
    the store's thread, the event loop) can deadlock in the child; setns
    on one thread cannot."""
    _check_netns(netns)
    target = _open_netns_fd(netns)
    try:
        home = _open_netns_fd(None)
    except BaseException:
        os.close(target)             # not leaked when the second open fails
        raise
    try:
        _setns(target)
        try:
            return fn()
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def _netlink_socket_in(netns: str) -> int:
    """A NETLINK_ROUTE socket created inside ``netns``; its fd."""
    def make() -> int:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             socket.NETLINK_ROUTE).detach()
    return run_in_netns(netns, make)


@contextmanager
def _iproute(netns: str | None) -> Iterator[Any]:
    """An IPRoute socket bound to ``netns``, closed on exit."""
    if netns is not None:
        _check_netns(netns)
    try:
        if netns is None:
            ipr = IPRoute()
        else:
            fd = _netlink_socket_in(netns)
            try:
                ipr = IPRoute(fileno=fd)
            except BaseException:
                os.close(fd)
                raise
    except FileNotFoundError:
        raise NetlinkError(f"netns '{netns}' does not exist") from None
    except (OSError, RuntimeError) as exc:
        _fail(f"cannot open a netlink socket in {_where(netns)}", exc)
    with ipr:
        yield ipr


def _lookup(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _require(ipr: Any, ifname: str, netns: str | None) -> int:
    index = _lookup(ipr, ifname)
    if index is None:
        raise NetlinkError(f"interface '{ifname}' does not exist in {_where(netns)}")
    return index


def _require_absent(ipr: Any, ifname: str, netns: str | None) -> None:
    if _lookup(ipr, ifname) is not None:
        raise NetlinkError(f"interface '{ifname}' already exists in {_where(netns)}")


def _ifnames(ipr: Any) -> dict[int, str]:
    return {int(link["index"]): str(link.get("ifname")) for link in ipr.link("dump")}


def _netns_path(netns: str) -> str:
    return netns if netns.startswith("/") else os.path.join(NETNS_DIR, netns)


_NSFS_MAGIC = 0x6E736673          # namespace files since Linux 3.19
_PROC_SUPER_MAGIC = 0x9FA0        # ... and in /proc before it
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def _netns_file_stat(path: str) -> os.stat_result | None:
    """path's stat (following links: /proc/PID/ns/net is one) if it is a
    namespace file, else None.  A path comes from a runtime or the store:
    never open a device or a FIFO it names (an open can block or have
    effects), only a regular file on nsfs (setns then tells whether it is a
    *network* namespace)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    buf = ctypes.create_string_buffer(256)          # struct statfs, f_type first
    if _libc.statfs(path.encode(), buf) != 0:
        return None
    f_type = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    return st if f_type in (_NSFS_MAGIC, _PROC_SUPER_MAGIC) else None


# --- namespaces ---------------------------------------------------------------


_PROC_NETNS = re.compile(r"/proc/\d+/ns/net")


def is_process_netns(netns: str) -> bool:
    """/proc/PID/ns/net: once its process ends the path can only ever name
    another process' netns (the pid reused), never this one again."""
    return bool(_PROC_NETNS.fullmatch(netns))


def netns_exists(netns: str) -> bool:
    _check_netns(netns)
    if netns.startswith("/"):
        return _netns_file_stat(netns) is not None
    return netns in pyroute2_netns.listnetns(NETNS_DIR)


def netns_inode(netns: str) -> tuple[int, int] | None:
    """(device, inode) of the namespace at /run/netns/NAME or at a path:
    which namespace it is, so one deleted and made again under the same name
    (or a reused pid's /proc/PID/ns/net) is told apart; None if there is
    none."""
    _check_netns(netns)
    if netns.startswith("/"):
        st = _netns_file_stat(netns)
    else:
        try:
            st = os.stat(_netns_path(netns))
        except OSError:
            st = None
    return None if st is None else (st.st_dev, st.st_ino)


def netns_list() -> list[str]:
    return sorted(pyroute2_netns.listnetns(NETNS_DIR))


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount, as iproute2 does, so a namespace bound
    there is seen from every mount namespace (``ip netns exec`` makes one)."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    where = NETNS_DIR.encode()
    if _libc.mount(b"", where, b"none", _MS_SHARED | _MS_REC, None) == 0:
        return
    # EINVAL: not a mount point yet, so bind it onto itself first.
    if ctypes.get_errno() != errno.EINVAL:
        raise _StepFailed(f"making {NETNS_DIR} a shared mount")
    if _libc.mount(where, where, b"none", _MS_BIND | _MS_REC, None) != 0:
        raise _StepFailed(f"bind-mounting {NETNS_DIR} onto itself")
    if _libc.mount(b"", where, b"none", _MS_SHARED | _MS_REC, None) != 0:
        raise _StepFailed(f"making {NETNS_DIR} a shared mount")


def _bind_new_netns(path: str) -> None:
    """Unshare a new netns on a thread of its own and bind it at ``path``.

    The thread ends right after, so nothing else runs in the new netns by
    accident, and the process is never forked: pyroute2's ``netns.create``
    forks, and a fork of a process with threads (the tests' etcd client,
    an agent's datapath) can deadlock in the child."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            if _libc.unshare(_CLONE_NEWNET) != 0:
                raise _StepFailed("unsharing a network namespace")
            own = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            if _libc.mount(own, path.encode(), b"none", _MS_BIND, None) != 0:
                raise _StepFailed(f"bind-mounting it at {path}")
            outcome.append(None)
        except BaseException as exc:  # reported by the caller, not the thread
            outcome.append(exc)

    worker = threading.Thread(target=work, name="netns-create")
    worker.start()
    worker.join()
    failure = outcome[0] if outcome else RuntimeError("the netns thread ended early")
    if failure is not None:
        raise failure


def netns_create(name: str) -> None:
    """Create the named netns; NetlinkError if it already exists."""
    _check_netns_name(name)
    path = _netns_path(name)
    context = f"cannot create netns '{name}'"
    try:
        _share_netns_dir()
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise NetlinkError(f"netns '{name}' already exists") from None
    except _StepFailed as exc:
        _fail(f"{context} ({exc.step})", exc)
    except OSError as exc:
        _fail(context, exc)
    try:
        _bind_new_netns(path)
    except (OSError, RuntimeError) as exc:
        # The mount point was made first: don't leave it behind.
        with suppress(OSError):
            os.unlink(path)
        _fail(f"{context} ({exc.step})" if isinstance(exc, _StepFailed) else context, exc)


def netns_remove(name: str) -> None:
    """Remove the named netns; a missing one is not an error."""
    _check_netns_name(name)
    try:
        pyroute2_netns.remove(name)
    except FileNotFoundError:
        return
    except OSError as exc:
        _fail(f"cannot remove netns '{name}'", exc)


# --- links -------------------------------------------------------------------


@_outside_event_loop
def link_index(ifname: str, netns: str | None = None) -> int | None:
    _check_ifname(ifname)
    with _iproute(netns) as ipr:
        return _lookup(ipr, ifname)


@_outside_event_loop
def link_info(ifname: str, netns: str | None = None) -> LinkInfo:
    _check_ifname(ifname)
    with _iproute(netns) as ipr:
        index = _require(ipr, ifname, netns)
        try:
            (link,) = ipr.link("get", index=index)
        except Pyroute2NetlinkError as exc:
            _fail(f"cannot read interface '{ifname}' in {_where(netns)}", exc)
        return LinkInfo(
            mac=str(link.get("address")),
            mtu=int(link.get("mtu")),
            up=bool(int(link["flags"]) & _IFF_UP),
        )


@_outside_event_loop
def link_state(ifname: str, netns: str | None = None) -> LinkState | None:
    """What adoption compares: index, MAC, MTU, queue and alias of a link;
    None if there is no such link."""
    _check_ifname(ifname)
    with _iproute(netns) as ipr:
        index = _lookup(ipr, ifname)
        if index is None:
            return None
        try:
            (link,) = ipr.link("get", index=index)
        except Pyroute2NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            _fail(f"cannot read interface '{ifname}' in {_where(netns)}", exc)
        alias = link.get("ifalias")
        return LinkState(index=index, mac=str(link.get("address")), mtu=int(link.get("mtu")),
                         txqlen=int(link.get("txqlen")),
                         alias=None if alias is None else str(alias))


class FoundLink(TypedDict):
    ifname: str
    up: bool
    addresses: list[str]   # CIDR, e.g. "10.0.0.2/24"


@_outside_event_loop
def link_find(netns: str | None, *, mac: str, alias: str) -> FoundLink | None:
    """The link with this MAC and alias in netns, whatever its name (a
    runtime moved and renamed it): its name, whether it is up, and its
    addresses; None if there is none."""
    mac = validate.check("invalid MAC address", validate.mac, mac).lower()
    with _iproute(netns) as ipr:
        for link in ipr.link("dump"):
            if str(link.get("address")).lower() != mac or link.get("ifalias") != alias:
                continue
            index = int(link["index"])
            found = [f"{a.get('local') or a.get('address')}/{a['prefixlen']}"
                     for a in ipr.addr("dump", index=index)]
            return FoundLink(ifname=str(link.get("ifname")),
                             up=bool(int(link["flags"]) & _IFF_UP), addresses=found)
    return None


_NUD_INCOMPLETE = 0x01
_NUD_FAILED = 0x20


@_outside_event_loop
def neigh_flush_unresolved(ifname: str, netns: str | None = None) -> int:
    """Delete the neighbour entries of a link still being resolved or
    failed; how many.  The next packet to one of them asks again at once
    instead of waiting for the kernel's retry (retrans_time, 1 s)."""
    _check_ifname(ifname)
    flushed = 0
    with _iproute(netns) as ipr:
        index = _lookup(ipr, ifname)
        if index is None:
            return 0
        for n in ipr.neigh("dump", ifindex=index):
            if not int(n["state"]) & (_NUD_INCOMPLETE | _NUD_FAILED):
                continue
            dst = n.get("NDA_DST")
            if dst is None:
                continue
            with suppress(Pyroute2NetlinkError):     # resolved or gone meanwhile
                ipr.neigh("del", ifindex=index, dst=dst, family=int(n["family"]))
                flushed += 1
    return flushed


@_outside_event_loop
def link_delete(ifname: str, netns: str | None = None) -> None:
    """Delete a link; a missing one is not an error (the netns must exist)."""
    _check_ifname(ifname)
    with _iproute(netns) as ipr:
        index = _lookup(ipr, ifname)
        if index is None:
            return
        try:
            ipr.link("del", index=index)
        except Pyroute2NetlinkError as exc:
            if exc.code == errno.ENODEV:  # went away meanwhile
                return
            _fail(f"cannot delete interface '{ifname}' in {_where(netns)}", exc)


@_outside_event_loop
def veth_create(name: str, peer: str, netns: str | None = None) -> None:
    """Create a veth pair with both ends in ``netns``."""
    _check_ifname(name)
    _check_ifname(peer)
    with _iproute(netns) as ipr:
        for ifname in (name, peer):
            _require_absent(ipr, ifname, netns)
        try:
            ipr.link("add", ifname=name, kind="veth", peer=peer)
        except Pyroute2NetlinkError as exc:
            _fail(f"cannot create veth '{name}'/'{peer}' in {_where(netns)}", exc)


@_outside_event_loop
def bridge_create(name: str, netns: str | None = None, *, multicast_snooping: bool = True) -> None:
    """Create a bridge (STP off, the kernel default)."""
    _check_ifname(name)
    with _iproute(netns) as ipr:
        _require_absent(ipr, name, netns)
        try:
            ipr.link(
                "add",
                ifname=name,
                kind="bridge",
                br_mcast_snooping=int(multicast_snooping),
            )
        except Pyroute2NetlinkError as exc:
            _fail(f"cannot create bridge '{name}' in {_where(netns)}", exc)


@_outside_event_loop
def link_set_master(ifname: str, master: str, netns: str | None = None) -> None:
    """Enslave ``ifname`` to ``master`` (a bridge), both in ``netns``."""
    _check_ifname(ifname)
    _check_ifname(master)
    with _iproute(netns) as ipr:
        index = _require(ipr, ifname, netns)
        master_index = _require(ipr, master, netns)
        try:
            ipr.link("set", index=index, master=master_index)
        except Pyroute2NetlinkError as exc:
            _fail(
                f"cannot attach interface '{ifname}' to '{master}' in {_where(netns)}",
                exc,
            )


def _open_netns_fd(netns: str | None) -> int:
    # The calling thread's netns stands for "current".  Not
    # /proc/thread-self: it came with Linux 3.17, and uvxlan runs on 3.10.
    own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    path = own if netns is None else _netns_path(netns)
    if netns is not None and netns.startswith("/") and _netns_file_stat(netns) is None:
        raise NetlinkError(f"netns '{netns}' does not exist (not a namespace file)")
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetlinkError(f"netns '{netns}' does not exist") from None
    except OSError as exc:
        _fail(f"cannot open {_where(netns)}", exc)


@_outside_event_loop
def link_move(ifname: str, to_netns: str, new_name: str, netns: str | None = None) -> None:
    """Move link ``ifname`` from ``netns`` into ``to_netns``, renamed ``new_name``.

    Move and rename go in one RTM_NEWLINK request (IFLA_NET_NS_FD plus
    IFLA_IFNAME), but the kernel moves first and renames after: a name clash
    in the target would leave the link there under its old name. So the
    target name is checked before moving, and a clash that slips in between
    is rolled back.
    """
    _check_ifname(ifname)
    _check_ifname(new_name)
    _check_netns(to_netns)
    with _iproute(to_netns) as target:
        _require_absent(target, new_name, to_netns)
    target_fd = _open_netns_fd(to_netns)
    try:
        with _iproute(netns) as ipr:
            index = _require(ipr, ifname, netns)
            try:
                ipr.link("set", index=index, net_ns_fd=target_fd, ifname=new_name)
            except Pyroute2NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    _move_back(ifname, to_netns, netns)
                    raise NetlinkError(
                        f"interface '{new_name}' already exists in netns '{to_netns}'"
                    ) from None
                _fail(
                    f"cannot move interface '{ifname}' from {_where(netns)} to netns '{to_netns}'",
                    exc,
                )
    finally:
        os.close(target_fd)


def _move_back(ifname: str, moved_to: str, netns: str | None) -> None:
    """Best effort: return a link that was moved but not renamed."""
    try:
        source_fd = _open_netns_fd(netns)
    except NetlinkError:
        return
    try:
        with _iproute(moved_to) as ipr:
            index = _lookup(ipr, ifname)
            if index is not None:
                ipr.link("set", index=index, net_ns_fd=source_fd)
    except (NetlinkError, Pyroute2NetlinkError, OSError):
        pass
    finally:
        os.close(source_fd)


def _parse_interfaces(
    addresses: Sequence[str],
) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    if isinstance(addresses, str):  # a lone string would be split into characters
        raise ConfigError(f"addresses must be a list of CIDR strings, not {addresses!r}")
    parsed = []
    for text in addresses:
        if "/" not in text:
            raise ConfigError(f"address {text!r} needs a prefix length, like 10.0.0.1/24")
        try:
            parsed.append(ipaddress.ip_interface(text))
        except ValueError:
            raise ConfigError(f"invalid address {text!r}") from None
    return parsed


@_outside_event_loop
def link_configure(
    ifname: str,
    netns: str | None = None,
    *,
    mac: str | None = None,
    mtu: int | None = None,
    addresses: Sequence[str] = (),
    up: bool = True,
    gso_max_size: int | None = None,
    txqlen: int | None = None,
    alias: str | None = None,
) -> list[str]:
    """Set MAC, MTU, the largest super-frame the stack may hand the link
    (gso_max_size), its queue and alias, add missing CIDR addresses and set
    the link up or down; what differed, as "what: old -> new" lines.

    Only what differs is changed, so a repeat is harmless (a MAC set again
    would flush the link's neighbours).  ``lo`` in the same netns is
    brought up too.
    """
    _check_ifname(ifname)
    if mac is not None:
        mac = validate.check("invalid MAC address", validate.mac, mac)
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or mtu <= 0):
        raise ConfigError(f"invalid MTU {mtu!r}")
    wanted = _parse_interfaces(addresses)
    where = _where(netns)
    changed: list[str] = []
    with _iproute(netns) as ipr:
        index = _require(ipr, ifname, netns)
        try:
            (link,) = ipr.link("get", index=index)
        except Pyroute2NetlinkError as exc:
            _fail(f"cannot read interface '{ifname}' in {where}", exc)
        settings = (("address", None if mac is None else mac.lower(), "MAC"),
                    ("mtu", mtu, "MTU"),
                    ("txqlen", txqlen, "txqueuelen"),
                    ("gso_max_size", gso_max_size, "gso_max_size"),
                    ("ifalias", alias, "alias"))
        for attr, value, what in settings:
            old = link.get(attr)
            if value is None or old == value:
                continue
            try:
                ipr.link("set", index=index, **{attr: value})
            except Pyroute2NetlinkError as exc:
                _fail(f"cannot set {what} {value} on '{ifname}' in {where}", exc)
            changed.append(f"{what}: {old} -> {value}")
        present = {
            (str(a.get("local") or a.get("address")), int(a["prefixlen"]))
            for a in ipr.addr("dump", index=index)
        }
        for iface in wanted:
            key = (str(iface.ip), iface.network.prefixlen)
            if key in present:
                continue
            try:
                ipr.addr("add", index=index, address=key[0], prefixlen=key[1])
            except Pyroute2NetlinkError as exc:
                _fail(f"cannot add address {iface} to '{ifname}' in {where}", exc)
            changed.append(f"address: {iface} added")
        try:
            if bool(int(link["flags"]) & _IFF_UP) != up:
                ipr.link("set", index=index, state="up" if up else "down")
                changed.append(f"state: {'up' if up else 'down'}")
            loopback = _lookup(ipr, "lo")
            if loopback is not None:
                ipr.link("set", index=loopback, state="up")
        except Pyroute2NetlinkError as exc:
            _fail(f"cannot set '{ifname}' {'up' if up else 'down'} in {where}", exc)
    return changed


# --- addresses and routes -----------------------------------------------------


@_outside_event_loop
def addresses(netns: str | None = None) -> list[tuple[str, str, int]]:
    """Every address in ``netns`` as (ifname, address, prefixlen)."""
    with _iproute(netns) as ipr:
        names = _ifnames(ipr)
        result = []
        for a in ipr.addr("dump"):
            address = a.get("local") or a.get("address")
            ifname = names.get(int(a["index"]), str(a["index"]))
            result.append((ifname, str(address), int(a["prefixlen"])))
        return result


@_outside_event_loop
def routes(netns: str | None = None) -> list[RouteInfo]:
    """IPv4 and IPv6 routes of the main table, as ``ip route`` shows them."""
    with _iproute(netns) as ipr:
        names = _ifnames(ipr)
        result = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.route("dump", family=family):
                # the header field tops out at 255; RTA_TABLE has the real id
                table = int(r.get_attr("RTA_TABLE") or r["table"])
                if table != _MAIN_TABLE:
                    continue
                version = 4 if family == socket.AF_INET else 6
                dst = r.get("dst") or ("0.0.0.0" if version == 4 else "::")
                oif = r.get("oif")
                result.append(
                    RouteInfo(
                        family=version,
                        dst=f"{dst}/{int(r['dst_len'])}",
                        gateway=r.get("gateway"),
                        dev=names.get(int(oif)) if oif is not None else None,
                        prefsrc=r.get("prefsrc"),
                        table=table,
                    )
                )
        return result


@_outside_event_loop
def route_add_default(gateway: str, netns: str | None = None) -> None:
    """Add a default route via ``gateway`` (IPv4 or IPv6)."""
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        raise ConfigError(f"invalid gateway address {gateway!r}") from None
    family = socket.AF_INET if gw.version == 4 else socket.AF_INET6
    where = _where(netns)
    with _iproute(netns) as ipr:
        try:
            ipr.route("add", family=family, dst_len=0, gateway=str(gw))
        except Pyroute2NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise NetlinkError(
                    f"a default IPv{gw.version} route already exists in {where}"
                ) from None
            if exc.code == errno.ENETUNREACH:
                raise NetlinkError(
                    f"gateway {gw} is not on any connected network in {where}"
                ) from None
            _fail(f"cannot add default route via {gw} in {where}", exc)
