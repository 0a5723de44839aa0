"""The switch in C, driven directly: local ports are datagram socketpairs
(they read and write whole frames, as a TAP does), remote VTEPs are UDP
sockets on loopback, and the datapath's real raw socket and UDP socket
carry VXLAN between them.  Needs root for the raw socket."""

from __future__ import annotations

import ipaddress
import select
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import root
from uvxlan import native
from uvxlan.config import DatapathConfig
from uvxlan.native import Datapath
from uvxlan.reference import wire

pytestmark = root

BCAST = "ff:ff:ff:ff:ff:ff"


def mac(n: int) -> str:
    return f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}"


def frame(dst: str, src: str, payload: bytes = b"x" * 46) -> bytes:
    return wire.mac_to_bytes(dst) + wire.mac_to_bytes(src) + b"\x08\x00" + payload


def recv_all(sock: socket.socket, wait: float = 0.2) -> list[bytes]:
    """Everything that arrives within `wait` seconds of the last datagram."""
    got = []
    while select.select([sock], [], [], wait)[0]:
        got.append(sock.recv(70000))
        wait = 0.05
    return got


class Remote:
    """A VTEP on loopback: a UDP socket that records what uvxlan sends."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]

    def received(self, wait: float = 0.2) -> list[wire.Parsed | tuple[int, bytes]]:
        return [(wire.parse(d).vni or -1, d[8:]) for d in recv_all(self.sock, wait)]


class Switch:
    def __init__(self, **kw: object) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.port = self.udp.getsockname()[1]
        self.tx = native.open_tx_socket("127.0.0.1")
        cfg = DatapathConfig(local_ip="127.0.0.1", dst_port=self.port, **kw)  # type: ignore[arg-type]
        self.dp = Datapath(cfg)
        self.dp.set_sockets(self.udp.fileno(), self.tx)
        self.ports: dict[int, socket.socket] = {}
        self._keep: list[socket.socket] = []
        self.remotes: list[Remote] = []

    def add_port(self, vni: int, *, vnet_hdr: bool = False) -> int:
        """A port (a socketpair standing for a TAP); vnet_hdr: its frames
        carry a virtio-net header.  The test's end is self.ports[pid]."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        pid = self.dp.add_port(ours.fileno(), vni, vnet_hdr=vnet_hdr)
        self.ports[pid] = theirs
        self._keep.append(ours)
        return pid

    def own(self, *socks: socket.socket) -> None:
        """Close socks with the switch, after the datapath that uses them."""
        self._keep.extend(socks)

    def add_remote(self, vni: int, ip: str, *, admit: bool = True) -> Remote:
        """A VTEP in the VNI's flood list and, unless admit is false, a
        member of it (VNIs admit members only)."""
        r = next((x for x in self.remotes if x.ip == ip), None) or Remote(ip)
        if r not in self.remotes:
            self.remotes.append(r)
        self.dp.add_remote(vni, ip, r.port)
        if admit:
            self.dp.peer_add(vni, ip)
        return r

    def send_from_port(self, pid: int, data: bytes) -> None:
        self.ports[pid].send(data)
        assert self.dp.tap_rx(pid) == 1

    def send_from_remote(self, r: Remote, vni: int, data: bytes) -> None:
        r.sock.sendto(wire.build_header(vni) + data, ("127.0.0.1", self.port))
        assert select.select([self.udp], [], [], 1.0)[0], "datagram never arrived"
        assert self.dp.udp_rx() == 1

    def port_received(self, pid: int, wait: float = 0.1) -> list[bytes]:
        return recv_all(self.ports[pid], wait)

    def close(self) -> None:
        self.dp.close()
        for s in [*self.ports.values(), *self._keep, self.udp]:
            s.close()
        for r in self.remotes:
            r.sock.close()
        import os
        os.close(self.tx)


@pytest.fixture
def sw() -> Iterator[Switch]:
    s = Switch(learn_limit=8, ageing_ms=300_000)
    s.dp.add_vni(1)
    s.dp.add_vni(2)
    yield s
    s.close()


def test_unknown_unicast_floods_everywhere_in_the_vni_once_but_not_back(sw: Switch) -> None:
    a, b, c = sw.add_port(1), sw.add_port(1), sw.add_port(2)
    r1, r2 = sw.add_remote(1, "127.0.0.2"), sw.add_remote(1, "127.0.0.3")
    f = frame(mac(99), mac(1))
    sw.send_from_port(a, f)
    assert sw.port_received(b) == [f]
    assert sw.port_received(a) == []
    assert sw.port_received(c) == []
    assert r1.received() == [(1, f)]
    assert r2.received() == [(1, f)]


def test_outer_source_port_is_the_flow_hash_in_range(sw: Switch) -> None:
    a = sw.add_port(1)
    r1 = sw.add_remote(1, "127.0.0.2")
    ports = set()
    for i in range(32):
        f = frame(BCAST, mac(1), bytes([i]) * 46)
        sw.send_from_port(a, f)
        data, (_, sport) = r1.sock.recvfrom(70000)
        assert data[8:] == f
        assert 49152 <= sport <= 65535
        assert sport == wire.src_port(wire.flow_hash(f), 49152, 65535)
        ports.add(sport)
    # Ethernet-only frames hash on MACs and ethertype: one flow, one port.
    assert len(ports) == 1


def test_learned_mac_gets_unicast_only(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r1 = sw.add_remote(1, "127.0.0.2")
    sw.send_from_port(a, frame(BCAST, mac(1)))
    sw.port_received(b), r1.received()
    f = frame(mac(1), mac(2))
    sw.send_from_port(b, f)
    assert sw.port_received(a) == [f]
    assert r1.received(0.1) == []
    e = sw.dp.fdb_lookup(1, mac(1))
    assert e is not None and e.port == a and not e.static


def test_learning_from_the_wire_and_unicast_back_to_that_vtep(sw: Switch) -> None:
    a = sw.add_port(1)
    r1, r2 = sw.add_remote(1, "127.0.0.2"), sw.add_remote(1, "127.0.0.3")
    sw.send_from_remote(r2, 1, frame(BCAST, mac(7)))
    assert sw.port_received(a) == [frame(BCAST, mac(7))]
    e = sw.dp.fdb_lookup(1, mac(7))
    assert e is not None and e.remote == "127.0.0.3" and e.remote_port == r2.port
    f = frame(mac(7), mac(1))
    sw.send_from_port(a, f)
    assert r2.received() == [(1, f)]
    assert r1.received(0.1) == []


def test_from_the_wire_never_goes_back_to_the_wire(sw: Switch) -> None:
    a = sw.add_port(1)
    r1, r2 = sw.add_remote(1, "127.0.0.2"), sw.add_remote(1, "127.0.0.3")
    sw.send_from_remote(r1, 1, frame(BCAST, mac(5)))
    assert len(sw.port_received(a)) == 1
    assert r2.received(0.1) == [] and r1.received(0.1) == []
    # A unicast for a MAC behind another VTEP is dropped, not relayed.
    sw.send_from_remote(r2, 1, frame(BCAST, mac(6)))
    sw.port_received(a)
    sw.send_from_remote(r1, 1, frame(mac(6), mac(5)))
    assert r2.received(0.1) == []
    assert sw.dp.drops()["split_horizon"] == 1


def test_hairpin_is_dropped(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    sw.port_received(b)
    sw.send_from_port(a, frame(mac(1), mac(2)))
    assert sw.port_received(a) == [] and sw.port_received(b) == []
    assert sw.dp.drops()["hairpin"] == 1


def test_static_entries_are_never_moved_by_learning(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r1, r2 = sw.add_remote(1, "127.0.0.2"), sw.add_remote(1, "127.0.0.3")
    sw.dp.fdb_add(1, mac(9), remote="127.0.0.2", remote_port=r1.port)
    # Claiming mac(9) from another VTEP or from a port is spoofing: the
    # frame is dropped, never delivered, and counted.
    sw.send_from_remote(r2, 1, frame(BCAST, mac(9)))
    sw.send_from_port(a, frame(BCAST, mac(9)))
    assert sw.port_received(a) == [] and sw.port_received(b) == []
    assert r1.received(0.1) == [] and r2.received(0.1) == []
    assert sw.dp.vni_drops(1) == {"spoofed_mac": 2}
    assert sw.dp.port_drops(a) == {"spoofed_mac": 1}
    e = sw.dp.fdb_lookup(1, mac(9))
    assert e is not None and e.static and e.remote == "127.0.0.2"
    f = frame(mac(9), mac(1))
    sw.send_from_port(a, f)
    assert r1.received() == [(1, f)] and r2.received(0.1) == []


def test_learning_cap_per_vni_forwards_but_does_not_learn(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    c, d = sw.add_port(2), sw.add_port(2)
    for i in range(12):
        sw.send_from_port(a, frame(BCAST, mac(100 + i)))
    assert len(sw.port_received(b)) == 12        # all forwarded
    learned = [e for e in sw.dp.fdb_dump() if e.vni == 1 and not e.static]
    assert len(learned) == 8
    assert sw.dp.drops()["learn_limit"] == 4
    # Another VNI has its own budget.
    sw.send_from_port(c, frame(BCAST, mac(100)))
    assert sw.port_received(d) == [frame(BCAST, mac(100))]
    assert sw.dp.fdb_lookup(2, mac(100)) is not None


def test_two_vnis_with_the_same_macs_stay_isolated(sw: Switch) -> None:
    a1, b1 = sw.add_port(1), sw.add_port(1)
    a2, b2 = sw.add_port(2), sw.add_port(2)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.add_remote(2, "127.0.0.2", r.port)
    sw.dp.peer_add(2, "127.0.0.2")
    # The same source MAC, broadcast in both VNIs.
    f = frame(BCAST, mac(1))
    sw.send_from_port(a1, f)
    assert sw.port_received(b1) == [f]
    assert sw.port_received(a2) == [] and sw.port_received(b2) == []
    assert r.received() == [(1, f)]
    sw.send_from_port(a2, f)
    assert sw.port_received(b2) == [f] and sw.port_received(b1) == []
    assert r.received() == [(2, f)]
    e1, e2 = sw.dp.fdb_lookup(1, mac(1)), sw.dp.fdb_lookup(2, mac(1))
    assert e1 is not None and e1.port == a1
    assert e2 is not None and e2.port == a2
    # From the wire, VNI 2 reaches VNI 2's ports only.
    sw.send_from_remote(r, 2, frame(BCAST, mac(50)))
    assert sw.port_received(a2) and sw.port_received(b2)
    assert sw.port_received(a1) == [] and sw.port_received(b1) == []
    # A unicast in VNI 1 to the MAC learned in both goes to VNI 1's port.
    sw.send_from_port(b1, frame(mac(1), mac(2)))
    assert sw.port_received(a1) and sw.port_received(a2) == []


def test_ageing_removes_learned_entries_then_frames_flood_again(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.fdb_add(1, mac(3), port=b)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    sw.port_received(b), r.received()
    now = native.now_ms()
    assert sw.dp.fdb_age(now + 299_000) == 0
    assert sw.dp.fdb_age(now + 301_000) == 1
    assert sw.dp.fdb_lookup(1, mac(1)) is None
    assert sw.dp.fdb_lookup(1, mac(3)) is not None        # static stays
    sw.send_from_port(b, frame(mac(1), mac(3)))
    assert r.received() == [(1, frame(mac(1), mac(3)))]    # flooded again


def test_nowhere_to_flood_counts_no_destination(sw: Switch) -> None:
    a = sw.add_port(1)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    assert sw.dp.drops()["no_destination"] == 1


def test_unknown_vni_from_the_wire_is_dropped(sw: Switch) -> None:
    a = sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.send_from_remote(r, 77, frame(BCAST, mac(1)))
    assert sw.port_received(a) == []
    assert sw.dp.drops()["unknown_vni"] == 1


def test_counters_per_port_and_vni(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    f = frame(BCAST, mac(1))
    for _ in range(3):
        sw.send_from_port(a, f)
    sw.send_from_remote(r, 1, frame(BCAST, mac(2)))
    r.received(), sw.port_received(b), sw.port_received(a)
    ca, cb = sw.dp.port_counters(a), sw.dp.port_counters(b)
    assert (ca.rx_packets, ca.rx_bytes, ca.tx_packets) == (3, 3 * len(f), 1)
    assert (cb.rx_packets, cb.tx_packets) == (0, 4)
    v = sw.dp.vni_counters(1)
    assert (v.tx_packets, v.tx_bytes) == (3, 3 * (len(f) + 16))
    assert v.rx_packets == 1


def test_a_drop_counts_for_its_reason_its_vni_and_its_port(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    c, d = sw.add_port(2), sw.add_port(2)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    sw.port_received(b)
    sw.send_from_port(a, frame(mac(1), mac(2)))           # hairpin, in VNI 1
    assert sw.dp.drops()["hairpin"] == 1
    assert sw.dp.vni_drops(1) == {"hairpin": 1}
    assert sw.dp.port_drops(a) == {"hairpin": 1}
    assert sw.dp.port_drops(b) == {}
    assert sw.dp.vni_drops(2) == {} and sw.dp.port_drops(c) == {}
    sw.send_from_port(c, frame(mac(1), BCAST))            # bad source, in VNI 2
    assert sw.dp.drops()["bad_inner_frame"] == 1
    assert sw.dp.vni_drops(2) == {"bad_inner_frame": 1}
    assert sw.dp.port_drops(c) == {"bad_inner_frame": 1}
    assert sw.dp.port_drops(d) == {}
    assert sw.dp.vni_drops(1) == {"hairpin": 1}
    assert sw.dp.port_drops(a) == {"hairpin": 1}


def test_drops_from_the_wire_count_for_their_vni_if_it_is_ours(sw: Switch) -> None:
    a = sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.peer_add(2, "127.0.0.2")
    sw.send_from_remote(r, 2, frame(BCAST, BCAST))         # bad source, in VNI 2
    assert sw.dp.drops()["bad_inner_frame"] == 1
    assert sw.dp.vni_drops(2) == {"bad_inner_frame": 1}
    assert sw.dp.vni_drops(1) == {} and sw.dp.port_drops(a) == {}
    sw.send_from_remote(r, 77, frame(BCAST, mac(1)))       # not a VNI of ours
    assert sw.dp.drops()["unknown_vni"] == 1
    assert sw.dp.vni_drops(1) == {} and sw.dp.vni_drops(2) == {"bad_inner_frame": 1}
    with pytest.raises(native.NativeError):
        sw.dp.vni_drops(77)
    with pytest.raises(native.NativeError):
        sw.dp.port_drops(999)


def test_a_full_port_counts_its_own_drops(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    f = frame(BCAST, mac(1), b"x" * 1400)
    for _ in range(20):                    # far more than b's socket holds
        for _ in range(32):
            sw.ports[a].send(f)
        assert sw.dp.tap_rx(a) == 32
    full = sw.dp.drops()["tap_full"]
    assert full > 0
    assert sw.dp.port_drops(b) == {"tap_full": full}
    assert sw.dp.vni_drops(1) == {"tap_full": full}
    assert sw.dp.port_drops(a) == {}
    sw.port_received(b)


def test_a_batch_is_drained_in_one_call(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    for i in range(40):
        sw.ports[a].send(frame(BCAST, mac(1), bytes([i]) * 46))
    assert sw.dp.tap_rx(a) == 32          # the default batch
    assert sw.dp.tap_rx(a) == 8
    assert len(sw.port_received(b)) == 40


def test_deleting_a_port_removes_its_entries(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    sw.send_from_port(a, frame(BCAST, mac(1)))
    sw.dp.fdb_add(1, mac(2), port=a)
    sw.dp.del_port(a)
    assert sw.dp.fdb_lookup(1, mac(1)) is None and sw.dp.fdb_lookup(1, mac(2)) is None
    assert sw.dp.fdb_lookup(1, mac(1)) is None
    with pytest.raises(native.NativeError):
        sw.dp.tap_rx(a)
    sw.port_received(b)


# --- Only members speak (issue 10) ----------------------------------------------


def test_a_stranger_is_dropped_before_learning_or_delivery(sw: Switch) -> None:
    a = sw.add_port(1)
    stranger = sw.add_remote(1, "127.0.0.5", admit=False)
    for f in (frame(BCAST, mac(7)), frame(mac(99), mac(8)), frame(BCAST, BCAST)):
        sw.send_from_remote(stranger, 1, f)
    assert sw.port_received(a) == []
    assert sw.dp.fdb_lookup(1, mac(7)) is None and sw.dp.fdb_lookup(1, mac(8)) is None
    # Each counted once, for the VNI, as what it is: even the bad frame.
    assert sw.dp.vni_drops(1) == {"unknown_vtep": 3}
    assert sw.dp.vni_counters(1).rx_packets == 0
    # Admitted, the same sender is heard; forgotten, it is not.
    sw.dp.peer_add(1, "127.0.0.5")
    sw.send_from_remote(stranger, 1, frame(BCAST, mac(7)))
    assert sw.port_received(a) == [frame(BCAST, mac(7))]
    sw.dp.peer_del(1, "127.0.0.5")
    sw.send_from_remote(stranger, 1, frame(BCAST, mac(6)))
    assert sw.port_received(a) == []
    assert sw.dp.vni_drops(1)["unknown_vtep"] == 4


def test_admit_any_accepts_anyone_as_linux_does(sw: Switch) -> None:
    a = sw.add_port(1)
    stranger = sw.add_remote(1, "127.0.0.5", admit=False)
    sw.dp.set_admit(1, "any")
    sw.send_from_remote(stranger, 1, frame(BCAST, mac(7)))
    assert sw.port_received(a) == [frame(BCAST, mac(7))]
    e = sw.dp.fdb_lookup(1, mac(7))
    assert e is not None and e.remote == "127.0.0.5"
    sw.dp.set_admit(1, "members")
    sw.send_from_remote(stranger, 1, frame(BCAST, mac(8)))
    assert sw.port_received(a) == []
    with pytest.raises(native.NativeError):
        sw.dp.set_admit(1, "some")


def test_admission_is_per_vni_and_by_address_not_port(sw: Switch) -> None:
    a1, a2 = sw.add_port(1), sw.add_port(2)
    r = sw.add_remote(1, "127.0.0.2")                      # a member of VNI 1 only
    sw.send_from_remote(r, 2, frame(BCAST, mac(1)))
    assert sw.port_received(a2) == [] and sw.dp.vni_drops(2) == {"unknown_vtep": 1}
    # Another socket of the same address (another flow's source port).
    other = Remote("127.0.0.2")
    try:
        sw.send_from_remote(other, 1, frame(BCAST, mac(2)))
        assert sw.port_received(a1) == [frame(BCAST, mac(2))]
    finally:
        other.sock.close()


def test_the_admitted_set_has_no_small_cap(sw: Switch) -> None:
    a = sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2", admit=False)
    # A 5,000-host cluster's VTEPs, the sender among them.
    for i in range(5000):
        sw.dp.peer_add(1, str(ipaddress.IPv4Address("10.0.0.1") + i))
    sw.dp.peer_add(1, "127.0.0.2")
    assert sw.dp.peer_count(1) == 5001
    with pytest.raises(native.NativeError):
        sw.dp.peer_add(1, "127.0.0.2")                     # once each
    sw.send_from_remote(r, 1, frame(BCAST, mac(3)))
    assert sw.port_received(a) == [frame(BCAST, mac(3))]
    sw.dp.peer_del(1, "127.0.0.2")
    assert sw.dp.peer_count(1) == 5000
    with pytest.raises(native.NativeError):
        sw.dp.peer_del(1, "127.0.0.2")
    sw.send_from_remote(r, 1, frame(BCAST, mac(4)))
    assert sw.port_received(a) == []


def test_learning_off_learns_nothing_from_either_side(sw: Switch) -> None:
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.send_from_port(a, frame(BCAST, mac(1)))              # learned while on
    assert sw.dp.fdb_lookup(1, mac(1)) is not None
    sw.dp.set_learning(1, False)
    assert sw.dp.fdb_lookup(1, mac(1)) is None               # forgotten
    sw.send_from_port(a, frame(BCAST, mac(2)))
    sw.send_from_remote(r, 1, frame(BCAST, mac(3)))
    # Still forwarded (flooded), never learned.
    assert len(sw.port_received(b)) == 3
    assert sw.dp.fdb_lookup(1, mac(2)) is None and sw.dp.fdb_lookup(1, mac(3)) is None
    assert [e for e in sw.dp.fdb_dump() if not e.static] == []
    assert "learn_limit" not in sw.dp.vni_drops(1)
    sw.dp.set_learning(1, True)
    sw.send_from_port(a, frame(BCAST, mac(2)))
    assert sw.dp.fdb_lookup(1, mac(2)) is not None


def test_unknown_unicast_flooding_off_drops_it_from_either_side(sw: Switch) -> None:
    """A MAC the control plane removed (a detached container) that a
    neighbour cache still names: with unknown-unicast flooding off nobody
    else gets its frames, from a port or from the wire; broadcast and known
    unicast are forwarded as before, and flooding on floods it again."""
    a, b = sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.fdb_add(1, mac(1), port=a)
    sw.dp.fdb_add(1, mac(5), remote="127.0.0.2", remote_port=r.port)
    sw.dp.set_learning(1, False)
    sw.dp.set_flood_unknown(1, False)
    gone = mac(7)
    sw.send_from_port(a, frame(gone, mac(1)))
    sw.send_from_remote(r, 1, frame(gone, mac(5)))
    assert sw.port_received(a) == [] and sw.port_received(b) == []
    assert r.received(0.1) == []
    assert sw.dp.vni_drops(1) == {"unknown_dst": 2}
    assert sw.dp.port_drops(a) == {"unknown_dst": 1}
    sw.send_from_port(a, frame(mac(5), mac(1)))
    assert r.received() == [(1, frame(mac(5), mac(1)))]
    sw.send_from_remote(r, 1, frame(BCAST, mac(5)))
    assert sw.port_received(a) == [frame(BCAST, mac(5))]
    assert sw.port_received(b) == [frame(BCAST, mac(5))]
    sw.dp.set_flood_unknown(1, True)
    sw.send_from_port(a, frame(gone, mac(1)))
    assert sw.port_received(b) == [frame(gone, mac(1))]
    assert r.received() == [(1, frame(gone, mac(1)))]
    assert sw.dp.vni_drops(1) == {"unknown_dst": 2}


def test_a_port_spoofing_its_neighbours_mac_is_dropped_learning_on_or_off(
        sw: Switch) -> None:
    a, b, c = sw.add_port(1), sw.add_port(1), sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.dp.fdb_add(1, mac(1), port=a)                        # a's container
    sw.dp.fdb_add(1, mac(5), remote="127.0.0.2", remote_port=r.port)
    for learning in (True, False):
        sw.dp.set_learning(1, learning)
        sw.send_from_port(b, frame(BCAST, mac(1)))          # b claims a's MAC
        sw.send_from_port(b, frame(mac(5), mac(1)))
        sw.send_from_port(c, frame(BCAST, mac(5)))          # c claims a remote one
        assert sw.port_received(a) == [] and sw.port_received(c) == []
        assert r.received(0.1) == []
    assert sw.dp.port_drops(b) == {"spoofed_mac": 4}
    assert sw.dp.port_drops(c) == {"spoofed_mac": 2}
    e = sw.dp.fdb_lookup(1, mac(1))
    assert e is not None and e.port == a                    # never moved
    # The owners themselves are heard.
    sw.send_from_port(a, frame(BCAST, mac(1)))
    assert sw.port_received(b) == [frame(BCAST, mac(1))]
    sw.send_from_remote(r, 1, frame(mac(1), mac(5)))
    assert sw.port_received(a) == [frame(mac(1), mac(5))]


def test_a_member_spoofing_another_members_mac_is_dropped(sw: Switch) -> None:
    a = sw.add_port(1)
    r1, r2 = sw.add_remote(1, "127.0.0.2"), sw.add_remote(1, "127.0.0.3")
    sw.dp.fdb_add(1, mac(5), remote="127.0.0.2", remote_port=r1.port)
    sw.dp.fdb_add(1, mac(1), port=a)
    for f in (frame(BCAST, mac(5)), frame(mac(1), mac(5))):
        sw.send_from_remote(r2, 1, f)
    assert sw.port_received(a) == []
    assert sw.dp.vni_drops(1) == {"spoofed_mac": 2}
    # A frame from the wire claiming a local container's MAC, too.
    sw.send_from_remote(r2, 1, frame(BCAST, mac(1)))
    assert sw.port_received(a) == [] and sw.dp.vni_drops(1) == {"spoofed_mac": 3}
    # The real owner still reaches the container, and back.
    sw.send_from_remote(r1, 1, frame(mac(1), mac(5)))
    assert sw.port_received(a) == [frame(mac(1), mac(5))]
    sw.send_from_port(a, frame(mac(5), mac(1)))
    assert r1.received() == [(1, frame(mac(5), mac(1)))] and r2.received(0.1) == []


def test_limits_are_counted_per_vni() -> None:
    s = Switch(learn_limit=4, fdb_capacity=6)
    try:
        s.dp.add_vni(1)
        s.dp.add_vni(2)
        a, b, c = s.add_port(1), s.add_port(1), s.add_port(2)
        for i in range(6):
            s.send_from_port(a, frame(BCAST, mac(100 + i)))  # 4 learned, 2 at the cap
        for i in range(4):
            s.send_from_port(c, frame(BCAST, mac(200 + i)))  # 2 learned, 2: FDB full
        s.port_received(b)
        assert s.dp.limits(1) == native.Limits(learn_limit=2, fdb_full=0, flood_full=0,
                                               arp_full=0)
        assert s.dp.limits(2) == native.Limits(learn_limit=0, fdb_full=2, flood_full=0,
                                               arp_full=0)
        assert s.dp.vni_drops(2) == {"learn_limit": 2, "no_destination": 4}
        # Static entries still go in, as many as come.
        for i in range(50):
            s.dp.fdb_add(2, mac(300 + i), port=c)
        assert all(s.dp.fdb_lookup(2, mac(300 + i)) for i in range(50))
        # A full flood list refuses and counts.
        for i in range(native.lib.UVX_VNI_REMOTES):
            s.dp.add_remote(1, str(ipaddress.IPv4Address("10.9.0.1") + i), 4789)
        with pytest.raises(native.NativeError):
            s.dp.add_remote(1, "10.7.0.1", 4789)
        assert s.dp.limits(1).flood_full == 1
    finally:
        s.close()


def test_fdb_dump_in_chunks_sees_every_entry_once(sw: Switch) -> None:
    a = sw.add_port(1)
    macs = {mac(i) for i in range(1, 1001)}
    for m in macs:
        sw.dp.fdb_add(1, m, port=a)
    dumped = [e.mac for e in sw.dp.fdb_dump() if e.vni == 1]
    assert len(dumped) == len(macs) and set(dumped) == macs
    assert len(macs) > native.FDB_DUMP_CHUNK               # it took several calls


def test_datagrams_the_kernel_dropped_for_want_of_room_are_counted(sw: Switch) -> None:
    """A full socket buffer drops before any read; SO_RXQ_OVFL tells the
    next read how many went (counted then, as socket_overflow)."""
    sw.add_port(1)
    r = sw.add_remote(1, "127.0.0.2")
    sw.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # room for a few
    f = frame(BCAST, mac(7), b"x" * 1000)
    sent = 200
    for _ in range(sent):
        r.sock.sendto(wire.build_header(1) + f, ("127.0.0.1", sw.port))
    read = 0
    while n := sw.dp.udp_rx():
        read += n
    assert 0 < read < sent
    # The count rides on the datagrams queued after the drops: one more.
    sw.send_from_remote(r, 1, f)
    assert sw.dp.drops().get("socket_overflow") == sent - read
    assert sw.dp.vni_drops(1).get("socket_overflow") is None   # no VNI read: none named
