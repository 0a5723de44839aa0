"""VXLAN Group Based Policy in the C switch, driven directly as in
test_switch.py (socketpairs for ports, UDP sockets on loopback for VTEPs):
the G flag and group on the wire, the reserved-bit rule where GBP is off,
and the policy table between groups, each decision counted."""

from __future__ import annotations

import select
import struct
from collections.abc import Iterator

import pytest

from tests.conftest import root
from tests.system.test_switch import BCAST, Remote, Switch, frame, mac, recv_all
from uvxlan.gbp import Policy, Rule
from uvxlan.reference import wire

pytestmark = root

G, A, D = 0x80000000, 0x00080000, 0x00400000


def header(vni: int, word: int = 0, last: int = 0) -> bytes:
    """A VXLAN header with the I flag, the GBP bits of the first word and
    the last (reserved) byte as given."""
    return struct.pack("!II", 0x08000000 | word, vni << 8 | last)


def send(sw: Switch, r: Remote, data: bytes) -> None:
    r.sock.sendto(data, ("127.0.0.1", sw.port))
    assert select.select([sw.udp], [], [], 1.0)[0], "datagram never arrived"
    assert sw.dp.udp_rx() == 1


def sent_words(r: Remote) -> list[int]:
    """The first VXLAN word of each datagram the remote got."""
    return [struct.unpack("!I", d[:4])[0] for d in recv_all(r.sock)]


@pytest.fixture
def sw() -> Iterator[Switch]:
    s = Switch(learn_limit=64, ageing_ms=300_000)
    s.dp.add_vni(1)
    s.dp.add_vni(2)
    s.dp.set_gbp(1, True)       # VNI 2 stays without GBP
    yield s
    s.close()


def test_gbp_bits_where_gbp_is_off_are_reserved_bits_as_before(sw: Switch) -> None:
    a = sw.add_port(2)
    r = sw.add_remote(2, "127.0.0.2")
    send(sw, r, header(2, G | 7) + frame(BCAST, mac(1)))
    send(sw, r, header(99, G | 7) + frame(BCAST, mac(1)))     # not ours: still reserved
    assert sw.port_received(a) == []
    assert sw.dp.drops()["reserved_bits"] == 2
    assert sw.dp.drops()["unknown_vni"] == 0
    # Nor does a port there send them, whatever its group.
    sw.dp.set_port_group(a, 7)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    assert sent_words(r) == [0x08000000]


def test_a_port_group_goes_on_the_wire_with_the_g_flag(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.set_port_group(a, 0x1234)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    (got,) = recv_all(r.sock)
    # The reference codec builds the same header.
    assert got[:8] == wire.build_header(1, 0x1234) == header(1, G | 0x1234)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    assert sent_words(r) == [0x08000000 | G | 0x1234]
    # Group 0 sends a plain header, as Linux does for skb->mark 0.
    sw.send_from_port(b, frame(BCAST, mac(2)))
    assert sent_words(r) == [0x08000000]


def test_policy_from_the_wire_denies_and_allows_per_pair_counted(sw: Switch) -> None:
    web, db = sw.add_port(1), sw.add_port(1)
    sw.dp.set_port_group(web, 20)
    sw.dp.set_port_group(db, 30)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.set_gbp_policy(1, Policy("allow", (Rule(10, 30, "deny"),)))
    f = frame(BCAST, mac(9))
    send(sw, r, header(1, G | 10) + f)           # flooded: web allowed, db denied
    assert sw.port_received(web) == [f]
    assert sw.port_received(db) == []
    assert sw.dp.drops()["gbp_denied"] == 1
    assert sw.dp.vni_drops(1) == {"gbp_denied": 1}
    assert sw.dp.port_drops(db) == {"gbp_denied": 1}
    state = sw.dp.gbp_state(1)
    assert state.rules == {Rule(10, 30, "deny"): 1}
    assert (state.default_allowed, state.default_denied) == (1, 0)
    # Another source group is not the rule's: delivered to both.
    send(sw, r, header(1, G | 11) + f)
    assert sw.port_received(web) == [f] and sw.port_received(db) == [f]
    # The rule turned to allow: delivered, counted for the rule.
    sw.dp.set_gbp_policy(1, Policy("allow", (Rule(10, 30, "allow"),)))
    send(sw, r, header(1, G | 10) + frame(mac(0), mac(9)))   # unknown unicast floods
    assert len(sw.port_received(db)) == 1
    assert sw.dp.gbp_state(1).rules == {Rule(10, 30, "allow"): 2}


def test_no_g_flag_is_group_0_and_the_a_bit_skips_policy(sw: Switch) -> None:
    db = sw.add_port(1)
    sw.dp.set_port_group(db, 30)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.set_gbp_policy(1, Policy("deny", (Rule(5, 30, "allow"),)))
    f = frame(BCAST, mac(9))
    send(sw, r, header(1) + f)                   # group 0, default deny
    send(sw, r, header(1, G | 6) + f)            # group 6, default deny
    assert sw.port_received(db) == []
    send(sw, r, header(1, G | 5 | D) + f)        # D is accepted (and ignored)
    assert sw.port_received(db) == [f]
    # A: policy already applied by the sender; the draft says MUST NOT again.
    send(sw, r, header(1, G | A | 6) + f)
    assert sw.port_received(db) == [f]
    state = sw.dp.gbp_state(1)
    assert (state.default_denied, state.rules[Rule(5, 30, "allow")]) == (2, 1)
    assert sw.dp.drops()["gbp_denied"] == 2


def test_other_reserved_bits_are_still_dropped_where_gbp_is_on(sw: Switch) -> None:
    a = sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    f = frame(BCAST, mac(9))
    send(sw, r, header(1, G | 0x04000000) + f)   # a flag bit GBP does not name
    send(sw, r, header(1, G, last=1) + f)        # the last byte
    assert sw.port_received(a) == []
    assert sw.dp.drops()["reserved_bits"] == 2
    # Linux takes the 24 bits after the flags on a gbp device: so do we.
    send(sw, r, header(1, 0x00ff0000) + f)
    assert sw.port_received(a) == [f]


def test_local_traffic_takes_the_source_port_group(sw: Switch) -> None:
    web, db, other = sw.add_port(1), sw.add_port(1), sw.add_port(1)
    sw.dp.set_port_group(web, 20)
    sw.dp.set_port_group(db, 30)
    sw.dp.set_port_group(other, 40)
    sw.dp.set_gbp_policy(1, Policy("allow", (Rule(20, 30, "deny"),)))
    f = frame(BCAST, mac(1))
    sw.send_from_port(web, f)                    # flood: db denied, other allowed
    assert sw.port_received(db) == [] and sw.port_received(other) == [f]
    sw.send_from_port(db, frame(BCAST, mac(2)))  # learn db's MAC
    sw.port_received(web), sw.port_received(other)
    sw.send_from_port(web, frame(mac(2), mac(1)))   # unicast to db: denied
    assert sw.port_received(db) == []
    # Counted for the VNI and the port that sent it (xmit.c's rule).
    assert sw.dp.port_drops(web) == {"gbp_denied": 2}
    assert sw.dp.gbp_state(1).rules == {Rule(20, 30, "deny"): 2}
    # The reverse pair has no rule: allowed.
    sw.send_from_port(db, frame(mac(1), mac(2)))
    assert sw.port_received(web) == [frame(mac(1), mac(2))]


def test_gbp_off_again_applies_no_policy(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    sw.dp.set_port_group(a, 1)
    sw.dp.set_port_group(b, 2)
    sw.dp.set_gbp_policy(1, Policy("deny"))
    sw.send_from_port(a, frame(BCAST, mac(1)))
    assert sw.port_received(b) == []
    sw.dp.set_gbp(1, False)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    assert sw.port_received(b) == [frame(BCAST, mac(1))]


def test_rule_table_grows_and_shrinks_keeping_counts(sw: Switch) -> None:
    rules = tuple(Rule(s, d, "deny" if (s + d) % 2 else "allow")
                  for s in range(40) for d in range(0, 4000, 100))
    sw.dp.set_gbp_policy(1, Policy("allow", rules))
    assert set(sw.dp.gbp_state(1).rules) == set(rules)
    kept = rules[::7]
    sw.dp.set_gbp_policy(1, Policy("deny", kept))
    state = sw.dp.gbp_state(1)
    assert set(state.rules) == set(kept) and state.default == "deny"
    with pytest.raises(OSError):
        sw.dp.set_port_group(999, 1)


def test_the_highest_group_is_a_rule_like_any_other(sw: Switch) -> None:
    # (65535 << 16 | 65535) + 1 must not be taken for a free slot: the
    # rule kept, listed, and denying under a default deny and beside others.
    top = 0xFFFF
    port = sw.add_port(1)
    sw.dp.set_port_group(port, top)
    r = sw.add_remote(1, "127.0.0.2")
    rules = (Rule(top, top, "deny"), Rule(1, top, "allow"), Rule(top, 1, "allow"))
    sw.dp.set_gbp_policy(1, Policy("deny", rules))
    assert set(sw.dp.gbp_state(1).rules) == set(rules)
    f = frame(BCAST, mac(9))
    send(sw, r, header(1, G | top) + f)
    assert sw.port_received(port) == []
    assert sw.dp.gbp_state(1).rules[Rule(top, top, "deny")] == 1
    send(sw, r, header(1, G | 1) + f)
    assert sw.port_received(port) == [f]
