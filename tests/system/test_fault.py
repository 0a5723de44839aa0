"""Fault injection (uvxlan fault) on a two-host lab overlay, measured:
loss within a binomial bound of the setting, added round-trip time close
to the delay, duplicates as ping counts them, a TCP transfer byte-identical
under loss and reordering, corruption caught by the receiver's TCP
checksum, a rate limit that iperf3 sees.  Faults go on h1's egress to h2
only (the agent's side that sends), so each ping crosses one faulted leg."""

from __future__ import annotations

import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OverlayFactory, checked_transfer, needs, ping, root
from uvxlan.control import query_agent
from uvxlan.lab import bench
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Overlay, Placement

pytestmark = root

NETS = {"net1": 4101, "net2": 4102}
CSRC = Path(__file__).resolve().parents[2] / "csrc"
PLACE = [
    Placement("a1", "h1", "net1", "10.0.0.2/24"),
    Placement("a2", "h2", "net1", "10.0.0.3/24"),
    Placement("b1", "h1", "net2", "10.0.1.2/24"),
    Placement("b2", "h2", "net2", "10.0.1.3/24"),
]


def fault(ov: Overlay, host: str, *args: str) -> str:
    """uvxlan fault against host's agent, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "uvxlan", "fault", "--agent",
                           ov.control_socket(host), *args],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout


def entry(ov: Overlay, host: str, network: str | None = None) -> dict[str, Any]:
    """The one fault entry of host (for network, if given), with counters."""
    found = [e for e in query_agent(ov.control_socket(host), "faults")["faults"]
             if network is None or e["network"] == network]
    assert len(found) == 1, found
    return found[0]


def pings(lab: Lab, netns: str, ip: str, count: int,
          interval: float) -> tuple[int, int, list[float]]:
    """(received, duplicates, round-trip times in ms) of count pings."""
    done = lab.run(netns, ["ping", "-c", str(count), "-i", str(interval), "-W", "2", ip],
                   timeout=count * interval + 30)
    rx = re.search(r"(\d+) received", done.stdout)
    dup = re.search(r"\+(\d+) duplicates", done.stdout)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", done.stdout)]
    return (int(rx.group(1)) if rx else 0), (int(dup.group(1)) if dup else 0), rtts


def within_binomial(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture
def ov(lab: Lab, overlay: OverlayFactory) -> Overlay:
    o = overlay(NETS, PLACE)
    # Addresses resolved before any fault, so only the pings are judged.
    assert ping(lab, lab.container_netns("a1"), "10.0.0.3", 2) == 2
    assert ping(lab, lab.container_netns("b1"), "10.0.1.3", 2) == 2
    return o


def test_loss_within_a_binomial_bound_and_cleared(lab: Lab, ov: Overlay) -> None:
    """300 pings, 20 % of h1's datagrams to h2 in net1 lost: replies within
    4 sigma of 240, the entry's counters agree with ping and with the
    fault_loss drop; net2 untouched; --clear ends it."""
    h2 = lab.host("h2").underlay_ip
    a1 = lab.container_netns("a1")
    out = fault(ov, "h1", "--peer", h2, "--network", "net1", "--loss", "20")
    assert "loss 20%" in out
    n = 300
    got, _, _ = pings(lab, a1, "10.0.0.3", n, 0.01)
    e = entry(ov, "h1")
    print(f"\nloss 20 %: {got}/{n} replies ({100 * (n - got) / n:.1f} % lost),"
          f" counters {e['counters']}")
    assert within_binomial(n - got, n, 0.2), got
    assert e["peer"] == h2 and e["network"] == "net1" and e["loss"] == 20.0
    c = e["counters"]
    # The entry also judged what else a1 sent h2's way (an ARP refresh):
    # each of those may have been lost too.
    others = c["matched"] - n
    assert 0 <= others <= 10 and n - got <= c["lost"] <= n - got + others
    stats = ov.query("h1", "stats")
    net1 = next(x for x in stats["networks"] if x["name"] == "net1")
    assert net1["drops"]["fault_loss"] == c["lost"]
    # Another network to the same peer is not covered by the entry.
    assert ping(lab, lab.container_netns("b1"), "10.0.1.3", 20, 0.01) == 20
    assert "cleared 1 fault entry" in fault(ov, "h1", "--peer", h2, "--network", "net1",
                                            "--clear")
    assert query_agent(ov.control_socket("h1"), "faults")["faults"] == []
    assert ping(lab, a1, "10.0.0.3", 50, 0.01) == 50


def test_delay_adds_to_the_round_trip(lab: Lab, ov: Overlay) -> None:
    """delay 20ms jitter 5ms on h1 -> h2: the median round trip grows by
    the delay, within 30 % below and 60 % above (jitter is symmetric, so
    the median keeps it; a loaded machine's scheduling adds, never takes)."""
    h2 = lab.host("h2").underlay_ip
    a1 = lab.container_netns("a1")
    _, _, base = pings(lab, a1, "10.0.0.3", 40, 0.02)
    fault(ov, "h1", "--peer", h2, "--delay", "20ms", "--jitter", "5ms")
    got, _, rtts = pings(lab, a1, "10.0.0.3", 60, 0.05)
    b, d = statistics.median(base), statistics.median(rtts)
    print(f"\ndelay 20ms jitter 5ms: median rtt {b:.3f} ms -> {d:.3f} ms"
          f" (+{d - b:.2f} ms; min {min(rtts):.2f}, max {max(rtts):.2f})")
    assert got >= 59                                  # the odd loss of a loaded machine
    assert 20 * 0.7 <= d - b <= 20 * 1.6, (b, d)
    # Jitter spreads them: not all within a millisecond of each other.
    assert max(rtts) - min(rtts) > 1.0
    c = entry(ov, "h1")["counters"]
    assert c["delayed"] >= 60 and c["lost"] == 0


def test_duplicates_as_ping_counts_them(lab: Lab, ov: Overlay) -> None:
    """duplicate 30 % on h1 -> h2: each duplicated request brings a second
    reply, which ping counts; the counter agrees; within 4 sigma."""
    h2 = lab.host("h2").underlay_ip
    fault(ov, "h1", "--peer", h2, "--duplicate", "30")
    n = 200
    got, dups, _ = pings(lab, lab.container_netns("a1"), "10.0.0.3", n, 0.01)
    c = entry(ov, "h1")["counters"]
    print(f"\nduplicate 30 %: {dups} duplicates in {n} pings, counters {c}")
    assert got == n
    assert within_binomial(dups, n, 0.3), dups
    # Whatever else a1 sent h2's way (an ARP refresh) may be doubled too.
    others = c["matched"] - n
    assert 0 <= others <= 10 and dups <= c["duplicated"] <= dups + others


def test_tcp_byte_identical_under_loss_and_reordering(lab: Lab, ov: Overlay) -> None:
    """2 % loss, 5 % reordering and 1 % duplicates both ways (a1 -> a2 is
    h1's egress, a2's acks h2's): a 16 MB transfer arrives byte for byte."""
    h1, h2 = lab.host("h1").underlay_ip, lab.host("h2").underlay_ip
    for host, peer in (("h1", h2), ("h2", h1)):
        fault(ov, host, "--peer", peer, "--loss", "2", "--reorder", "5", "--duplicate", "1")
    checked_transfer(lab, lab.container_netns("a1"), lab.container_netns("a2"),
                     "10.0.0.3", 16 * 1024 * 1024)
    c = entry(ov, "h1")["counters"]
    print(f"\nloss 2 %, reorder 5 %, duplicate 1 %: 16 MB identical; h1 counters {c}")
    assert c["lost"] > 0 and c["reordered"] > 0 and c["duplicated"] > 0
    assert within_binomial(c["lost"], c["matched"], 0.02)


def _tcp_csum_errors(lab: Lab, netns: str) -> int:
    """Tcp InCsumErrors of a namespace (/proc/net/snmp)."""
    lines = [ln.split() for ln in lab.run(netns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
             if ln.startswith("Tcp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["InCsumErrors"])


def test_corruption_caught_by_the_inner_checksum(lab: Lab, ov: Overlay) -> None:
    """corrupt 2 % on h1 -> h2: a 16 MB transfer still arrives identical,
    because a2's kernel finds each flipped bit (TCP InCsumErrors grows by
    about what the entry corrupted) and TCP sends the segment again."""
    h2 = lab.host("h2").underlay_ip
    a2 = lab.container_netns("a2")
    before = _tcp_csum_errors(lab, a2)
    fault(ov, "h1", "--peer", h2, "--corrupt", "2")
    checked_transfer(lab, lab.container_netns("a1"), a2, "10.0.0.3", 16 * 1024 * 1024)
    caught = _tcp_csum_errors(lab, a2) - before
    c = entry(ov, "h1")["counters"]
    print(f"\ncorrupt 2 %: 16 MB identical; corrupted {c['corrupted']} of {c['matched']},"
          f" a2's TCP InCsumErrors +{caught}")
    assert c["corrupted"] > 0
    # Every corrupted segment that carried data is caught; pure acks have
    # no payload to flip and are not counted as corrupted.
    assert caught >= c["corrupted"] * 0.9


@needs("iperf3")
def test_rate_limit_seen_by_iperf3(lab: Lab, ov: Overlay) -> None:
    """rate 20mbit on h1 -> h2: iperf3 (TCP, 4 s) gets near 20 Mbit/s of
    goodput (the rate counts outer headers); reported, asserted loosely."""
    h2 = lab.host("h2").underlay_ip
    fault(ov, "h1", "--peer", h2, "--rate", "20mbit")
    data = bench.iperf(lab, lab.container_netns("a1"), lab.container_netns("a2"),
                       "10.0.0.3", 4.0, 1)
    mbits = float(data["end"]["sum_received"]["bits_per_second"]) / 1e6
    c = entry(ov, "h1")["counters"]
    print(f"\nrate 20mbit: iperf3 {mbits:.1f} Mbit/s received, counters {c}")
    assert 20 * 0.6 <= mbits <= 20 * 1.05, mbits
    assert c["delayed"] > 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_corruption_parser_and_rules_clean_under_asan_ubsan(tmp_path: Path) -> None:
    """csrc/fuzz/fuzz_fault.c built with gcc's AddressSanitizer and UBSan,
    fed random frames and IP-looking ones: no read or flip past a frame,
    a corrupted copy differs in one bit of its payload, every slot comes
    back.  (libFuzzer runs the same target: make fuzz-fault.)"""
    exe = tmp_path / "fuzz_fault"
    subprocess.run(
        ["gcc", "-std=gnu11", "-D_GNU_SOURCE", "-DUVX_FUZZ_STANDALONE", "-g", "-O1",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-Wall", "-Wextra", "-Werror", f"-I{CSRC}",
         str(CSRC / "fuzz" / "fuzz_fault.c"), str(CSRC / "fault.c"), "-o", str(exe)],
        check=True, timeout=120)
    run = subprocess.run([str(exe), "200000", "7"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    corrupted = int(re.search(r"(\d+) corrupted", run.stdout).group(1))  # type: ignore[union-attr]
    assert corrupted > 10_000 and "no findings" in run.stdout


def test_refusals_are_one_line(lab: Lab, ov: Overlay) -> None:
    """What only the agent can refuse (a network it does not serve) comes
    back as one line, and nothing is set."""
    done = subprocess.run([sys.executable, "-m", "uvxlan", "fault", "--agent",
                           ov.control_socket("h1"), "--network", "web", "--loss", "1"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert done.stderr == "uvxlan: error: agent: fault: this agent serves no network 'web'\n"
    assert fault(ov, "h1") == "no faults set\n"


def test_a_restarted_agent_has_no_faults(lab: Lab, ov: Overlay) -> None:
    """Faults live in the agent's memory only: after a stop and a start of
    the same agent (which adopts its TAPs), none is set and pings pass."""
    h2 = lab.host("h2").underlay_ip
    fault(ov, "h1", "--peer", h2, "--loss", "100")
    assert ping(lab, lab.container_netns("a1"), "10.0.0.3", 2) == 0
    assert ov.stop("h1") == 0
    ov.start("h1")
    assert fault(ov, "h1") == "no faults set\n"
    assert ping(lab, lab.container_netns("a1"), "10.0.0.3", 3) == 3
