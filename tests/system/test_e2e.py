"""End to end through two lab hosts running uvxlan: ping, a checked TCP
transfer, isolation between networks, and what the wire carries (tshark)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import OverlayFactory, checked_transfer, needs, ping, root
from uvxlan import netlink
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Placement

pytestmark = root

NETS = {"net1": 4097, "net2": 4098}
PLACE = [
    Placement("a1", "h1", "net1", "10.0.0.2/24"),
    Placement("a2", "h2", "net1", "10.0.0.3/24"),
    Placement("b1", "h1", "net2", "10.0.0.4/24"),
    Placement("b2", "h2", "net2", "10.0.0.5/24"),
]


@pytest.mark.parametrize("mode", ["auto", "off", "none"])
def test_ping_transfer_and_isolation(lab: Lab, overlay: OverlayFactory, mode: str) -> None:
    ov = overlay(NETS, PLACE, host_options={"offload": mode})
    features = ov.query("h1", "status")["features"]
    # This kernel has every offload: each mode must use what it names.
    assert features == {"auto": {"tap_vnet_hdr": True, "udp_gso": True, "udp_gro": True},
                        "off": {"tap_vnet_hdr": True, "udp_gso": False, "udp_gro": False},
                        "none": {"tap_vnet_hdr": False, "udp_gso": False,
                                 "udp_gro": False}}[mode]
    a1, a2 = lab.container_netns("a1"), lab.container_netns("a2")
    assert netlink.link_info("eth0", netns=a1)["mtu"] == 1450
    assert ping(lab, a1, "10.0.0.3", 3) == 3
    assert ping(lab, a2, "10.0.0.2", 3) == 3
    checked_transfer(lab, a1, a2, "10.0.0.3", 64 * 1024 * 1024)
    checked_transfer(lab, a2, a1, "10.0.0.2", 64 * 1024 * 1024)
    # net2 shares the subnet but not the segment.
    assert ping(lab, a1, "10.0.0.5", 2) == 0
    assert ping(lab, a1, "10.0.0.4", 2) == 0
    assert ping(lab, lab.container_netns("b1"), "10.0.0.5", 2) == 2
    stats = ov.query("h1", "stats")
    net1 = next(n for n in stats["networks"] if n["name"] == "net1")
    assert net1["tx_packets"] > 40_000 and net1["rx_packets"] > 40_000
    assert not any(stats["drops"].values()), stats["drops"]
    # The peers' MACs were learned from the data, as remote entries.
    fdb = ov.query("h1", "fdb")["fdb"]
    a2_mac = netlink.link_info("eth0", netns=a2)["mac"]
    learned = [e for e in fdb if e["mac"] == a2_mac and e["vni"] == 4097]
    assert learned and learned[0]["remote"] == lab.host("h2").underlay_ip
    assert not learned[0]["static"]


def tshark_on_h2(lab: Lab, *args: str) -> subprocess.Popen[str]:
    """tshark on h2's underlay with args, returned once it is capturing
    (or after 15 s, or if it exits: its output then says why)."""
    cap = lab.spawn(lab.host("h2").netns, ["tshark", "-l", "-n", "-i", "ul0", *args],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert cap.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = cap.stderr.readline()
        if "Capturing on" in line or not line:
            break
    return cap


def capture(lab: Lab, fields: list[str], *options: str) -> subprocess.Popen[str]:
    """tshark on h2's underlay, 6 VXLAN datagrams, returned once capturing."""
    argv = ["-f", "udp port 4789", "-c", "6", "-a", "duration:20", *options, "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    return tshark_on_h2(lab, *argv)


def rows_while_pinging(lab: Lab, cap: subprocess.Popen[str]) -> list[list[str]]:
    try:
        assert ping(lab, lab.container_netns("a1"), "10.0.0.3", 4) == 4
        out, _ = cap.communicate(timeout=30)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait(5)
    return [r.split("\t") for r in out.strip().splitlines()]


@needs("tshark")
def test_tshark_decodes_the_wire_as_vxlan(lab: Lab, overlay: OverlayFactory) -> None:
    # Without UDP GSO the sender writes the UDP header itself: zero
    # checksum, source port from the flow hash over the whole range.
    overlay(NETS, PLACE[:2], host_options={"offload": "off"})
    a1_mac = netlink.link_info("eth0", netns=lab.container_netns("a1"))["mac"]
    cap = capture(lab, ["vxlan.vni", "eth.src", "ip.src", "udp.srcport", "udp.checksum"])
    rows = rows_while_pinging(lab, cap)
    assert len(rows) == 6
    from_a1 = [r for r in rows if r[1].split(",")[-1] == a1_mac]
    assert from_a1, rows
    for vni, eth_src, ip_src, sport, csum in from_a1:
        assert vni == "4097"
        # Outer then inner Ethernet source: the inner one is the container's.
        assert eth_src.split(",")[-1] == a1_mac
        assert ip_src.split(",")[0] == lab.host("h1").underlay_ip
        assert 49152 <= int(sport) <= 65535
        assert int(csum, 16) == 0         # RFC 7348: SHOULD be zero over IPv4


@needs("tshark")
@pytest.mark.parametrize("options", [{"udp_checksum": True, "offload": "off"},
                                     {"offload": "auto"}], ids=["off+udp_checksum", "auto"])
def test_outer_udp_checksum_when_sent_is_valid(lab: Lab, overlay: OverlayFactory,
                                               options: dict[str, object]) -> None:
    # With UDP GSO (auto) the kernel computes outer checksums: GSO needs them.
    overlay(NETS, PLACE[:2], host_options=options)
    # A veth with TX checksum offload leaves the kernel's checksums partial
    # in a capture; a physical NIC would fill them.  Off, the kernel does.
    for h in ("h1", "h2"):
        lab.run(lab.host(h).netns, ["ethtool", "-K", "ul0", "tx", "off"], check=True)
    # Offloads on a veth would leave checksums partial in a capture; ours
    # are computed in userspace, so tshark must find every one good.
    cap = capture(lab, ["udp.checksum", "udp.checksum.status"],
                  "-o", "udp.check_checksum:TRUE")
    rows = rows_while_pinging(lab, cap)
    assert len(rows) == 6
    for csum, status in rows:
        assert int(csum, 16) != 0
        assert status == "1", rows        # 1 = Good


@needs("tshark", "ethtool")
@pytest.mark.parametrize("mode", ["auto", "off", "none"])
def test_the_wire_carries_no_datagram_above_the_mtu(lab: Lab, overlay: OverlayFactory,
                                                    mode: str) -> None:
    """With the underlay veths' offloads off, a capture shows what a physical
    wire would carry: every datagram fits the 1500-byte MTU, none is a
    fragment, even while super-frames cross the fast path."""
    overlay(NETS, PLACE[:2], host_options={"offload": mode})
    for h in ("h1", "h2"):
        lab.run(lab.host(h).netns, ["ethtool", "-K", "ul0", "tx", "off", "tso", "off",
                                    "gso", "off", "gro", "off"], check=True)
    cap = tshark_on_h2(lab, "-f", "ip", "-c", "3000", "-a", "duration:30", "-T", "fields",
                       "-e", "ip.len", "-e", "ip.flags.mf", "-e", "ip.frag_offset")
    try:
        checked_transfer(lab, lab.container_netns("a1"), lab.container_netns("a2"),
                         "10.0.0.3", 8 * 1024 * 1024)
        out, _ = cap.communicate(timeout=40)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait(5)
    rows = [r.split("\t") for r in out.strip().splitlines()]
    lengths = [int(r[0].split(",")[0]) for r in rows]
    assert len(rows) >= 3000 and max(lengths) == 1500     # full-sized, no more
    assert all(r[1].split(",")[0] in ("0", "False") for r in rows), "fragment seen"
    assert all(r[2].split(",")[0] == "0" for r in rows), "fragment seen"
