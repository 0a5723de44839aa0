"""What this host's own network says about the overlay: the MTU of the
interface that carries the VTEP address, and the routes an automatically
chosen subnet must not overlap.

Both are read with netlink (``uvxlan.netlink``) in the namespace the agent
or the command runs in, never written.  Docker's overlay driver left the
MTU at 1450 whatever the underlay, and picked subnets that shadowed a
host's VPN or LAN routes; these are the two facts that avoid it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

from uvxlan import netlink, validate
from uvxlan.config import AgentConfig
from uvxlan.errors import ConfigError
from uvxlan.proto import ENCAP_OVERHEAD

log = logging.getLogger("uvxlan.underlay")


def link_mtu(address: str, netns: str | None = None) -> tuple[str, int] | None:
    """(interface, MTU) of the interface that holds ``address``; None if
    no interface here holds it."""
    for ifname, addr, _ in netlink.addresses(netns):
        if addr == address:
            return ifname, netlink.link_info(ifname, netns)["mtu"]
    return None


def settle_mtu(cfg: AgentConfig) -> AgentConfig:
    """The agent's configuration with its underlay MTU settled against the
    interface of its underlay address: that interface's MTU when the file
    and flags leave ``mtu`` out, and a ConfigError when the MTU given is
    larger (every datagram beyond the interface's MTU would be refused by
    the kernel: uvxlan never fragments).  An address no interface holds is
    left to the bind, which says so."""
    found = link_mtu(cfg.host.underlay)
    if found is None:
        return cfg
    ifname, mtu = found
    # lo's 65536 is more than an IPv4 datagram can be.
    mtu = min(mtu, validate.UNDERLAY_MTU.hi)
    if not cfg.derive_mtu:
        if cfg.host.mtu > mtu:
            raise ConfigError(f"[host] mtu {cfg.host.mtu} is larger than the MTU of {ifname} "
                              f"({mtu}), the interface of underlay {cfg.host.underlay}: "
                              f"leave mtu out to use {mtu}")
        return cfg
    if mtu < validate.UNDERLAY_MTU.lo:
        raise ConfigError(f"the MTU of {ifname} ({mtu}), the interface of underlay "
                          f"{cfg.host.underlay}, leaves less than {validate.MTU.lo} for a "
                          f"network (VXLAN takes {ENCAP_OVERHEAD})")
    # Debug only: an agent that fails at start says one line, no more; the
    # MTU is in the host's record (uvxlan host ls).
    log.debug("underlay MTU %d (%s's): networks up to %d", mtu, ifname, mtu - ENCAP_OVERHEAD)
    return dataclasses.replace(cfg, host=dataclasses.replace(cfg.host, mtu=mtu))


def host_routes(netns: str | None = None) -> dict[ipaddress.IPv4Network, str]:
    """The IPv4 routes of the main table but the default route, each with
    how ``ip route`` would name it ("10.0.0.0/16 via 192.0.2.1 dev eth1")."""
    routes: dict[ipaddress.IPv4Network, str] = {}
    for r in netlink.routes(netns):
        if r["family"] != 4:
            continue
        dst = ipaddress.IPv4Network(r["dst"], strict=False)
        if dst.prefixlen == 0:
            continue            # the default route covers everything and shadows nothing
        text = str(dst)
        if r["gateway"]:
            text += f" via {r['gateway']}"
        if r["dev"]:
            text += f" dev {r['dev']}"
        routes.setdefault(dst, text)
    return routes


def overlapping_route(subnet: ipaddress.IPv4Network,
                      routes: dict[ipaddress.IPv4Network, str]) -> str | None:
    """The first route that overlaps subnet, as ``host_routes`` names it."""
    return next((text for dst, text in routes.items() if dst.overlaps(subnet)), None)
