"""uvxlan against Linux's own vxlan device, on the wire (root only).

h1 runs a uvxlan agent with container c1; h2 runs no agent but a kernel
``vxlan0`` (learning, flooding to h1 through the all-zeros FDB entry)
bridged with a veth to container c2, set up with ``ip``/``bridge`` as a user
would.  Both ends must interoperate on the IANA port 4789 and on 8472 (the
port older Linux peers default to): ping and a checked TCP transfer each
way, each side learning the other's MAC from the data, and a live capture
on h2's underlay showing the right VNI and c1's inner source MAC.

h2's underlay "NIC" is a veth.  With its TX checksum offload on (the
default, and what containers, VMs and CI runners on one machine have), what
the kernel vxlan sends crosses the veth pair CHECKSUM_PARTIAL: the inner TCP
checksum on the wire holds only the pseudo-header sum, with the outer UDP
checksum zero (``noudpcsum``) or set for the completed frame (``udpcsum``).
uvxlan completes such checksums (csrc/rcv.c, partial_csum_rule), so TCP works
with offloads on, each outer checksum setting, both ways; one matrix keeps
them off (ul0 then completes every checksum itself).

Traffic goes only to addresses inside namespaces this test made.
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
    start_tshark,
)
from uvxlan import netlink
from uvxlan.lab.kvxlan import kernel_fdb, kernel_vxlan_host
from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import Placement

VNI = 4242
C1_ADDR, C2_ADDR = "10.0.0.1", "10.0.0.2"
ENDPOINT_MTU = 1450
TRANSFER_BYTES = 64 * 1024 * 1024          # byte-identical, each way
TCP_PORT = 5201

pytestmark = [root, needs("ip", "bridge", "ethtool", "ping", "tshark")]


def _sh(lab: Lab, netns: str, *argv: str) -> str:
    """Run a command in a lab netns; it must succeed."""
    done = lab.run(netns, list(argv), timeout=15)
    assert done.returncode == 0, f"{' '.join(argv)} in {netns}: {done.stderr.strip()}"
    return done.stdout


def _linux_vxlan_peer(lab: Lab, port: int, *, tx_offload: bool = False,
                      udpcsum: bool | None = None) -> str:
    """On h2, Linux's vxlan bridged to container c2 (eth0 = C2_ADDR/24).

    tx_offload leaves ul0's checksum offload on; udpcsum (None: the kernel's
    default, off for IPv4) sets vxlan0's outer UDP checksum.  Returns c2's netns.
    """
    c2 = lab.add_container("c2")
    h2 = lab.host("h2").netns
    if not tx_offload:
        # ul0 completes every checksum itself, as a real NIC does on the wire.
        _sh(lab, h2, "ethtool", "-K", "ul0", "tx", "off")
    h1_ip = lab.host("h1").underlay_ip
    kernel_vxlan_host(lab, "h2", vni=VNI, port=port, peers=[h1_ip], container="c2",
                      address=f"{C2_ADDR}/24", mtu=ENDPOINT_MTU, udpcsum=udpcsum)
    if udpcsum is not None:
        details = _sh(lab, h2, "ip", "-d", "link", "show", "vxlan0").split()
        assert ("udpcsum" if udpcsum else "noudpcsum") in details, details
    features = _sh(lab, h2, "ethtool", "-k", "ul0")
    assert f"tx-checksumming: {'on' if tx_offload else 'off'}" in features, features
    return c2


def _pseudo_sum(src: str, dst: str, l4len: int) -> int:
    """The folded TCP/IPv4 pseudo-header sum: what a partial checksum holds."""
    words = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
             + bytes([0, 6]) + l4len.to_bytes(2, "big"))
    total = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _h2_wire(lab: Lab, tmp_path: Path, port: int, c2: str) -> list[dict[str, str]]:
    """What h2 sends, seen on h1's ul0 while c2 sends c1 a small TCP transfer:
    per TCP data segment the outer UDP checksum (and tshark's verdict on it),
    the inner TCP checksum (and verdict), and the inner addresses and length."""
    fields = ["udp.checksum", "udp.checksum.status", "tcp.checksum", "tcp.checksum.status",
              "ip.src", "ip.dst", "ip.len"]
    tshark = start_tshark(
        lab, lab.host("h1").netns, tmp_path / "tshark-csum.err",
        ["-i", "ul0", "-f", f"udp port {port} and src host {lab.host('h2').underlay_ip}",
         "-d", f"udp.port=={port},vxlan", "-o", "tcp.check_checksum:TRUE",
         "-o", "udp.check_checksum:TRUE", "-a", "duration:20", "-c", "20",
         "-Y", "tcp.len > 0", "-T", "fields", "-E", "separator=/t"]
        + [a for f in fields for a in ("-e", f)])
    try:
        checked_transfer(lab, c2, lab.container_netns("c1"), C1_ADDR, 1 << 20,
                         port=TCP_PORT + 1)
        out, _ = tshark.communicate(timeout=30)
    finally:
        terminate(tshark)
    rows = [line.split("\t") for line in out.splitlines()]
    return [dict(zip(fields, r, strict=True)) for r in rows if len(r) == len(fields)]


@pytest.mark.parametrize("mode", ["auto", "off", "none"])
@pytest.mark.parametrize("port", [4789, 8472])
def test_uvxlan_interoperates_with_linux_vxlan(
    lab: Lab, overlay: OverlayFactory, tmp_path: Path, port: int, mode: str
) -> None:
    _interop(lab, overlay, tmp_path, port, mode)


@pytest.mark.parametrize("mode", ["auto", "off", "none"])
@pytest.mark.parametrize("udpcsum", [True, False], ids=["udpcsum", "noudpcsum"])
def test_linux_vxlan_with_offloads_on(
    lab: Lab, overlay: OverlayFactory, tmp_path: Path, udpcsum: bool, mode: str
) -> None:
    """h2's ul0 keeps TX checksum offload on: the inner TCP checksums it
    sends are left partial, and uvxlan still carries TCP both ways."""
    _interop(lab, overlay, tmp_path, 4789, mode, tx_offload=True, udpcsum=udpcsum)


def _interop(lab: Lab, overlay: OverlayFactory, tmp_path: Path, port: int, mode: str,
             *, tx_offload: bool = False, udpcsum: bool | None = None) -> None:
    # the lab puts host i at the subnet's i-th address
    h2_ip = str(ipaddress.IPv4Network(lab.subnet).network_address + 2)
    t_start = time.monotonic()
    ov = overlay({"net1": VNI}, [Placement("c1", "h1", "net1", f"{C1_ADDR}/24")],
                 hosts=2, run=["h1"], port=port, extra_remotes={"net1": [h2_ip]},
                 host_options={"offload": mode})
    h1 = lab.host("h1")
    assert lab.host("h2").underlay_ip == h2_ip
    c1 = lab.container_netns("c1")
    c2 = _linux_vxlan_peer(lab, port, tx_offload=tx_offload, udpcsum=udpcsum)
    c1_mac = netlink.link_info("eth0", netns=c1)["mac"]
    c2_mac = netlink.link_info("eth0", netns=c2)["mac"]
    assert c1_mac == "02:42:0a:00:00:01"      # derived from 10.0.0.1
    assert netlink.link_info("eth0", netns=c1)["mtu"] == ENDPOINT_MTU
    assert netlink.link_info("eth0", netns=c2)["mtu"] == ENDPOINT_MTU
    timings = {"setup": time.monotonic() - t_start}

    def agent_log() -> str:
        return ov.log_tail("h1", 20)

    # ping both ways
    done = ping_run(lab, c1, C2_ADDR)
    assert done.returncode == 0, f"c1 -> c2 ping failed: {done.stdout}\nagent: {agent_log()}"
    done = ping_run(lab, c2, C1_ADDR)
    assert done.returncode == 0, f"c2 -> c1 ping failed: {done.stdout}\nagent: {agent_log()}"

    # checked TCP transfers both ways
    checked_transfer(lab, c1, c2, C2_ADDR, TRANSFER_BYTES)
    checked_transfer(lab, c2, c1, C1_ADDR, TRANSFER_BYTES)

    wire = ""
    if tx_offload:
        # What makes this case: on h1's underlay, each inner TCP checksum
        # from h2 holds the pseudo-header sum alone (tshark: Bad = 0); the
        # outer UDP checksum is zero or set, as vxlan0 was told.
        seen = _h2_wire(lab, tmp_path, port, c2)
        assert seen, "tshark saw no TCP data from h2"
        for r in seen:
            src, dst, iplen = (r[k].split(",")[-1] for k in ("ip.src", "ip.dst", "ip.len"))
            assert r["tcp.checksum.status"] == "0", f"inner checksum complete: {r}"
            assert int(r["tcp.checksum"], 16) == _pseudo_sum(src, dst, int(iplen) - 20), r
            assert (int(r["udp.checksum"], 16) == 0) == (not udpcsum), f"outer checksum: {r}"
        wire = (f"; wire from h2: outer udp {sorted({r['udp.checksum.status'] for r in seen})}"
                f" inner tcp {sorted({r['tcp.checksum.status'] for r in seen})}")

    # the kernel learned c1's MAC behind h1 from the data
    fdb = kernel_fdb(lab, "h2")
    assert (c1_mac, h1.underlay_ip) in fdb, f"h2's vxlan0 did not learn {c1_mac}: {fdb}"

    # uvxlan learned c2's MAC behind h2, reachable on the VXLAN port
    assert_learned_remote(ov.query("h1", "fdb")["fdb"], c2_mac, VNI, h2_ip, port)

    # on the wire at h2: the VNI and c1's inner source MAC
    t0 = time.monotonic()
    rows, err = capture_vxlan(lab, lab.host("h2").netns, "ul0", port, tmp_path, c1, C2_ADDR)
    timings["capture"] = time.monotonic() - t0
    assert_wire_carries(rows, err, port, VNI, c1_mac, c2_mac)
    assert c1_mac not in {r[1].split(",")[0] for r in rows}, "c1's MAC as an outer source"

    stats = ov.query("h1", "stats")
    net1 = next(n for n in stats["networks"] if n["name"] == "net1")
    assert net1["tx_packets"] > 0 and net1["rx_packets"] > 0
    print(f"\nlab {lab.name} port {port}: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
          + f"; drops {stats['drops']}" + wire)
