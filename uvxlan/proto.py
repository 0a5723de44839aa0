"""Protocol facts (RFC 7348) the product uses: header sizes, the VNI range,
UDP ports and the MAC text form.  The one Python source for each; the C
library's own values are checked against these when it loads
(``uvxlan.native``)."""

from __future__ import annotations

VXLAN_HLEN = 8
UDP_HLEN = 8
ETH_HLEN = 14
FLAG_I = 0x08
VNI_MAX = 0xFFFFFF
PORT_IANA = 4789          # RFC 7348 section 5
PORT_LINUX_LEGACY = 8472  # Linux's default before the IANA assignment


def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {mac!r}") from None


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)
