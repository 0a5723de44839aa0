"""The datapath's two threads (uvx_dp_start_threads) moving traffic both
ways while Python changes everything under them: VNIs, ports, flood lists,
static FDB and ARP entries added and removed, counters and the FDB dumped,
learned entries aged.  Traffic must keep flowing and every change must
hold.  `make tsan` runs this file and tests/system/test_switch.py with the
datapath built under ThreadSanitizer, where any race between the workers
and a change from Python is a report and a failed run.  Needs root (the raw
socket), like test_switch.py, whose switch it uses."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import root
from tests.system.test_switch import BCAST, Remote, Switch, frame, mac
from uvxlan.reference import wire

pytestmark = root

VNI = 7
ROUNDS = 300


def drain(socks: list[socket.socket], stop: threading.Event, got: dict[int, int]) -> None:
    """Read whatever arrives until stopped; count it per socket."""
    while not stop.is_set():
        for s in select.select(socks, [], [], 0.05)[0]:
            try:
                s.recv(70000)
            except OSError:   # closed under us at the end
                return
            got[s.fileno()] = got.get(s.fileno(), 0) + 1


@pytest.fixture
def busy() -> Iterator[Switch]:
    s = Switch(learn_limit=64, ageing_ms=300_000)
    yield s
    s.close()


def test_traffic_both_ways_while_python_changes_everything(busy: Switch) -> None:
    sw = busy
    sw.dp.add_vni(VNI)
    local = sw.add_port(VNI)
    remote = sw.add_remote(VNI, "127.0.0.2")
    sw.dp.fdb_add(VNI, mac(1), port=local)
    sw.dp.fdb_add(VNI, mac(2), remote=remote.ip, remote_port=remote.port)
    sw.dp.set_arp(VNI, "answer")
    other = Remote("127.0.0.3")        # joins and leaves flood lists
    sw.dp.start_threads()

    stop = threading.Event()
    got: dict[int, int] = {}
    readers = [sw.ports[local], remote.sock, other.sock]
    reader = threading.Thread(target=drain, args=(readers, stop, got))

    def from_port() -> None:
        # To the VTEP (static), and broadcasts: the TX thread switches,
        # encapsulates and floods.
        n = 0
        while not stop.is_set():
            dst = mac(2) if n % 2 else BCAST
            sw.ports[local].send(frame(dst, mac(100 + n % 50)))
            n += 1
            stop.wait(0.001)

    def from_wire() -> None:
        # To the local port (static), and unknown MACs: the RX thread
        # decapsulates, learns and floods to the local ports.
        n = 0
        while not stop.is_set():
            dst = mac(1) if n % 2 else mac(900 + n % 50)
            remote.sock.sendto(wire.build_header(VNI) + frame(dst, mac(300 + n % 50)),
                               ("127.0.0.1", sw.port))
            n += 1
            stop.wait(0.001)

    traffic = [threading.Thread(target=f) for f in (from_port, from_wire)]
    for t in (reader, *traffic):
        t.start()
    try:
        for i in range(ROUNDS):
            # A VNI of its own, with a port, a flood list, entries: made
            # and removed whole while the workers run.
            spare = 1000 + i
            sw.dp.add_vni(spare)
            port = sw.add_port(spare)
            sw.dp.add_remote(spare, other.ip, other.port)
            sw.dp.fdb_add(spare, mac(5), port=port)
            sw.dp.arp_add(spare, f"10.9.0.{i % 200 + 1}", mac(5))
            sw.dp.set_arp(spare, "answer-only")
            # The busy VNI changed under its traffic.
            sw.dp.add_remote(VNI, other.ip, other.port)
            sw.dp.fdb_add(VNI, mac(3), remote=other.ip, remote_port=other.port)
            sw.dp.arp_add(VNI, f"10.0.0.{i % 200 + 1}", mac(1))
            sw.dp.set_arp(VNI, "off" if i % 3 == 0 else "answer")
            # Reads while it all runs.
            entries = sw.dp.fdb_dump()
            assert any(e.mac == mac(1) and e.port == local for e in entries)
            assert sw.dp.arp_lookup(VNI, f"10.0.0.{i % 200 + 1}") == mac(1)
            sw.dp.drops()
            sw.dp.vni_drops(VNI)
            sw.dp.port_drops(local)
            sw.dp.vni_counters(VNI)
            sw.dp.port_counters(local)
            sw.dp.fdb_lookup(VNI, mac(2))
            # And undone.
            sw.dp.del_remote(VNI, other.ip, other.port)
            sw.dp.fdb_del(VNI, mac(3))
            sw.dp.arp_del(VNI, f"10.0.0.{i % 200 + 1}")
            sw.dp.fdb_age(2**62)               # every learned entry, both sides'
            sw.dp.del_port(port)
            sw.dp.del_vni(spare)
            assert sw.dp.fdb_lookup(spare, mac(5)) is None
    finally:
        stop.set()
        for t in (*traffic, reader):
            t.join(10)
        sw.dp.stop_threads()
        other.sock.close()

    # Both directions moved frames through the threads all along.
    assert got.get(remote.sock.fileno(), 0) > 0, "nothing reached the VTEP"
    assert got.get(sw.ports[local].fileno(), 0) > 0, "nothing reached the port"
    counters = sw.dp.port_counters(local)
    assert counters.rx_packets > 0 and counters.tx_packets > 0
    assert sw.dp.fdb_lookup(VNI, mac(2)) is not None   # static entries stayed
