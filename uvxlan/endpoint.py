"""Endpoints: a TAP per container, in its network namespace, that
outlives the agent.

The agent holds the TAP's fd while the interface lives in the container
as ``eth0``.  The TAP is persistent (TUNSETPERSIST), from the moment it
is configured and carries the agent's alias: when the agent exits or dies
after that, the interface stays, with its index, MAC, addresses, MTU, queue
and offloads; the container's connections wait (its frames are dropped
meanwhile, as on a cable pulled out, and TCP sends them again).  The next
agent of the same name adopts it: it opens the TAP by name inside the
container's netns (TUNSETIFF on an existing device attaches to it),
checks it is its own (the alias ``uvxlan:NAME``, ``uvxlan.state``) and
repairs what differs from what the endpoint should be (logged).  Only a
detach, a network's removal or a leave removes it (``close(remove=True)``:
persistence off, then the fd closed, and the kernel deletes it).

An adopted TAP's fd was opened in the container's netns, so it holds
that netns; when the netns' name goes away (``ip netns del``) the agent
sees it (``alive()``), lets go, and the netns goes with its TAP.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import struct
from contextlib import suppress

from uvxlan import netlink
from uvxlan.config import EndpointConfig
from uvxlan.errors import NetlinkError
from uvxlan.offload import TUNSETOFFLOAD, enable_tap_offloads
from uvxlan.proto import IPV4_HLEN, UDP_HLEN
from uvxlan.state import marker

log = logging.getLogger("uvxlan.endpoint")

# Largest UDP payload in one IPv4 datagram: one UDP_SEGMENT send carries
# at most this many bytes of VXLAN datagrams.
UDP_PAYLOAD_MAX = 65535 - IPV4_HLEN - UDP_HLEN

# include/uapi/linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNGETIFF = 0x800454D2
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000      # create only: fail if the name exists
_IFREQ = struct.Struct("16sH22x")   # struct ifreq: name, flags, rest of the union


def tso_max_size(mtu: int) -> int:
    """The super-frame size to let the container's stack build, so that its
    segments, each VXLAN-encapsulated (8 + 14 + up to mtu bytes), fit in
    one UDP_SEGMENT send.  Left at the kernel's 64 KB, a super-frame cuts
    into one segment too many, and every one costs a second send for its
    last one or two segments (measured: about a sixth of the throughput).
    The MSS assumed is the smallest a TCP flow over this MTU can have
    (IPv6, 40 bytes of options), so any flow fits."""
    segments = UDP_PAYLOAD_MAX // (8 + 14 + mtu)
    return max(mtu, segments * (mtu - 40 - 60))


def preflight(ep: EndpointConfig, owner: str) -> None:
    """Fail before anything is made: the netns exists, the name is free or
    holds a TAP of agent ``owner`` (adopted)."""
    if not netlink.netns_exists(ep.netns):
        raise NetlinkError(f"endpoint {ep.address}: netns {ep.netns!r} does not exist")
    _check_ours(ep, netlink.link_state(ep.ifname, netns=ep.netns), owner)


def _check_ours(ep: EndpointConfig, found: netlink.LinkState | None, owner: str) -> None:
    """An interface of the endpoint's name is adopted only if it carries
    owner's alias: anything else is somebody else's."""
    if found is not None and found["alias"] != marker(owner):
        raise NetlinkError(
            f"endpoint {ep.address}: netns {ep.netns!r} already has an interface"
            f" {ep.ifname!r} (not one of agent {owner!r}'s)"
        )


def _tap_open(name: str, flags: int) -> int:
    """/dev/net/tun attached to TAP name (made if missing, unless
    IFF_TUN_EXCL), non-blocking; in the caller's netns."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _tap_new(name: str, flags: int, vnet_hdr: bool) -> int:
    """A new TAP called name in the caller's netns (refused if the name
    exists), its offloads asked for: the container's stack then sees a NIC
    with TSO and checksum offload from the start.  Its fd."""
    try:
        fd = _tap_open(name, flags | IFF_TUN_EXCL)
    except OSError as exc:
        raise NetlinkError(f"cannot create a TAP device: {exc.strerror}") from None
    if vnet_hdr:
        try:
            enable_tap_offloads(fd)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _restrict(fd: int, what: str) -> None:
    """Only a process with CAP_NET_ADMIN (or running as root) may attach
    to the TAP.  A persistent TAP has no fd attached while no agent
    runs, and with no owner or group set, the kernel's
    tun_not_capable() (drivers/net/tun.c) lets any process that can
    open /dev/net/tun attach to it with TUNSETIFF: it would see the
    container's frames, inject its own, and the next agent's adoption
    would fail with EBUSY.  Owner and group 0: attaching then needs
    euid 0 and group 0, or CAP_NET_ADMIN over the netns.  Set at
    creation and again on adoption (a TAP an older agent made has
    none)."""
    try:
        fcntl.ioctl(fd, TUNSETOWNER, 0)
        fcntl.ioctl(fd, TUNSETGROUP, 0)
    except OSError as exc:
        raise NetlinkError(f"{what}: cannot restrict it to root: {exc.strerror}") from None


def handoff_tap(name: str, *, mac: str, mtu: int, owner: str, vnet_hdr: bool,
                queue: int | None) -> None:
    """A persistent TAP called name in the agent's own netns, made as
    ``Endpoint`` makes one (MAC, MTU, queue, offloads, super-frame size,
    owner root, alias ``uvxlan:OWNER``) but neither moved nor addressed:
    for a runtime that moves it into the container and addresses it itself
    (Docker's Join).  Nobody holds it afterwards; once it is in the
    container, the agent adopts it there as any TAP it made before.  On
    failure nothing is left (persistence comes last)."""
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    fd = _tap_new(name, flags, vnet_hdr)
    try:
        _restrict(fd, f"TAP {name!r}")
        netlink.link_configure(name, mac=mac, mtu=mtu, up=False,
                               gso_max_size=tso_max_size(mtu) if vnet_hdr else None,
                               txqlen=queue, alias=marker(owner))
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except OSError as exc:
            raise NetlinkError(f"cannot make TAP {name!r} persistent: {exc.strerror}") from None
    finally:
        os.close(fd)


class Endpoint:
    """One container's interface: the TAP fd here, the device over there."""

    def __init__(self, cfg: EndpointConfig, mtu: int, *, owner: str,
                 vnet_hdr: bool = False, queue: int | None = None) -> None:
        """owner: the agent's name (the TAP's alias says it).  vnet_hdr:
        open the TAP with IFF_VNET_HDR and ask for CSUM and TSO offloads,
        so the container sends 64 KB TCP super-frames."""
        self.cfg = cfg
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self.port: int | None = None   # the fast path's port id
        self._fd = -1
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        found = netlink.link_state(cfg.ifname, netns=cfg.netns)
        self.adopted = found is not None
        _check_ours(cfg, found, owner)
        try:
            if found is None:
                self._create(flags)
            else:
                self._adopt(flags)
            self._restrict()
            changed = netlink.link_configure(
                cfg.ifname,
                netns=cfg.netns,
                mac=cfg.mac,
                mtu=mtu,
                addresses=[str(cfg.address)],
                up=True,
                gso_max_size=tso_max_size(mtu) if vnet_hdr else None,
                txqlen=queue,
                alias=marker(owner),
            )
            if self.adopted and changed:
                log.warning("endpoint %s in netns %s: adopted, repaired %s", cfg.ifname,
                            cfg.netns, "; ".join(changed))
            if not self.adopted:
                # Persistent only now that it carries our alias: an agent
                # killed before this leaves no eth0 (it goes with the fd),
                # never one without the alias that the next agent refuses.
                try:
                    fcntl.ioctl(self._fd, TUNSETPERSIST, 1)
                except OSError as exc:
                    raise NetlinkError(f"endpoint {cfg.address}: cannot make {cfg.ifname!r}"
                                       f" in netns {cfg.netns!r} persistent:"
                                       f" {exc.strerror}") from None
            if cfg.gateway and not any(
                    r["dst"] in ("0.0.0.0/0", "::/0") and r["table"] == 254
                    for r in netlink.routes(cfg.netns)):
                netlink.route_add_default(cfg.gateway, netns=cfg.netns)
            index = netlink.link_index(cfg.ifname, netns=cfg.netns)
            self.ifindex = -1 if index is None else index
            self.netns_id = netlink.netns_inode(cfg.netns)
        except BaseException:
            self.close(remove=not self.adopted)
            raise

    def _create(self, flags: int) -> None:
        # A temporary name, unique in the agent's netns until the move.
        tmp = "uvx" + secrets.token_hex(5)
        self._fd = _tap_new(tmp, flags, self.vnet_hdr)
        netlink.link_move(tmp, to_netns=self.cfg.netns, new_name=self.cfg.ifname)

    def _adopt(self, flags: int) -> None:
        cfg = self.cfg
        try:
            self._fd = netlink.run_in_netns(cfg.netns, lambda: _tap_open(cfg.ifname, flags))
        except OSError as exc:
            why = ("held by another process" if exc.errno == errno.EBUSY
                   else "not a TAP" if exc.errno == errno.EINVAL else exc.strerror)
            raise NetlinkError(f"endpoint {cfg.address}: cannot adopt {cfg.ifname!r} in"
                               f" netns {cfg.netns!r}: {why}") from None
        if self.vnet_hdr:
            enable_tap_offloads(self._fd)
        else:
            # A previous agent may have turned TSO on: plain frames now.
            with suppress(OSError):
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, 0)

    def _restrict(self) -> None:
        _restrict(self._fd, f"endpoint {self.cfg.address}: {self.cfg.ifname!r}")

    def ask_neighbours_again(self) -> None:
        """While no agent ran, the container's ARP/ND requests went nowhere,
        and it would wait its retry time (1 s) before asking again: make it
        ask now (once the switch can answer)."""
        netlink.neigh_flush_unresolved(self.cfg.ifname, self.cfg.netns)

    def fileno(self) -> int:
        return self._fd

    def alive(self) -> bool:
        """Whether the interface is still there: its TAP answers (a deleted
        one fails with EBADFD) and its netns' name still names the same
        netns."""
        if self._fd < 0:
            return False
        try:
            fcntl.ioctl(self._fd, TUNGETIFF, bytes(_IFREQ.size))
        except OSError:
            return False
        return netlink.netns_inode(self.cfg.netns) == self.netns_id

    def close(self, *, remove: bool) -> None:
        """Close the fd: remove=False leaves the interface for the next
        agent; remove=True deletes it (persistence off first)."""
        if self._fd < 0:
            return
        if remove:
            with suppress(OSError):    # already gone with its netns
                fcntl.ioctl(self._fd, TUNSETPERSIST, 0)
        os.close(self._fd)
        self._fd = -1
