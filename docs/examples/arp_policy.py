"""A custom ARP policy: nobody on the network learns where the denied
addresses are, and their own ARP goes nowhere, so they are unreachable
while everything else works.

    uvxlan hook --agent h1 --network net1 --ethertype 0x0806 \\
        docs/examples/arp_policy.py:hook

ARP_DENY (environment) lists the addresses, comma-separated (10.0.0.3).
"""

from __future__ import annotations

import ipaddress
import os

from uvxlan.hooks import DROP, PASS, Frame, Verdict

DENIED = {ipaddress.IPv4Address(a.strip())
          for a in os.environ.get("ARP_DENY", "10.0.0.3").split(",")}

# RFC 826 over Ethernet, after the 14-byte Ethernet header: hardware and
# protocol types (2 + 2), their lengths (1 + 1), the operation (2), then
# sender MAC, sender IP, target MAC, target IP.
SENDER_IP = slice(14 + 14, 14 + 18)
TARGET_IP = slice(14 + 24, 14 + 28)


def hook(frame: Frame) -> Verdict:
    if frame.ethertype != 0x0806 or len(frame.data) < TARGET_IP.stop:
        return PASS
    sender = ipaddress.IPv4Address(frame.data[SENDER_IP])
    target = ipaddress.IPv4Address(frame.data[TARGET_IP])
    return DROP if sender in DENIED or target in DENIED else PASS
