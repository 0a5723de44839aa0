"""VXLAN-GBP between uvxlan and Linux's vxlan ``gbp`` device (root only).

h1 runs a uvxlan agent with container c1 (group 10) in a network with
``gbp = true``.  h2 runs no agent: its own stack is the endpoint, behind a
kernel ``vxlan0 ... gbp`` holding 10.0.0.2, and iptables marks what h2
sends through it with group 20 (the kernel copies skb->mark into the GBP
header).  On h1's underlay tshark must read group 10 from uvxlan and 20
from Linux; the kernel must hand h2 our group as skb->mark (an iptables
rule matching mark 10 counts it); and uvxlan's policy, set live with
``uvxlan policy``, must apply to the kernel host's traffic: deny 20 -> 10
and h2's pings fail, counted as gbp_denied and on the rule; remove the
rule and they pass again.

Traffic goes only to addresses inside namespaces this test made.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import OverlayFactory, checked_transfer, needs, root
from tests.support.capture import ping_run, start_tshark, tcp_payload_len, vxlan_segments
from uvxlan.lab.kvxlan import kernel_vxlan_gbp_endpoint
from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import Overlay, Placement

VNI = 4343
PORT = 4789
C1_ADDR, H2_ADDR = "10.0.0.1", "10.0.0.2"
C1_GROUP, H2_GROUP = 10, 20

pytestmark = [root, needs("ip", "bridge", "ping", "tshark", "iptables")]


def _policy(ov: Overlay, *args: str) -> str:
    """uvxlan policy against h1's agent, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "uvxlan", "policy", "--agent",
                           ov.control_socket("h1"), "--network", "net1", *args],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"uvxlan policy {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def _kernel_saw_group(lab: Lab, group: int) -> int:
    """Packets h2's kernel received from vxlan0 with skb->mark = group."""
    out = lab.run(lab.host("h2").netns, ["iptables", "-t", "mangle", "-L", "PREROUTING",
                                         "-v", "-x", "-n"], timeout=10, check=True).stdout
    for line in out.splitlines():
        words = line.split()
        if "vxlan0" in words and f"0x{group:x}" in line:
            return int(words[0])
    raise AssertionError(f"no counting rule for mark {group}: {out}")


def test_groups_cross_both_ways_and_policy_applies_to_the_kernel_host(
        lab: Lab, overlay: OverlayFactory, tmp_path: Path) -> None:
    h2_ip = str(ipaddress.IPv4Network(lab.subnet).network_address + 2)
    ov = overlay({"net1": VNI}, [Placement("c1", "h1", "net1", f"{C1_ADDR}/24")],
                 hosts=2, run=["h1"], port=PORT, extra_remotes={"net1": [h2_ip]},
                 network_options={"net1": {"gbp": True}},
                 endpoint_options={"c1": {"group": C1_GROUP}})
    h1, h2 = lab.host("h1"), lab.host("h2")
    assert h2.underlay_ip == h2_ip
    kernel_vxlan_gbp_endpoint(lab, "h2", vni=VNI, port=PORT, peers=[h1.underlay_ip],
                              address=f"{H2_ADDR}/24", group=H2_GROUP)
    lab.run(h2.netns, ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "vxlan0",
                       "-m", "mark", "--mark", str(C1_GROUP)], timeout=10, check=True)
    c1 = lab.container_netns("c1")

    # The wire: each side's group, as tshark decodes it.
    tshark = start_tshark(
        lab, h1.netns, tmp_path / "tshark.err",
        ["-i", "ul0", "-f", f"udp port {PORT}", "-d", f"udp.port=={PORT},vxlan",
         "-a", "duration:20", "-c", "8", "-Y", "icmp", "-T", "fields", "-E", "separator=/t",
         "-e", "ip.src", "-e", "vxlan.flag_g", "-e", "vxlan.gbp", "-e", "vxlan.vni"])
    try:
        done = ping_run(lab, c1, H2_ADDR, count=4)
        assert done.returncode == 0, f"c1 -> h2: {done.stdout}\n{ov.log_tail('h1', 20)}"
        out, _ = tshark.communicate(timeout=30)
    finally:
        terminate(tshark)
    seen = {(r[0].split(",")[0], r[1], r[2], r[3])
            for r in (line.split("\t") for line in out.splitlines()) if len(r) == 4}
    g = {"True", "1"}
    assert any(s == (h1.underlay_ip, f, str(C1_GROUP), str(VNI)) for s in seen
               for f in g), f"no group {C1_GROUP} from uvxlan on the wire: {seen}"
    assert any(s == (h2_ip, f, str(H2_GROUP), str(VNI)) for s in seen
               for f in g), f"no group {H2_GROUP} from Linux on the wire: {seen}"
    # Linux read our group: h2's stack got c1's packets marked 10.
    assert _kernel_saw_group(lab, C1_GROUP) >= 4

    # TCP super-frames go out cut by UDP_SEGMENT (offload auto): every
    # segment carries the group too, and the transfer arrives whole.  The
    # pcap is walked segment by segment: ul0 (a veth) may pass a datagram
    # uncut, and tshark would decode only its first segment.
    pcap = tmp_path / "tcp.pcap"
    tshark = start_tshark(
        lab, h1.netns, tmp_path / "tshark-tcp.err",
        ["-i", "ul0", "-f", f"udp port {PORT} and src host {h1.underlay_ip}",
         "-a", "duration:60", "-F", "pcap", "-w", str(pcap)])
    try:
        checked_transfer(lab, c1, h2.netns, H2_ADDR, 4 << 20, port=5301)
        time.sleep(0.5)
    finally:
        terminate(tshark)
    segments = vxlan_segments(pcap)
    data = [(flags, group) for flags, group, inner in segments if tcp_payload_len(inner) > 1000]
    assert len(data) >= 100, f"{len(data)} TCP data segments of {len(segments)} captured"
    assert set(data) == {(0x88, C1_GROUP)}, sorted(set(data))[:20]

    # Policy, live, on the kernel host's traffic: 20 -> 10 denied.
    _policy(ov, "--from", str(H2_GROUP), "--to", str(C1_GROUP), "deny")
    before = ov.query("h1", "stats")["drops"].get("gbp_denied", 0)
    done = ping_run(lab, lab.host("h2").netns, C1_ADDR, count=3)
    assert done.returncode != 0, f"h2 -> c1 passed a deny: {done.stdout}"
    done = ping_run(lab, c1, H2_ADDR, count=3)
    assert done.returncode != 0, f"h2's replies passed a deny: {done.stdout}"
    denied = ov.query("h1", "stats")["drops"].get("gbp_denied", 0) - before
    assert denied >= 6, f"only {denied} counted as gbp_denied"
    shown = _policy(ov, "--json")
    assert f'"from": {H2_GROUP}' in shown and '"action": "deny"' in shown, shown
    rows = [line.split() for line in _policy(ov).splitlines()]
    assert [str(H2_GROUP), str(C1_GROUP), "deny"] in [r[:3] for r in rows], rows
    hits = next(int(r[3]) for r in rows if r[:3] == [str(H2_GROUP), str(C1_GROUP), "deny"])
    assert hits >= denied, rows

    # The rule gone, the default (allow) holds again.
    _policy(ov, "--from", str(H2_GROUP), "--to", str(C1_GROUP), "--delete")
    done = ping_run(lab, lab.host("h2").netns, C1_ADDR, count=3)
    assert done.returncode == 0, f"h2 -> c1 after the rule went: {done.stdout}"
    # A default of deny with a rule for this pair only: c1 is reached by 20 alone.
    _policy(ov, "--default", "deny")
    _policy(ov, "--from", str(H2_GROUP), "--to", str(C1_GROUP), "allow")
    done = ping_run(lab, lab.host("h2").netns, C1_ADDR, count=2)
    assert done.returncode == 0, f"h2 -> c1 with its pair allowed: {done.stdout}"


def test_without_gbp_the_kernel_hosts_groups_are_reserved_bits(
        lab: Lab, overlay: OverlayFactory) -> None:
    """Today's rule where the network does not use GBP: Linux's G flag is a
    reserved bit, and such datagrams are dropped (Linux does the same)."""
    h2_ip = str(ipaddress.IPv4Network(lab.subnet).network_address + 2)
    ov = overlay({"net1": VNI}, [Placement("c1", "h1", "net1", f"{C1_ADDR}/24")],
                 hosts=2, run=["h1"], port=PORT, extra_remotes={"net1": [h2_ip]})
    kernel_vxlan_gbp_endpoint(lab, "h2", vni=VNI, port=PORT, peers=[lab.host("h1").underlay_ip],
                              address=f"{H2_ADDR}/24", group=H2_GROUP)
    done = ping_run(lab, lab.host("h2").netns, C1_ADDR, count=2)
    assert done.returncode != 0, done.stdout
    assert ov.query("h1", "stats")["drops"]["reserved_bits"] >= 2
