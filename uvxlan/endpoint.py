"""Endpoints: a TAP per container, moved into its network namespace.

The agent opens the TAP (python-pytun), so the fd stays with the agent
while the interface lives in the container as ``eth0``.  The TAP is not
persistent: when the agent closes the fd, or dies, the kernel removes the
interface, so nothing is left behind.
"""

from __future__ import annotations

import os
import secrets

import pytun

from uvxlan import netlink
from uvxlan.config import EndpointConfig
from uvxlan.errors import NetlinkError
from uvxlan.offload import enable_tap_offloads
from uvxlan.proto import IPV4_HLEN, UDP_HLEN

# Largest UDP payload in one IPv4 datagram: one UDP_SEGMENT send carries
# at most this many bytes of VXLAN datagrams.
UDP_PAYLOAD_MAX = 65535 - IPV4_HLEN - UDP_HLEN


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


def preflight(ep: EndpointConfig) -> None:
    """Fail before anything is made: the netns exists, the name is free."""
    if not netlink.netns_exists(ep.netns):
        raise NetlinkError(f"endpoint {ep.address}: netns {ep.netns!r} does not exist")
    if netlink.link_index(ep.ifname, netns=ep.netns) is not None:
        raise NetlinkError(
            f"endpoint {ep.address}: netns {ep.netns!r} already has an interface"
            f" {ep.ifname!r}"
        )


class Endpoint:
    """One container's interface: the TAP fd here, the device over there."""

    def __init__(self, cfg: EndpointConfig, mtu: int, *, vnet_hdr: bool = False,
                 queue: int | None = None) -> None:
        """vnet_hdr: open the TAP with IFF_VNET_HDR and ask for CSUM and
        TSO offloads, so the container sends 64 KB TCP super-frames."""
        self.cfg = cfg
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self.port: int | None = None   # the fast path's port id
        # A temporary name, unique in the agent's netns until the move.
        tmp = "uvx" + secrets.token_hex(5)
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if vnet_hdr else 0)
        try:
            self._tap = pytun.TunTapDevice(name=tmp, flags=flags)
        except pytun.Error as exc:
            raise NetlinkError(f"cannot create a TAP device: {exc}") from None
        try:
            os.set_blocking(self._tap.fileno(), False)
            # Offloads are asked for before the move: the container's
            # stack then sees a NIC with TSO and checksum offload.
            if vnet_hdr:
                enable_tap_offloads(self._tap.fileno())
            netlink.link_move(tmp, to_netns=cfg.netns, new_name=cfg.ifname)
            netlink.link_configure(
                cfg.ifname,
                netns=cfg.netns,
                mac=cfg.mac,
                mtu=mtu,
                addresses=[str(cfg.address)],
                up=True,
                gso_max_size=tso_max_size(mtu) if vnet_hdr else None,
                txqlen=queue,
            )
            if cfg.gateway:
                netlink.route_add_default(cfg.gateway, netns=cfg.netns)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return int(self._tap.fileno())

    def close(self) -> None:
        """Close the fd; the kernel then removes the interface."""
        if self._tap is not None:
            self._tap.close()
            self._tap = None
