"""Fault injection's pieces (csrc/fault.c) on their own, no root: the delay
queue against a sorted list, the token bucket's times against the rate,
where corruption goes (scapy's frames, every truncation within bounds),
each rule of a fault table at given times; and the Python side: parsing
the command line's values, checking a request, the agent's answers
with a fake datapath.  tests/system/test_fault.py measures the same
effects on a running overlay."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from tests.support import native_testing as native
from uvxlan import fault
from uvxlan.errors import ConfigError
from uvxlan.fault import FaultSpec

MS = 1_000_000          # ns
T0 = 10**12             # a monotonic time far from 0


def tcp_frame(payload: int = 100, vlan: int | None = None) -> bytes:
    head = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan is not None:
        head = head / Dot1Q(vlan=vlan)
    pkt = head / IP(src="10.0.0.2", dst="10.0.0.3") / TCP(sport=1000, dport=2000, flags="PA")
    return bytes(pkt / Raw(bytes(i & 0xFF for i in range(payload))))


# --- The delay queue ------------------------------------------------------------


def test_heap_pops_in_due_order_ties_in_push_order() -> None:
    rng = random.Random(7)
    h = native.FaultHeap(512)
    dues = {slot: rng.randrange(0, 50) for slot in range(512)}   # many ties
    for slot, due in dues.items():
        h.push(slot, due)
    assert h.next_due() == min(dues.values())
    order = []
    while (slot := h.pop_due(10**9)) is not None:
        order.append(slot)
    # Sorted by due, and among equal dues by push order (slot order here).
    assert order == sorted(dues, key=lambda s: (dues[s], s))
    assert h.next_due() is None


def test_heap_pops_only_what_is_due() -> None:
    h = native.FaultHeap(4)
    h.push(0, 30)
    h.push(1, 10)
    h.push(2, 20)
    assert h.pop_due(9) is None
    assert h.pop_due(20) == 1 and h.pop_due(20) == 2 and h.pop_due(20) is None
    assert h.next_due() == 30


@given(st.lists(st.tuples(st.sampled_from(["push", "move", "remove", "pop"]),
                          st.integers(0, 31), st.integers(0, 100)), max_size=200))
@settings(max_examples=200, deadline=None)
def test_heap_against_a_model(ops: list[tuple[str, int, int]]) -> None:
    """Any sequence of pushes, moves (a new due, behind its equals),
    removes and pops gives what a plain list of (due, order) gives."""
    h = native.FaultHeap(32)
    model: dict[int, tuple[int, int]] = {}
    for seq, (op, slot, due) in enumerate(ops):
        if op == "push" and slot not in model:
            h.push(slot, due)
            model[slot] = (due, seq)
        elif op == "move" and slot in model:
            h.move(slot, due)
            model[slot] = (due, seq)
        elif op == "remove" and slot in model:
            h.remove(slot)
            del model[slot]
        elif op == "pop":
            want = min(model, key=lambda s: model[s], default=None)
            if want is not None and model[want][0] > due:
                want = None
            assert h.pop_due(due) == want
            if want is not None:
                del model[want]
        assert h.next_due() == (min(d for d, _ in model.values()) if model else None)


# --- The token bucket -----------------------------------------------------------


def test_bucket_sends_a_burst_then_paces_at_the_rate() -> None:
    """10 Mbit/s, 1250-byte frames (1 ms each) offered all at once: the
    first 10 ms of credit leave at once, the rest one per ms, in order,
    and what would wait beyond 50 ms is dropped."""
    rate, size = 10_000_000, 1250
    due = native.bucket_run(rate, 1500, [(T0, size)] * 100)
    sent = [d for d in due if d is not None]
    immediate = [d for d in sent if d == T0]
    assert len(immediate) == 10
    waits = [d - T0 for d in sent[10:]]
    assert waits == [(i + 1) * MS for i in range(len(waits))]
    assert len(sent) == 10 + 50 and due[60:] == [None] * 40


def test_bucket_long_run_matches_the_rate() -> None:
    """Frames offered faster than the rate for a simulated second: what
    leaves within it is the rate, within a frame or two."""
    rate, size = 1_000_000, 1000            # 8 ms per frame
    frames = [(T0 + i * 2 * MS, size) for i in range(500)]     # offered every 2 ms
    due = native.bucket_run(rate, 1500, frames)
    within = [d for d in due if d is not None and d <= T0 + 1000 * MS]
    assert abs(len(within) * size * 8 - rate) <= 2 * size * 8 + rate * 0.01
    sent = [d for d in due if d is not None]
    assert sent == sorted(sent)                # in order


def test_bucket_without_a_rate_never_holds() -> None:
    assert native.bucket_run(0, 1500, [(T0, 60000)] * 5) == [T0] * 5


# --- Where corruption goes -------------------------------------------------------


@pytest.mark.parametrize("vlan", [None, 7])
def test_payload_span_tcp(vlan: int | None) -> None:
    f = tcp_frame(100, vlan)
    off = 14 + (4 if vlan else 0) + 20 + 20
    assert native.payload_span(f) == (off, off + 100)


def test_payload_span_other_protocols() -> None:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    udp = bytes(eth / IP() / UDP() / Raw(b"x" * 30))
    assert native.payload_span(udp) == (42, 72)
    icmp = bytes(eth / IP() / ICMP() / Raw(b"y" * 56))
    assert native.payload_span(icmp) == (42, 98)
    v6 = bytes(eth / IPv6() / TCP() / Raw(b"z" * 10))
    assert native.payload_span(v6) == (74, 84)
    # Ethernet padding is in no checksum: the span ends with the IP packet.
    short = bytes(eth / IP() / UDP() / Raw(b"a")) + b"\0" * 20
    assert native.payload_span(short) == (42, 43)


@pytest.mark.parametrize("frame", [
    bytes(Ether() / ARP()),
    bytes(Ether() / IP() / TCP(flags="A")),                      # an ack: no payload
    bytes(Ether() / IP(flags="MF") / UDP() / Raw(b"x" * 20)),    # a fragment
    bytes(Ether() / IP(frag=10) / Raw(b"x" * 20)),
    bytes(Ether() / IP(proto=47) / Raw(b"x" * 20)),              # GRE: not ours to find
], ids=["arp", "ack", "first-fragment", "fragment", "gre"])
def test_payload_span_none(frame: bytes) -> None:
    assert native.payload_span(frame) is None


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_payload_span_stays_within_any_bytes(data: bytes) -> None:
    """Random bytes, and every truncation of a real frame: a span, if any,
    lies within the frame (C reads nothing past it: the fuzz target runs
    the same function under AddressSanitizer)."""
    for f in (data, tcp_frame(40)[:len(data)]):
        span = native.payload_span(f)
        assert span is None or 0 < span[0] < span[1] <= len(f)


# --- The rules, one at a time ----------------------------------------------------


def test_loss_is_binomial() -> None:
    t = native.FaultTable(loss=200_000)           # 20 %
    n, f = 20_000, tcp_frame()
    lost = sum(t.judge(f, T0).reason == "fault_loss" for _ in range(n))
    assert abs(lost - n * 0.2) <= 4 * math.sqrt(n * 0.2 * 0.8)
    c = t.counters()
    assert c["matched"] == n and c["lost"] == lost


def test_duplicate_and_corrupt() -> None:
    t = native.FaultTable(duplicate=1_000_000, corrupt=1_000_000)
    f = tcp_frame(100)
    v = t.judge(f, T0)
    # Sent now, twice, from a copy with exactly one bit flipped in the payload.
    assert v.reason == "pass" and v.copies == 2 and v.slot is not None
    copy, copies = t.take(v.slot)
    assert copies == 2 and len(copy) == len(f)
    diff = [i for i in range(len(f)) if f[i] != copy[i]]
    assert len(diff) == 1 and 54 <= diff[0] < 154
    assert bin(f[diff[0]] ^ copy[diff[0]]).count("1") == 1
    assert t.counters()["duplicated"] == 1 and t.counters()["corrupted"] == 1
    # Nothing to flip in a pure ack: sent as it is, not counted.
    ack = bytes(Ether() / IP() / TCP(flags="A"))
    v = t.judge(ack, T0)
    assert t.take(v.slot)[0] == ack and t.counters()["corrupted"] == 1


def test_delay_with_jitter_holds_until_due() -> None:
    t = native.FaultTable(delay_us=20_000, jitter_us=5_000, seed=3)
    frames = [tcp_frame(10 + i) for i in range(50)]
    for i in range(200):
        v = t.judge(frames[i % 50], T0)
        assert v.copies == 0 and v.slot is None
    assert t.due(T0 + 15 * MS - 1) is None        # none before delay - jitter
    out = []
    while (slot := t.due(T0 + 25 * MS)) is not None:
        out.append(t.take(slot)[0])
    assert len(out) == 200 and t.free_slots() == 4096   # every slot back
    assert t.counters()["delayed"] == 200


def test_reorder_lets_the_next_frame_overtake() -> None:
    t = native.FaultTable(reorder=1_000_000)
    a, b = tcp_frame(10), tcp_frame(20)
    va = t.judge(a, T0)
    assert va.copies == 0                               # held back
    vb = t.judge(b, T0 + 1)
    # b goes now from its own bytes, then a right behind it.
    assert vb.copies == 1 and vb.slot is None and vb.release is not None
    assert t.take(vb.release)[0] == a
    assert t.counters()["reordered"] == 1


def test_reordered_frame_goes_alone_when_no_other_comes() -> None:
    t = native.FaultTable(reorder=1_000_000)
    t.judge(tcp_frame(10), T0)
    assert t.due(T0 + 9 * MS) is None
    slot = t.due(T0 + 10 * MS)
    assert slot is not None and t.take(slot)[0] == tcp_frame(10)


def test_reorder_behind_a_delayed_frame() -> None:
    """With a delay, the one held back leaves right after the next one."""
    t = native.FaultTable(reorder=500_000, delay_us=1000, seed=11)
    frames = [tcp_frame(i + 1) for i in range(300)]
    for i, f in enumerate(frames):
        t.judge(f, T0 + i * 1000)
    out = []
    while (slot := t.due(T0 + 10**9)) is not None:
        out.append(t.take(slot)[0])
    assert sorted(out) == sorted(frames)
    moved = sum(1 for i in range(len(out) - 1) if len(out[i]) > len(out[i + 1]))
    reordered = t.counters()["reordered"]
    # Each held back is overtaken once (the last, if held, by nothing).
    assert reordered - 1 <= moved <= reordered and reordered > 50
    # Each is overtaken by one frame only: it is never more than one place late.
    assert all(abs(out.index(f) - i) <= 1 for i, f in enumerate(frames))


def test_queue_full_is_counted() -> None:
    t = native.FaultTable(delay_us=1000, frame_max=65499)   # 256 slots
    f = tcp_frame()
    verdicts = [t.judge(f, T0).reason for _ in range(300)]
    assert verdicts.count("pass") == 256 and verdicts.count("fault_queue_full") == 44
    assert t.counters()["queue_full"] == 44 and t.free_slots() == 0


def test_rate_drops_beyond_the_backlog() -> None:
    """1 Mbit/s, 100 frames at once of 1090 bytes on the wire (8.72 ms
    each): the bucket's burst (two 1500-byte datagrams: 24 ms) lets two go
    at once, 50 ms of backlog holds six more, the rest are dropped."""
    t = native.FaultTable(rate_bps=1_000_000)
    f = tcp_frame(1000)
    verdicts = [t.judge(f, T0) for _ in range(100)]
    now = sum(v.reason == "pass" and v.copies == 1 for v in verdicts)
    c = t.counters()
    assert (now, c["delayed"], c["rate_dropped"]) == (2, 6, 92)
    assert sum(v.reason == "fault_rate" for v in verdicts) == 92


# --- The Python side -------------------------------------------------------------


@pytest.mark.parametrize(("text", "us"), [("20ms", 20_000), ("500us", 500), ("1.5s", 1_500_000),
                                          ("5", 5_000), ("0.25ms", 250)])
def test_parse_duration(text: str, us: int) -> None:
    assert fault.parse_duration(text, "--delay") == us


@pytest.mark.parametrize(("text", "bps"), [("10mbit", 10**7), ("512kbit", 512_000),
                                           ("1gbit", 10**9), ("100mbps", 8 * 10**8),
                                           ("8000bit", 8000)])
def test_parse_rate(text: str, bps: int) -> None:
    assert fault.parse_rate(text) == bps
    assert fault.parse_rate(fault.format_rate(bps)) == bps


@pytest.mark.parametrize("bad", ["", "ms", "10 parsecs", "-5ms", "1e3ms"])
def test_bad_durations_are_one_line_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        fault.parse_duration(bad, "--delay")


@pytest.mark.parametrize(("kw", "match"), [
    ({}, "name a peer"),
    ({"peer": "nope"}, "not an IPv4"),
    ({"peer": "0.0.0.0"}, "not a VTEP"),
    ({"vni": 1, "loss": 101.0}, "not a percentage"),
    ({"vni": 1, "delay_us": 11_000_000}, "more than 10 s"),
    ({"vni": 1, "rate_bps": 100}, "outside"),
    ({"vni": 1 << 24}, "outside 0..16777215"),
])
def test_spec_refuses(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FaultSpec(**kw)


@pytest.mark.parametrize("body", [
    {"peer": "10.0.0.1", "loss": "5"},
    {"peer": "10.0.0.1", "delay_us": 1.5},
    {"peer": "10.0.0.1", "loss": True},
    {"peer": "10.0.0.1", "colour": 1},
    ["peer"],
])
def test_requests_with_wrong_types_are_refused(body: object) -> None:
    with pytest.raises(ConfigError):
        FaultSpec.from_json(body)


def test_spec_round_trips_and_describes() -> None:
    spec = FaultSpec(peer="10.0.0.2", vni=5, loss=5, delay_us=20_000, jitter_us=5_000,
                     rate_bps=10**7)
    assert FaultSpec.from_json(spec.to_json()) == spec
    assert spec.describe() == "loss 5%, delay 20ms, jitter 5ms, rate 10mbit"
    assert spec.ppm("loss") == 50_000 and spec.holds()


class FakeDatapath:
    def __init__(self) -> None:
        self.entries: dict[tuple[str | None, int | None], FaultSpec] = {}

    def fault_set(self, spec: FaultSpec) -> None:
        self.entries[spec.peer, spec.vni] = spec

    def fault_clear(self, peer: str | None, vni: int | None) -> bool:
        return self.entries.pop((peer, vni), None) is not None

    def faults(self) -> list[tuple[FaultSpec, dict[str, int]]]:
        return [(s, dict.fromkeys(fault.COUNTERS, 0)) for s in self.entries.values()]


class FakeHost:
    def __init__(self) -> None:
        self.networks = {256: "net1"}
        self.dp: FakeDatapath | None = FakeDatapath()


def test_agent_answers_set_list_clear() -> None:
    host = FakeHost()
    reply = fault.answer("fault", {"set": {"peer": "10.0.0.2", "network": "net1",
                                           "loss": 5}}, host)
    assert reply["describe"] == "loss 5%"
    fault.answer("fault", {"set": {"peer": "10.0.0.3", "network": None, "corrupt": 1}}, host)
    listed = fault.answer("faults", {}, host)["faults"]
    assert [(e["peer"], e["network"], e["vni"]) for e in listed] == [
        ("10.0.0.2", "net1", 256), ("10.0.0.3", None, None)]
    assert fault.answer("fault", {"clear": {"peer": "10.0.0.2", "network": "net1"}},
                        host) == {"cleared": 1}
    assert fault.answer("fault", {"clear": {}}, host) == {"cleared": 1}
    assert fault.answer("faults", {}, host) == {"faults": []}


@pytest.mark.parametrize(("request_", "match"), [
    ({"set": {"peer": "10.0.0.2", "network": "web", "loss": 1}}, "no network 'web'"),
    ({"set": "loss"}, "not an object"),
    ({}, "say set or clear"),
    ({"clear": {"peer": 5}}, "bad peer"),
])
def test_agent_refuses(request_: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        fault.answer("fault", request_, FakeHost())


def test_agent_without_a_datapath() -> None:
    host = FakeHost()
    host.dp = None
    with pytest.raises(ConfigError, match="not running"):
        fault.answer("faults", {}, host)


@pytest.mark.parametrize("argv", [
    ["fault", "--peer", "10.0.0.2", "--loss", "lots"],
    ["fault", "--peer", "10.0.0.2", "--rate", "fast"],
    ["fault", "--peer", "10.0.0.2", "--loss", "5", "--clear"],
    ["fault", "--peer", "10.0.0.2"],
    ["fault", "--loss", "5"],
])
def test_cli_mistakes_are_one_line_before_any_agent(argv: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from uvxlan.cli import main
    assert main([*argv, "--agent", "/nonexistent/x.sock"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("uvxlan: error: fault:") and err.count("\n") == 1, err


# --- The product's datapath (no threads, no sockets) ------------------------------


def test_datapath_entries_set_listed_changed_cleared() -> None:
    from uvxlan import native as product
    from uvxlan.config import DatapathConfig
    from uvxlan.errors import NativeError

    dp = product.Datapath(DatapathConfig(local_ip="127.0.0.1"))
    try:
        spec = FaultSpec(peer="10.0.0.2", vni=300, loss=2.5, duplicate=1, corrupt=0.1)
        dp.fault_set(spec)
        dp.fault_set(FaultSpec(vni=301, loss=1))
        assert [s for s, _ in dp.faults()] == [spec, FaultSpec(vni=301, loss=1)]
        assert dp.faults()[0][1] == dict.fromkeys(fault.COUNTERS, 0)
        # A new setting replaces the entry's settings, in place.
        dp.fault_set(FaultSpec(peer="10.0.0.2", vni=300, loss=50))
        assert [s.loss for s, _ in dp.faults()] == [50.0, 1.0]
        # Held frames need the TX thread's timer: refused, in one line.
        with pytest.raises(NativeError, match="need the datapath threads"):
            dp.fault_set(FaultSpec(peer="10.0.0.2", delay_us=1000))
        assert dp.fault_clear("10.0.0.2", 300) and not dp.fault_clear("10.0.0.2", 300)
        for i in range(63):
            dp.fault_set(FaultSpec(peer=f"10.1.0.{i + 1}", loss=1))
        with pytest.raises(NativeError, match="64 entries"):
            dp.fault_set(FaultSpec(peer="10.2.0.1", loss=1))
        assert len(dp.faults()) == 64
    finally:
        dp.close()
