"""Hostile input on the VXLAN port: every bad datagram is dropped and
counted under exactly one reason, nothing crashes the agent, and the
overlay keeps working during and after the attack.

Two hosts, net1 (VNI 300) with c1 on h1 (10.0.0.1) and c2 on h2
(10.0.0.2).  The attacker is tests/support/tools/junk.py run in h2's namespace: a
plain UDP socket bound to 10.77.0.2 on an ephemeral port, sending to h1's
agent at 10.77.0.1:4789.  Traffic goes only to addresses inside the
namespaces the test made.

Counters are read before and after; the agent drains its socket
asynchronously, so each check polls until the counters reach what is
expected (or settle), with a deadline, and then makes sure nothing more
arrives.  Besides the agent's own drop counters, the kernel's UDP MIB of
h1's namespace (/proc/net/snmp, Udp: InDatagrams counts datagrams handed
to recvmsg/recvmmsg, RcvbufErrors those lost to a full socket buffer) says
how many datagrams the agent really read: each must appear in exactly one
drop counter, or in net1's rx_packets if it passed the header checks.
"""

from __future__ import annotations

import importlib.util
import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import TOOLS, OverlayFactory, checked_transfer, needs, root
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Overlay, Placement
from uvxlan.reference import wire

pytestmark = [root, needs("ping")]

JUNK = TOOLS / "junk.py"
VNI = 300
OTHER_VNI = 301                   # configured nowhere
H1, H2 = "10.77.0.1", "10.77.0.2"
C1_IP, C2_IP = "10.0.0.1", "10.0.0.2"
C1_MAC = bytes.fromhex("02420a000001")   # config.derived_mac of 10.0.0.1
ATTACK_MAC = bytes.fromhex("02aa00000001")  # unicast, locally administered
ETHERTYPE_EXP = b"\x88\xb5"      # IEEE local experimental: no stack answers it

# Drop reasons decided before the datagram counts as received by a VNI
# (csrc/rcv.c: uvx_udp_rx and vxlan_rcv up to count(&v->ctr, ...)).
# Every datagram the agent reads ends in one of these or in rx_packets.
PARSE_REASONS = ("truncated", "bad_flags", "reserved_bits", "unknown_vni",
                 "bad_inner_frame", "too_big")


def _load_junk() -> Any:
    spec = importlib.util.spec_from_file_location("uvx_junk", JUNK)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def vxlan_hdr(vni: int = VNI, flags: int = 0x08, r1: bytes = b"\0\0\0", r2: int = 0) -> bytes:
    return bytes([flags]) + r1 + vni.to_bytes(3, "big") + bytes([r2])


def frame(src: bytes = ATTACK_MAC, dst: bytes = C1_MAC, payload: bytes = b"x" * 46) -> bytes:
    return dst + src + ETHERTYPE_EXP + payload


# --- the rig --------------------------------------------------------------


@dataclass
class Snapshot:
    drops: dict[str, int]
    rx: int                       # net1 rx_packets: datagrams that passed the checks
    port_tx: int                  # frames written to c1's TAP
    udp: dict[str, int]           # h1 namespace's Udp MIB

    def minus(self, before: Snapshot) -> Snapshot:
        return Snapshot(
            drops={k: v - before.drops.get(k, 0) for k, v in self.drops.items()
                   if v != before.drops.get(k, 0)},
            rx=self.rx - before.rx,
            port_tx=self.port_tx - before.port_tx,
            udp={k: v - before.udp.get(k, 0) for k, v in self.udp.items()},
        )

    @property
    def parse_drops(self) -> int:
        return sum(self.drops.get(r, 0) for r in PARSE_REASONS)


class Rig:
    def __init__(self, lab: Lab, ov: Overlay) -> None:
        self.lab = lab
        self.ov = ov
        self.h1 = lab.host("h1")
        self.h2 = lab.host("h2")

    # attacker

    def send(self, payloads: list[bytes]) -> None:
        argv = [sys.executable, str(JUNK), "--to", f"{H1}:4789", "--bind", H2, "send",
                *(p.hex() or "-" for p in payloads)]
        done = self.lab.run(self.h2.netns, argv, timeout=30)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sent"] == len(payloads)

    # observation

    def udp_mib(self) -> dict[str, int]:
        done = self.lab.run(self.h1.netns, ["cat", "/proc/net/snmp"], timeout=10)
        lines = [ln.split() for ln in done.stdout.splitlines() if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}

    def snap(self) -> Snapshot:
        # The kernel's count and the agent's are read one after the other
        # while stray traffic (a container's IPv6 chatter) may arrive:
        # take a pair that no datagram fell between.
        for _ in range(50):
            udp = self.udp_mib()
            st = self.ov.query("h1", "stats")
            if self.udp_mib() == udp:
                break
        net = next(n for n in st["networks"] if n["vni"] == VNI)
        port = next(p for p in st["ports"] if p["network"] == "net1")
        return Snapshot(drops=dict(st["drops"]), rx=net["rx_packets"],
                        port_tx=port["tx_packets"], udp=udp)

    def expect_drops(self, before: Snapshot, expected: dict[str, int],
                     timeout: float = 10.0, quiet: float = 0.3) -> Snapshot:
        """Wait until the drop counters moved by exactly ``expected``, then
        check that nothing more comes in a quiet period."""
        deadline = time.monotonic() + timeout
        delta = self.snap().minus(before)
        while delta.drops != expected and time.monotonic() < deadline:
            time.sleep(0.02)
            delta = self.snap().minus(before)
        time.sleep(quiet)
        delta = self.snap().minus(before)
        assert delta.drops == expected
        return delta

    def settle(self, before: Snapshot, timeout: float = 60.0,
               quiet: float = 1.0) -> Snapshot:
        """Wait until the agent has read everything: neither the kernel's
        count of datagrams read nor the drop counters move for ``quiet``."""
        deadline = time.monotonic() + timeout
        last = self.snap()
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.snap()
            if (now.udp["InDatagrams"], now.drops) != (last.udp["InDatagrams"], last.drops):
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                return now.minus(before)
        pytest.fail(f"counters still moving after {timeout:.0f} s")

    def fdb_macs(self) -> set[str]:
        return {e["mac"] for e in self.ov.query("h1", "fdb")["fdb"]}

    # health

    def alive(self) -> None:
        proc = self.ov.proc("h1")
        assert proc is not None and proc.poll() is None, \
            f"agent of h1 died: {proc and proc.returncode}: {self.ov.log_tail('h1')}"
        assert self.ov.query("h1", "status")["ready"] is True
        log = self.ov.file("h1", ".log").read_text()
        assert "Traceback" not in log, log[-2000:]

    def ping(self, count: int, interval: float = 0.2) -> int:
        """c1 -> c2; how many replies came back."""
        done = self.lab.run(self.lab.container_netns("c1"),
                            ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                             "-W", "1", C2_IP],
                            timeout=count * interval + 15)
        m = re.search(r"(\d+) received", done.stdout)
        assert m, f"no ping summary: {done.stdout!r} {done.stderr!r}"
        return int(m.group(1))

    def healthy(self) -> None:
        self.alive()
        assert self.ping(3) == 3


@pytest.fixture
def rig(lab: Lab, overlay: OverlayFactory) -> Iterator[Rig]:
    ov = overlay({"net1": VNI}, [
        Placement("c1", "h1", "net1", f"{C1_IP}/24"),
        Placement("c2", "h2", "net1", f"{C2_IP}/24"),
    ])
    r = Rig(lab, ov)
    # the overlay works before the attack: c1 and c2 are known to both FDBs
    assert r.ping(3) == 3
    yield r


# --- malformed datagrams ----------------------------------------------------


def test_truncated_datagrams(rig: Rig) -> None:
    """Every length below the 8-byte VXLAN header, zero included: a
    zero-length UDP datagram is valid UDP and recvmmsg returns it as a
    datagram of length 0."""
    before = rig.snap()
    rig.send([bytes([0x08] * n) for n in range(8)])
    delta = rig.expect_drops(before, {"truncated": 8})
    # the kernel handed the agent exactly those 8 (the zero-length one too)
    assert delta.udp["InDatagrams"] == 8 + delta.rx
    rig.healthy()


def test_inner_frame_too_short(rig: Rig) -> None:
    """A valid header in a known VNI but less than an Ethernet header
    behind it (0..13 bytes)."""
    before = rig.snap()
    full = frame()
    rig.send([vxlan_hdr() + full[:n] for n in range(14)])
    delta = rig.expect_drops(before, {"bad_inner_frame": 14})
    assert delta.udp["InDatagrams"] == 14 + delta.rx
    rig.healthy()


def _flag_cases() -> list[tuple[str, bytes, str]]:
    ok = frame()
    cases = [("I clear", vxlan_hdr(flags=0x00) + ok, "bad_flags")]
    for bit in range(8):
        if 1 << bit == 0x08:
            continue
        cases.append((f"flag bit 0x{1 << bit:02x}",
                      vxlan_hdr(flags=0x08 | 1 << bit) + ok, "reserved_bits"))
    for i in range(3):
        r1 = bytearray(3)
        r1[i] = 0x01 << i
        cases.append((f"reserved byte {1 + i}", vxlan_hdr(r1=bytes(r1)) + ok,
                      "reserved_bits"))
    cases.append(("reserved byte 7", vxlan_hdr(r2=0x80) + ok, "reserved_bits"))
    return cases


def test_flags_and_reserved_bits(rig: Rig) -> None:
    """I flag clear -> bad_flags; each of the 7 reserved flag bits and a
    bit in each of the 4 reserved bytes -> reserved_bits.  The inner frame
    is otherwise valid, so only the header can be the reason."""
    cases = _flag_cases()
    assert len(cases) == 12
    first = rig.snap()
    for what, dgram, reason in cases:
        before = rig.snap()
        rig.send([dgram])
        try:
            rig.expect_drops(before, {reason: 1})
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    total = rig.snap().minus(first)
    assert total.drops == {"bad_flags": 1, "reserved_bits": 11}
    assert ATTACK_MAC.hex(":") not in rig.fdb_macs()

    # order of the checks (csrc/vxlan.c): the I flag before reserved bits,
    # reserved bits before the VNI and the inner frame
    before = rig.snap()
    rig.send([vxlan_hdr(flags=0xF7, r1=b"\xff" * 3, r2=0xFF) + frame(),
              vxlan_hdr(vni=OTHER_VNI, flags=0x09) + frame()[:5]])
    rig.expect_drops(before, {"bad_flags": 1, "reserved_bits": 1})
    rig.healthy()


def test_unknown_vni(rig: Rig) -> None:
    """A well-formed frame in a VNI h1 does not have is dropped; the same
    frame in net1's VNI is delivered (the control that shows the frame
    itself is fine)."""
    dgram = frame()
    before = rig.snap()
    rig.send([vxlan_hdr(vni=OTHER_VNI) + dgram])
    delta = rig.expect_drops(before, {"unknown_vni": 1})
    assert ATTACK_MAC.hex(":") not in rig.fdb_macs()

    # the VNI is looked up before the inner frame is checked: a bad frame in
    # an unknown VNI counts as unknown_vni (csrc/rcv.c)
    before = rig.snap()
    rig.send([vxlan_hdr(vni=OTHER_VNI) + dgram[:5],
              vxlan_hdr(vni=OTHER_VNI) + frame(src=bytes(6))])
    rig.expect_drops(before, {"unknown_vni": 2})

    before = rig.snap()
    rig.send([vxlan_hdr(vni=VNI) + dgram])
    deadline = time.monotonic() + 10
    while rig.snap().minus(before).port_tx < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    delta = rig.expect_drops(before, {})
    assert delta.rx >= 1 and delta.port_tx >= 1
    # learned behind the sending VTEP, at the VXLAN port (never the
    # datagram's source port)
    entry = next(e for e in rig.ov.query("h1", "fdb")["fdb"]
                 if e["mac"] == ATTACK_MAC.hex(":"))
    assert (entry["remote"], entry["remote_port"], entry["static"]) == (H2, 4789, False)
    rig.healthy()


@pytest.mark.parametrize("src", [
    pytest.param(bytes.fromhex("01005e000001"), id="multicast"),
    pytest.param(bytes.fromhex("ffffffffffff"), id="broadcast"),
    pytest.param(bytes.fromhex("03aa00000001"), id="group-bit-only"),
    pytest.param(bytes(6), id="all-zero"),
])
def test_bad_inner_source_mac(rig: Rig, src: bytes) -> None:
    """A source MAC that is multicast or zero would poison the FDB."""
    before = rig.snap()
    rig.send([vxlan_hdr() + frame(src=src)])
    rig.expect_drops(before, {"bad_inner_frame": 1})
    assert src.hex(":") not in rig.fdb_macs()
    rig.healthy()


# --- a flood of random junk -----------------------------------------------

BLAST_COUNT = 200_000
BLAST_SEED = 4789
BLAST_MAX_LEN = 1500
BLAST_TIME_LIMIT = 20.0


def _expected_reasons(sent: int) -> dict[str, int]:
    """How the agent must classify the first ``sent`` blast datagrams, by
    the reference codec (uvxlan/reference/wire.py) in rcv.c's order: header, VNI,
    inner frame."""
    pool, cuts = _load_junk().plan(BLAST_COUNT, BLAST_SEED, BLAST_MAX_LEN)
    out: dict[str, int] = {}
    for a, b in cuts[:sent]:
        pkt = bytes(pool[a:b])
        reason = wire.parse(pkt).reason
        if reason not in ("truncated", "bad_flags", "reserved_bits"):
            vni = int.from_bytes(pkt[4:7], "big")
            if vni != VNI:
                reason = "unknown_vni"
        out[reason] = out.get(reason, 0) + 1
    return out


def test_random_junk_flood(rig: Rig) -> None:
    """200k random datagrams (length 0..1500, seeded) as fast as one
    sender can, while c1 pings c2.  The agent survives, the ping gets
    replies during the flood and all of them after it, and every datagram
    the agent read is accounted for:

    * exactly: datagrams read (kernel InDatagrams delta) == header/VNI/inner
      drops + net1 rx_packets (the ping's datagrams), i.e. nothing was read
      and left uncounted, nothing counted twice;
    * junk drops <= sent, and >= half of sent: some may be lost before the
      agent reads them (socket buffer full: RcvbufErrors; or in the
      underlay), but most must arrive;
    * per reason: never more than the reference codec says those datagrams
      deserve, and exactly that if none was lost.
    """
    before = rig.snap()
    argv = [sys.executable, str(JUNK), "--to", f"{H1}:4789", "--bind", H2, "blast",
            "--count", str(BLAST_COUNT), "--seed", str(BLAST_SEED),
            "--max-len", str(BLAST_MAX_LEN), "--time-limit", str(BLAST_TIME_LIMIT)]
    blaster = rig.lab.spawn(rig.h2.netns, argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert blaster.stdout is not None
        ready, _, _ = select.select([blaster.stdout], [], [], 60)
        assert ready and blaster.stdout.readline().strip() == "go", "blaster did not start"
        during = rig.ping(20, interval=0.02)
        # the whole ping (~0.5 s) ran while junk flowed; 200k datagrams take
        # ~1.6 s from one Python sender on the machine this was written on
        overlapped = blaster.poll() is None
        out, err = blaster.communicate(timeout=BLAST_TIME_LIMIT + 30)
    finally:
        if blaster.poll() is None:
            blaster.kill()
            blaster.wait(timeout=10)
    assert blaster.returncode == 0, err
    result = json.loads(out)
    sent, errors, seconds = result["sent"], result["errors"], result["seconds"]

    rig.alive()
    delta = rig.settle(before)
    read = delta.udp["InDatagrams"]
    lost_rcvbuf = delta.udp["RcvbufErrors"]
    junk = {k: v for k, v in delta.drops.items() if k in PARSE_REASONS}
    print(f"\nblast: sent {sent} in {seconds:.2f} s ({sent / seconds:,.0f}/s), "
          f"{errors} send errors; h1 read {read} datagrams, {lost_rcvbuf} lost to a "
          f"full socket buffer; drops {delta.drops}; net1 rx {delta.rx}; "
          f"ping during the blast: {during}/20")

    assert overlapped, "the blast ended before the ping did: raise BLAST_COUNT"
    assert during > 0, "no ping reply while the junk flowed"
    assert read == delta.parse_drops + delta.rx, \
        f"read {read} != drops {delta.parse_drops} + rx {delta.rx}"
    assert delta.parse_drops <= sent
    assert delta.parse_drops >= sent // 2, "most of the junk never reached the agent"
    # random bytes pass the header checks with odds 2^-40: the only
    # datagrams received by net1 are the ping's
    assert delta.rx <= 200
    # no drop outside the parse stage (TAP, split horizon...) came from junk
    assert set(delta.drops) <= set(PARSE_REASONS), delta.drops

    expected = _expected_reasons(sent)
    assert expected.get("pass", 0) == 0
    if errors == 0 and delta.parse_drops == sent:
        assert junk == expected
    else:
        for reason, n in junk.items():
            assert n <= expected.get(reason, 0), (reason, n, expected)

    # after the storm: all pings answered, a checked TCP transfer
    assert rig.ping(5) == 5
    checked_transfer(rig.lab, rig.lab.container_netns("c1"), rig.lab.container_netns("c2"),
                     C2_IP, 4 << 20)
    rig.alive()
