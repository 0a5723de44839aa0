"""Protocol facts (RFC 7348) the product uses: header sizes, the VNI range,
UDP ports, the source-port range, the MAC text form and the MAC derived
from an address.  The one Python source for each; the C library's own
values are checked against these when it loads (``uvxlan.native``)."""

from __future__ import annotations

import ipaddress

VXLAN_HLEN = 8
UDP_HLEN = 8
IPV4_HLEN = 20            # without options, as uvxlan sends them
ETH_HLEN = 14
FLAG_I = 0x08
FLAG_GBP = 0x80           # VXLAN-GBP's G flag (draft-smith-vxlan-group-policy)
VNI_MAX = 0xFFFFFF
PORT_IANA = 4789          # RFC 7348 section 5
PORT_LINUX_LEGACY = 8472  # Linux's default before the IANA assignment
# RFC 7348 section 5: the outer source port, a hash of the inner flow,
# SHOULD be taken from the dynamic/private range.
SRC_PORT_MIN = 49152
SRC_PORT_MAX = 65535
# What encapsulation adds to an inner IP packet: an endpoint's MTU is the
# underlay's minus this (outer IPv4 + UDP + VXLAN + inner Ethernet).
ENCAP_OVERHEAD = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN


def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {mac!r}") from None


def mac_to_str(mac: bytes) -> str:
    return mac.hex(":")


def derived_mac(address: ipaddress.IPv4Address) -> str:
    """A locally administered MAC from an IPv4 address, as Docker does:
    02:42 and its 4 bytes (an IPv4Interface gives its address's)."""
    return mac_to_str(b"\x02\x42" + address.packed)
