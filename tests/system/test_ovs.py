"""uvxlan against Open vSwitch's userspace datapath, on the wire (root only).

h1 runs a uvxlan agent with container c1 and a static config naming h2 as
a remote; h2 runs no agent but a private ovsdb-server and ovs-vswitchd
(``datapath_type=netdev``, uvxlan.lab.ovs): br-int with a vxlan port keyed
by the VNI towards h1 and a veth to container c2, the underlay address on
br-phy.  Both ends must interoperate on the IANA port 4789 and on 8472:
ping and a checked TCP transfer each way, uvxlan learning c2's MAC behind
h2 from the data, OVS learning c1's MAC on its tunnel port, and a live
capture on h2's underlay showing the right VNI and both inner MACs.

Traffic goes only to addresses inside namespaces this test made; the OVS
daemons are this test's own, ended by their process.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from tests.conftest import OverlayFactory, checked_transfer, needs, root
from tests.support.capture import (
    assert_learned_remote,
    assert_wire_carries,
    capture_vxlan,
    ping_run,
)
from uvxlan import netlink
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Placement
from uvxlan.lab.ovs import OvsHost, ovs_missing, ovs_vxlan_host

VNI = 4242
C1_ADDR, C2_ADDR = "10.0.0.1", "10.0.0.2"
ENDPOINT_MTU = 1450
TRANSFER_BYTES = 16 * 1024 * 1024          # byte-identical, each way

_MISSING = ovs_missing()
pytestmark = [root, needs("ip", "ethtool", "ping", "tshark"),
              pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")]


def _sh(lab: Lab, netns: str, *argv: str) -> str:
    """Run a command in a lab netns; it must succeed."""
    done = lab.run(netns, list(argv), timeout=15)
    assert done.returncode == 0, f"{' '.join(argv)} in {netns}: {done.stderr.strip()}"
    return done.stdout


def _ovs_peer(lab: Lab, port: int) -> OvsHost:
    """On h2, OVS's userspace datapath bridged to container c2 (eth0 =
    C2_ADDR/24), with TX checksum offload off where OVS needs it.

    Checksum offload, both ways.  The lab's "NICs" are veths, and OVS's
    userspace datapath reads them with AF_PACKET, which hands it a
    CHECKSUM_PARTIAL packet as it is: checksum field holding only the
    pseudo-header sum, never completed.  OVS then
    - drops every VXLAN datagram from h1 (coverage counter
      datapath_drop_tunnel_pop_error): the agent's UDP sockets leave the
      outer UDP checksum partial on h1's ul0, and OVS verifies it when it
      decapsulates.  A real NIC completes it on the wire; with TX offload
      off h1's ul0 does so in software.  (Linux's vxlan as the sender has
      the same effect; nothing of uvxlan's own is involved.)
    - encapsulates c2's TCP segments with their checksums unfilled (c2's
      eth0 offloads to OVS as to a NIC), so c1 drops them: no TCP at all
      from c2, ping works.  This is OVS's known limit with kernel ports on
      the netdev datapath: offload has to be off on what feeds it.  (OVS
      3.1's other_config:userspace-tso-enable does not help: it drops such
      packets at the tunnel instead, "Tunneling packets with HW offload
      flags is not supported".)  So c2's eth0 gets TX offload off, as on
      any OVS-userspace host with veth ports.
    """
    lab.add_container("c2")
    _sh(lab, lab.host("h1").netns, "ethtool", "-K", "ul0", "tx", "off")
    ovs = ovs_vxlan_host(lab, "h2", vni=VNI, port=port, peers=[lab.host("h1").underlay_ip],
                         container="c2", address=f"{C2_ADDR}/24", mtu=ENDPOINT_MTU)
    try:
        _sh(lab, ovs.container_netns, "ethtool", "-K", "eth0", "tx", "off")
    except BaseException:
        ovs.stop()
        raise
    return ovs




@pytest.mark.parametrize("port", [4789, 8472])
def test_uvxlan_interoperates_with_ovs_userspace(
    lab: Lab, overlay: OverlayFactory, tmp_path: Path, port: int
) -> None:
    # the lab puts host i at the subnet's i-th address
    h2_ip = str(ipaddress.IPv4Network(lab.subnet).network_address + 2)
    t_start = time.monotonic()
    ov = overlay({"net1": VNI}, [Placement("c1", "h1", "net1", f"{C1_ADDR}/24")],
                 hosts=2, run=["h1"], port=port, extra_remotes={"net1": [h2_ip]})
    assert lab.host("h2").underlay_ip == h2_ip
    c1 = lab.container_netns("c1")
    with _ovs_peer(lab, port) as ovs:
        c2 = ovs.container_netns
        c1_mac = netlink.link_info("eth0", netns=c1)["mac"]
        c2_mac = netlink.link_info("eth0", netns=c2)["mac"]
        assert netlink.link_info("eth0", netns=c1)["mtu"] == ENDPOINT_MTU
        assert netlink.link_info("eth0", netns=c2)["mtu"] == ENDPOINT_MTU
        timings = {"setup": time.monotonic() - t_start}

        def logs() -> str:
            return (f"\nagent: {ov.log_tail('h1', 20)}\novs drops: {ovs.drops()}"
                    f"\novs: {ovs.log_tail(20)}")

        # ping both ways
        done = ping_run(lab, c1, C2_ADDR)
        assert done.returncode == 0, f"c1 -> c2 ping failed: {done.stdout}{logs()}"
        done = ping_run(lab, c2, C1_ADDR)
        assert done.returncode == 0, f"c2 -> c1 ping failed: {done.stdout}{logs()}"

        # checked TCP transfers both ways
        t0 = time.monotonic()
        checked_transfer(lab, c1, c2, C2_ADDR, TRANSFER_BYTES)
        checked_transfer(lab, c2, c1, C1_ADDR, TRANSFER_BYTES)
        timings["transfers"] = time.monotonic() - t0

        # OVS learned c1's MAC on its tunnel port (NORMAL's MAC table)
        fdb = ovs.appctl("fdb/show", "br-int")
        assert c1_mac in fdb, f"OVS did not learn {c1_mac}: {fdb}"

        # uvxlan learned c2's MAC behind h2, reachable on the VXLAN port
        assert_learned_remote(ov.query("h1", "fdb")["fdb"], c2_mac, VNI, h2_ip, port)

        # on the wire at h2 (ul0, now br-phy's port): the VNI and both inner MACs
        t0 = time.monotonic()
        rows, err = capture_vxlan(lab, lab.host("h2").netns, "ul0", port, tmp_path, c1, C2_ADDR)
        timings["capture"] = time.monotonic() - t0
        assert_wire_carries(rows, err, port, VNI, c1_mac, c2_mac)

    # OVS is gone and h2 is as the lab made it: address back on ul0
    h2 = lab.host("h2")
    assert netlink.link_info("ul0", netns=h2.netns)["mtu"] == lab.mtu
    links = _sh(lab, h2.netns, "ip", "-o", "link")
    for gone in ("br-phy", "br-int", "ovs-netdev", "veth-c"):
        assert f" {gone}:" not in links and f" {gone}@" not in links, f"{gone} left: {links}"
    assert f"inet {h2_ip}/" in _sh(lab, h2.netns, "ip", "-o", "-4", "addr", "show", "dev", "ul0")
    done = ping_run(lab, h2.netns, lab.host("h1").underlay_ip, count=1)
    assert done.returncode == 0, f"h2 lost its underlay after OVS stopped: {done.stdout}"

    stats = ov.query("h1", "stats")
    net1 = next(n for n in stats["networks"] if n["name"] == "net1")
    assert net1["tx_packets"] > 0 and net1["rx_packets"] > 0
    print(f"\nlab {lab.name} port {port}: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
          + f"; drops {stats['drops']}")
