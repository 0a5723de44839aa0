"""`uvxlan capture` on a running two-host overlay: tshark decodes what it
writes (the VNI and the inner frames of a ping and a TCP transfer with
--outer, the inner frames alone without), SIGINT leaves a valid file,
the filters pick frames in C, one capture runs at a time, and a client
that never reads changes nothing for forwarding (its misses are counted)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import OverlayFactory, checked_transfer, needs, ping, root
from tests.support.capture import read_end, stalled_client
from tests.system.test_control_socket import (  # noqa: F401 - fixtures
    NOBODY,
    Agents,
    agents,
    as_user,
    control_dir,
)
from uvxlan.capture import CaptureRequest
from uvxlan.lab.bench import iperf_server
from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import Overlay, Placement

pytestmark = [root, needs("tshark")]

NETS = {"net1": 300, "net2": 301}
PLACE = [
    Placement("a1", "h1", "net1", "10.0.0.2/24"),
    Placement("a2", "h2", "net1", "10.0.0.3/24"),
    Placement("b1", "h1", "net2", "10.0.1.2/24"),
    Placement("b2", "h2", "net2", "10.0.1.3/24"),
]


def start_capture(ov: Overlay, host: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    """`uvxlan capture` against host's agent; returns once the agent has
    accepted it (its status line on stderr), so nothing sent later is missed."""
    proc = subprocess.Popen([sys.executable, "-m", "uvxlan", "capture", "--agent",
                             ov.control_socket(host), *args],
                            stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if not line.startswith("capturing on"):
        terminate(proc)
        pytest.fail(f"capture did not start: {line}{proc.stderr.read().decode()}")
    return proc


def stop_capture(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """SIGINT, as Ctrl-C: (frames captured, missed) from its last line."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    finally:
        terminate(proc)
    assert proc.stderr is not None
    last = proc.stderr.read().decode().strip().splitlines()[-1]
    assert proc.returncode == 0, last
    m = re.fullmatch(r"(\d+) frames captured, (\d+) missed by the capture", last)
    assert m, last
    return int(m.group(1)), int(m.group(2))


def tshark(pcap: Path | None, *fields: str, stdin: object = None) -> list[list[str]]:
    """Rows of fields tshark reads from pcap (None: stdin); it must read
    the whole file without complaint."""
    done = subprocess.run(["tshark", "-n", "-r", str(pcap) if pcap else "-", "-T", "fields",
                           *(a for f in fields for a in ("-e", f))],
                          stdin=stdin, capture_output=True, text=True, timeout=60)  # type: ignore[call-overload]
    assert done.returncode == 0 and "cut short" not in done.stderr, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


@pytest.mark.parametrize("threads", [True, False], ids=["threads", "on-the-loop"])
def test_outer_shows_vni_and_inner_ping_and_tcp(lab: Lab, overlay: OverlayFactory,
                                                tmp_path: Path, threads: bool) -> None:
    """With the datapath on its threads, or on the agent's loop (threads =
    false), where the rings' producer and consumer are one thread."""
    ov = overlay(NETS, PLACE, host_options={"threads": threads})
    a1, a2 = lab.container_netns("a1"), lab.container_netns("a2")
    pcap = tmp_path / "outer.pcap"
    cap = start_capture(ov, "h1", "--outer", "--network", "net1", "-w", str(pcap))
    assert ping(lab, a1, "10.0.0.3", 3) == 3
    checked_transfer(lab, a1, a2, "10.0.0.3", 2 * 1024 * 1024)
    frames, missed = stop_capture(cap)
    assert missed == 0
    rows = tshark(pcap, "vxlan.vni", "ip.src", "icmp.type", "tcp.dstport", "tcp.srcport")
    assert len(rows) == frames
    # Every record is a VXLAN datagram of net1, as the underlay carries it.
    assert {r[0] for r in rows} == {"300"}
    outer_inner = {tuple(r[1].split(",")) for r in rows}
    h1, h2 = lab.host("h1").underlay_ip, lab.host("h2").underlay_ip
    assert (h1, "10.0.0.2") in outer_inner and (h2, "10.0.0.3") in outer_inner
    icmp = [r[2] for r in rows if r[2]]
    assert icmp.count("8") == 3 and icmp.count("0") == 3     # out and back, both captured
    to_server = [r for r in rows if r[3] == "5201"]
    from_server = [r for r in rows if r[4] == "5201"]
    # The transfer's segments, one datagram each on the wire (2 MB: > 1400 of them).
    assert len(to_server) > 1400 and from_server


def test_inner_only_to_a_pipe_and_filters(lab: Lab, overlay: OverlayFactory,
                                          tmp_path: Path) -> None:
    ov = overlay(NETS, PLACE)
    a1, b1 = lab.container_netns("a1"), lab.container_netns("b1")
    # To stdout, read by tshark from its stdin as it comes.
    cap = start_capture(ov, "h1", "--network", "net1", stdout=subprocess.PIPE)
    assert cap.stdout is not None
    reader = subprocess.Popen(["tshark", "-n", "-l", "-r", "-", "-T", "fields",
                               "-e", "vxlan.vni", "-e", "eth.type", "-e", "icmp.type",
                               "-e", "ip.src"],
                              stdin=cap.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    cap.stdout.close()
    # The other network's capture is refused while this one runs.
    busy = subprocess.run([sys.executable, "-m", "uvxlan", "capture", "--agent",
                           ov.control_socket("h1"), "-w", str(tmp_path / "busy.pcap")],
                          capture_output=True, text=True, timeout=30)
    assert busy.returncode == 1
    assert busy.stderr.strip() == ("uvxlan: error: agent: capture: another capture runs "
                                   "on this agent (one at a time)")
    assert not (tmp_path / "busy.pcap").exists()
    assert ping(lab, a1, "10.0.0.3", 3) == 3
    assert ping(lab, b1, "10.0.1.3", 3) == 3          # net2: not asked for
    frames, missed = stop_capture(cap)
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == frames and missed == 0
    assert all(r[0] == "" for r in rows), "inner frames only: no VXLAN header"
    icmp = [r for r in rows if r[2]]
    # Where frames enter h1's switch: requests from a1's port, replies from the wire.
    assert [r[2] for r in icmp] == ["8", "0"] * 3
    assert {r[3] for r in icmp} == {"10.0.0.2", "10.0.0.3"}

    # A filter by port and EtherType, in C: a1's ARP only, either way.
    pcap = tmp_path / "arp.pcap"
    cap = start_capture(ov, "h1", "--port", a1, "--ethertype", "arp", "-w", str(pcap))
    lab.run(a1, ["ip", "neigh", "flush", "dev", "eth0"])
    assert ping(lab, a1, "10.0.0.3", 2) == 2
    assert ping(lab, b1, "10.0.1.3", 2) == 2
    frames, _ = stop_capture(cap)
    rows = tshark(pcap, "eth.type", "arp.opcode", "arp.src.proto_ipv4")
    assert frames == len(rows) >= 2
    assert {r[0] for r in rows} == {"0x0806"}
    assert {r[2] for r in rows} <= {"10.0.0.2", "10.0.0.3"}
    assert {r[1] for r in rows} == {"1", "2"}      # a1's request, and the answer it got


def test_pcapng_says_where_and_whose(lab: Lab, overlay: OverlayFactory,
                                     tmp_path: Path) -> None:
    """--pcapng --at all: each frame of a ping seen at the four points of
    h1, each on its interface (AGENT:POINT), with its network and a1's
    port in its comment."""
    ov = overlay(NETS, PLACE)
    a1 = lab.container_netns("a1")
    port = next(p["port"] for p in ov.query("h1", "stats")["ports"] if p["netns"] == a1)
    pcap = tmp_path / "all.pcapng"
    cap = start_capture(ov, "h1", "--pcapng", "--at", "all", "--network", "net1",
                        "-w", str(pcap))
    assert ping(lab, a1, "10.0.0.3", 2) == 2
    frames, missed = stop_capture(cap)
    rows = tshark(pcap, "frame.interface_name", "frame.comment", "icmp.type")
    assert len(rows) == frames and missed == 0
    icmp = [r for r in rows if r[2]]
    agent = f"{lab.name}-h1"
    assert sorted((r[0], r[2]) for r in icmp) == sorted(
        [(f"{agent}:port-in", "8"), (f"{agent}:wire-out", "8"),
         (f"{agent}:wire-in", "0"), (f"{agent}:port-out", "0")] * 2)
    assert {r[1] for r in icmp} == {f"net1 (VNI 300), port {port} ({a1}/eth0)"}


def test_a_stalled_reader_changes_nothing_for_forwarding(lab: Lab, overlay: OverlayFactory,
                                                         tmp_path: Path) -> None:
    ov = overlay(NETS, PLACE)
    a1, a2 = lab.container_netns("a1"), lab.container_netns("a2")
    drops_before = ov.query("h1", "stats")["drops"]
    s = stalled_client(ov.control_socket("h1"), CaptureRequest(outer=True, slots=64))
    try:
        time.sleep(0.2)
        assert ping(lab, a1, "10.0.0.3", 20, interval=0.05) == 20
        checked_transfer(lab, a1, a2, "10.0.0.3", 64 * 1024 * 1024)
        # A capture started meanwhile is refused, and stops nothing.
        busy = subprocess.run([sys.executable, "-m", "uvxlan", "capture", "--agent",
                               ov.control_socket("h1"), "-w", str(tmp_path / "x.pcap")],
                              capture_output=True, text=True, timeout=30)
        assert "another capture runs" in busy.stderr
        end = read_end(s)
    finally:
        s.close()
    # The rings filled while nobody read: counted, and nothing else was lost.
    assert end["missed"] > 0 and end["captured"] > 0
    drops = ov.query("h1", "stats")["drops"]
    assert {k: v - drops_before.get(k, 0) for k, v in drops.items()
            if v != drops_before.get(k, 0)} == {}


def test_sigint_mid_transfer_leaves_a_valid_file(lab: Lab, overlay: OverlayFactory,
                                                 tmp_path: Path) -> None:
    ov = overlay(NETS, PLACE)
    a1, a2 = lab.container_netns("a1"), lab.container_netns("a2")
    server = iperf_server(lab, a2, "10.0.0.3")
    try:
        client = lab.spawn(a1, ["iperf3", "-c", "10.0.0.3", "-t", "4", "-b", "200M"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            pcap = tmp_path / "mid.pcap"
            cap = start_capture(ov, "h2", "--outer", "--snaplen", "128", "-w", str(pcap))
            time.sleep(1)
            frames, missed = stop_capture(cap)        # while the transfer goes on
            assert client.wait(30) == 0
        finally:
            terminate(client)
    finally:
        terminate(server)
    rows = tshark(pcap, "vxlan.vni", "frame.cap_len")
    assert len(rows) == frames > 100
    assert sum(r[0] == "300" for r in rows) > 100       # the transfer's, decoded
    assert max(int(r[1]) for r in rows) <= 128
    assert missed >= 0


def test_capture_refused_beyond_root(agents: Agents) -> None:  # noqa: F811 - the fixture
    """Inner frames are private: a control_group member may read counters
    but not capture (the agent checks the peer's uid), and the pcap stays
    unwritten."""
    agents.start("h1", "--control-group", "nogroup")
    path = agents.control_socket("h1")
    rc, out, err = as_user(NOBODY, NOBODY, ["stats", "--agent", path, "--json"])
    assert rc == 0, err
    rc, out, err = as_user(NOBODY, NOBODY, ["capture", "--agent", path, "-w", "-"])
    assert rc == 1 and out == ""
    assert err.strip() == ("uvxlan: error: agent: capture: permission denied; the frames "
                           "are the containers' private traffic: run as root")
