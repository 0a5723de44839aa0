"""Which offloads this kernel offers, probed once at start, with fallback.

Modes (``[host] offload`` or ``uvxlan agent --offload``):

- ``auto``: everything the kernel has: TAP super-frames (``IFF_VNET_HDR``
  and ``TUNSETOFFLOAD`` CSUM/TSO4/TSO6), ``UDP_SEGMENT`` to send a
  super-frame's datagrams in one call, ``UDP_GRO`` to receive many in one.
- ``off``: only what Linux 3.10 offers: TAP super-frames, cut and joined in
  C, with ``sendmmsg`` and ``recvmmsg``; no UDP GSO/GRO.  What users of old
  kernels get.
- ``none``: plain frames, one per read and write (no TAP offloads).

Every probe failure is logged once and that feature left out.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger("uvxlan.offload")

MODES = ("auto", "off", "none")

# include/uapi/linux/if_tun.h
TUNSETOFFLOAD = 0x400454D0
TUNGETFEATURES = 0x800454CF
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
# include/uapi/linux/udp.h
UDP_SEGMENT = 103
UDP_GRO = 104


@dataclass(frozen=True)
class Features:
    tap_vnet_hdr: bool   # TAP super-frames with virtio-net headers
    udp_gso: bool        # UDP_SEGMENT
    udp_gro: bool        # UDP_GRO

    def describe(self) -> str:
        on = [n for n, v in (("tap-tso", self.tap_vnet_hdr), ("udp-gso", self.udp_gso),
                             ("udp-gro", self.udp_gro)) if v]
        return ", ".join(on) or "no offloads"


def _tun_features() -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        buf = fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4)
        return int(struct.unpack("I", buf)[0])
    finally:
        os.close(fd)


def _udp_opt(opt: int, value: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.setsockopt(socket.IPPROTO_UDP, opt, value)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP):
                return False
            raise


def probe(mode: str) -> Features:
    """What to use in mode, given what the kernel accepts."""
    if mode == "none":
        return Features(False, False, False)
    # One line per missing feature, saying what is used instead.
    try:
        vnet = bool(_tun_features() & IFF_VNET_HDR)
    except OSError as exc:
        log.warning("TUNGETFEATURES failed (%s): plain TAP frames, one per read and write",
                    exc.strerror)
        vnet = False
    else:
        if not vnet:
            log.warning("TAP has no IFF_VNET_HDR: plain TAP frames, one per read and write")
    if mode == "off":
        return Features(vnet, False, False)
    gso = _udp_opt(UDP_SEGMENT, 1400)
    gro = _udp_opt(UDP_GRO, 1)
    if not gso:
        log.warning("UDP_SEGMENT refused by this kernel: sending with sendmmsg")
    if not gro:
        log.warning("UDP_GRO refused by this kernel: receiving with recvmmsg")
    return Features(vnet, gso, gro)


def enable_tap_offloads(fd: int) -> bool:
    """TUNSETOFFLOAD CSUM|TSO4|TSO6; False (logged) if the kernel refuses."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TAP_OFFLOADS)
        return True
    except OSError as exc:
        log.warning("TUNSETOFFLOAD refused (%s): this TAP without TSO, frames of at most"
                    " the MTU", exc.strerror)
        return False


def enable_udp_gro(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)


def open_send_pool(address: str, lo: int, hi: int, count: int) -> list[socket.socket]:
    """count UDP sockets bound to address on ports in [lo, hi]: a flow's
    hash picks one, so its datagrams share a source port (RFC 7348 section
    5 asks for the port to come from the inner flow).  Ports in use are
    skipped."""
    pool: list[socket.socket] = []
    span = hi - lo + 1
    start = int.from_bytes(os.urandom(2), "big") % span
    for i in range(span):
        if len(pool) == count:
            break
        port = lo + (start + i * 7919) % span     # a prime stride spreads them
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((address, port))
        except OSError:
            s.close()
            continue
        # Send only: never read, so its receive buffer stays the default
        # (a 4 MiB one would be kernel memory anyone could fill).
        set_socket_buffers(s, receive=False)
        s.setblocking(False)
        pool.append(s)
    return pool


SOCKET_BUFFER = 4 << 20   # bytes each way: bursts while the loop is busy wait here
# <asm-generic/socket.h>, as on x86-64 and arm64 (Python names neither).
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33


def set_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER, *,
                       receive: bool = True) -> None:
    """size bytes of send (and, if receive, receive) buffer, past
    net.core.{w,r}mem_max (212992 on a stock kernel: a few hundred
    datagrams) when we may (CAP_NET_ADMIN: the *BUFFORCE options), else as
    much as the sysctl allows (logged), as wireguard-go does."""
    pairs = [(SO_SNDBUFFORCE, socket.SO_SNDBUF, "wmem_max")]
    if receive:
        pairs.insert(0, (SO_RCVBUFFORCE, socket.SO_RCVBUF, "rmem_max"))
    for force, plain, sysctl in pairs:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
            log.info("socket buffer: at most net.core.%s without CAP_NET_ADMIN", sysctl)
