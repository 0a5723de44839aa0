"""Linux's own vxlan device on a lab host: the peer uvxlan interoperates
with, and the baseline it is measured against.

On the host: ``vxlan0`` (VNI, UDP port, learning on) enslaved to a bridge
``br0``; a veth pair into the container, whose end is ``eth0`` with the
address and MTU 1450.  Flooding goes to each peer VTEP through all-zero FDB
entries, as head-end replication without multicast.  Set up with ``ip`` and
``bridge`` as a user of the kernel device would.
"""

from __future__ import annotations

from uvxlan.lab.netns import Lab


def kernel_vxlan_host(lab: Lab, host: str, *, vni: int, port: int, peers: list[str],
                      container: str, address: str, mtu: int = 1450,
                      udpcsum: bool | None = None) -> None:
    """udpcsum: the outer UDP checksum on (udpcsum) or off (noudpcsum);
    None leaves the kernel's default (off over IPv4)."""
    h = lab.host(host)
    ns = lab.container_netns(container)
    csum = [] if udpcsum is None else ["udpcsum" if udpcsum else "noudpcsum"]
    steps = [
        (h.netns, ["ip", "link", "add", "vxlan0", "type", "vxlan", "id", str(vni),
                   "local", h.underlay_ip, "dstport", str(port), "learning", *csum]),
        (h.netns, ["ip", "link", "set", "vxlan0", "mtu", str(mtu)]),
        (h.netns, ["ip", "link", "add", "br0", "type", "bridge"]),
        (h.netns, ["ip", "link", "set", "vxlan0", "master", "br0"]),
        (h.netns, ["ip", "link", "add", "veth-c", "mtu", str(mtu), "type", "veth",
                   "peer", "name", "eth0", "mtu", str(mtu), "netns", ns]),
        (h.netns, ["ip", "link", "set", "veth-c", "master", "br0"]),
        (h.netns, ["ip", "link", "set", "vxlan0", "up"]),
        (h.netns, ["ip", "link", "set", "veth-c", "up"]),
        (h.netns, ["ip", "link", "set", "br0", "up"]),
        (ns, ["ip", "addr", "add", address, "dev", "eth0"]),
        (ns, ["ip", "link", "set", "eth0", "up"]),
        (ns, ["ip", "link", "set", "lo", "up"]),
    ]
    steps += [(h.netns, ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0",
                         "dst", peer]) for peer in peers]
    for netns, argv in steps:
        lab.run(netns, argv, timeout=10, check=True)


def kernel_vxlan_gbp_endpoint(lab: Lab, host: str, *, vni: int, port: int, peers: list[str],
                              address: str, group: int, mtu: int = 1450) -> None:
    """The host itself as an endpoint behind Linux's vxlan with ``gbp``:
    ``vxlan0`` holds address, and what the host sends through it is marked
    with group (iptables' MARK in mangle OUTPUT), which the kernel puts in
    the GBP header (skb->mark, include/net/vxlan.h).  Received frames get
    their group as skb->mark.  The mark is set on the host, not in a
    container: crossing a veth into another netns clears skb->mark."""
    h = lab.host(host)
    steps = [
        ["ip", "link", "add", "vxlan0", "type", "vxlan", "id", str(vni),
         "local", h.underlay_ip, "dstport", str(port), "learning", "gbp"],
        ["ip", "link", "set", "vxlan0", "mtu", str(mtu)],
        ["ip", "addr", "add", address, "dev", "vxlan0"],
        ["ip", "link", "set", "vxlan0", "up"],
        ["iptables", "-t", "mangle", "-A", "OUTPUT", "-o", "vxlan0",
         "-j", "MARK", "--set-mark", str(group)],
    ]
    steps += [["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst", peer]
              for peer in peers]
    for argv in steps:
        lab.run(h.netns, argv, timeout=10, check=True)


def kernel_fdb(lab: Lab, host: str) -> list[tuple[str, str]]:
    """(MAC, dst VTEP) pairs of vxlan0's forwarding table, learned ones included."""
    out = lab.run(lab.host(host).netns, ["bridge", "fdb", "show", "dev", "vxlan0"],
                  timeout=10, check=True).stdout
    pairs = []
    for line in out.splitlines():
        words = line.split()
        if "dst" in words:
            pairs.append((words[0], words[words.index("dst") + 1]))
    return pairs
