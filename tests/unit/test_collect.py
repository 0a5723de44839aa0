"""Endpoints whose netns is gone, collected after a grace period
(uvxlan.collect): the timing with a fake clock and a fake netns check,
the deletion on a real SQLite store, and the netns check on real paths."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest

from uvxlan import cluster, collect
from uvxlan.cluster import EndpointRecord, EndpointStatus
from uvxlan.collect import GONE_AT_ONCE, Collector, not_ready
from uvxlan.config import HostConfig, parse
from uvxlan.store import open_store


def rec(name: str, netns: str | None = None, ip: str = "10.0.0.2/24") -> EndpointRecord:
    return EndpointRecord(name=name, network="net1", host="h1", netns=netns or name,
                          ifname="eth0", mac="02:42:0a:00:00:02", ip=ip)


class World:
    """A fake clock and the netns that are gone, by the test's say."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.gone: dict[str, str] = {}

    def collector(self, grace: float) -> Collector:
        return Collector(grace, why_gone=self.gone.get, clock=lambda: self.now)


def keys(due: list[tuple[str, EndpointRecord, str]]) -> list[str]:
    return [k for k, _, _ in due]


def test_collected_only_after_the_grace_period() -> None:
    w = World()
    c = w.collector(60)
    wanted = {"a": rec("a"), "b": rec("b")}
    assert c.due(wanted) == []
    w.gone["a"] = "deleted"
    assert c.due(wanted) == []                  # first seen gone now
    w.now += 59
    assert c.due(wanted) == []
    w.now += 1
    [(key, _, why)] = c.due(wanted)
    assert key == "a" and why == "netns a gone for 60 s"


def test_a_netns_back_within_the_grace_period_starts_it_again() -> None:
    w = World()
    c = w.collector(60)
    wanted = {"a": rec("a")}
    w.gone["a"] = "deleted"
    c.due(wanted)
    w.now += 50
    del w.gone["a"]
    assert c.due(wanted) == [] and c.since == {}
    w.gone["a"] = "deleted"
    w.now += 20
    assert c.due(wanted) == []                  # 20 s of the new episode, not 70
    w.now += 60
    assert keys(c.due(wanted)) == ["a"]


def test_a_process_netns_whose_process_is_gone_goes_at_once() -> None:
    w = World()
    c = w.collector(3600)
    wanted = {"p": rec("p", "/proc/4242/ns/net")}
    w.gone["/proc/4242/ns/net"] = GONE_AT_ONCE
    [(_, _, why)] = c.due(wanted)
    assert why == "netns /proc/4242/ns/net: its process is gone"


def test_zero_never_collects() -> None:
    w = World()
    c = w.collector(0)
    w.gone["a"] = GONE_AT_ONCE
    w.now += 1e9
    assert c.due({"a": rec("a")}) == []


def test_endpoints_no_longer_wanted_are_forgotten() -> None:
    w = World()
    c = w.collector(60)
    w.gone["a"] = "deleted"
    c.due({"a": rec("a")})
    assert "a" in c.since
    c.due({})
    assert c.since == {}


def test_only_endpoints_that_do_not_forward_are_looked_at() -> None:
    wanted = {"up": rec("up"), "lost": rec("lost"), "new": rec("new")}
    statuses = {"up": EndpointStatus(state="ready"),
                "lost": EndpointStatus(state="error", error="netns lost is gone")}
    assert sorted(not_ready(wanted, statuses)) == ["lost", "new"]


def test_the_setting_and_its_default() -> None:
    assert HostConfig(underlay="192.0.2.1").collect_after == 60.0
    cfg = parse({"host": {"underlay": "192.0.2.1", "collect_after": 0}})
    assert cfg.host.collect_after == 0.0
    with pytest.raises(ValueError, match="collect_after: -1 is outside"):
        parse({"host": {"underlay": "192.0.2.1", "collect_after": -1}})


def test_gone_reads_real_paths(tmp_path: Path) -> None:
    assert collect.gone(f"/proc/{os.getpid()}/ns/net") is None
    assert collect.gone("/proc/self/ns/net") is None
    child = subprocess.Popen(["true"])
    child.wait()
    assert collect.gone(f"/proc/{child.pid}/ns/net") == GONE_AT_ONCE
    assert collect.gone(str(tmp_path / "no-such-netns")) == "deleted"
    (tmp_path / "ns").touch()                  # a file, but no namespace
    assert collect.gone(str(tmp_path / "ns")) == "deleted"


def test_collect_deletes_the_record_and_frees_its_address(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a real store: the record and its address reservation go, logged
    once; a record replaced meanwhile (same name, attached again) stays."""
    async def body() -> None:
        store = open_store(f"sqlite://{tmp_path}/state.db")
        try:
            host = cluster.HostRecord(name="h1", underlay="192.0.2.1", port=4789, mtu=1500)
            await store.put(cluster.host_key("h1"), cluster.encode(host))
            await cluster.create_network(store, "net1", subnet="10.0.0.0/24")
            a = await cluster.attach(store, "net1", host="h1", netns="ca")
            b = await cluster.attach(store, "net1", host="h1", netns="cb")
            w = World()
            c = w.collector(10)
            w.gone.update(ca="deleted", cb="deleted")
            wanted = {cluster.key_of(a): a, cluster.key_of(b): b}
            await c.collect(store, wanted)
            # cb is detached and attached again by hand meanwhile: a new record.
            await cluster.detach(store, "net1", "cb")
            b2 = await cluster.attach(store, "net1", host="h1", netns="cb", ip="10.0.0.9")
            w.now += 10
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="uvxlan.collect"):
                await c.collect(store, wanted)
                await c.collect(store, wanted)
            names = [e.name for e, _ in await cluster.list_endpoints(store)]
            assert names == ["cb"]
            assert [r.getMessage() for r in caplog.records] == [
                f"endpoint net1/ca: netns ca gone for 10 s: collected (its record deleted, "
                f"address {a.address.ip} free)"]
            assert c.collected == 1
            again = await cluster.attach(store, "net1", host="h1", netns="cc")
            assert again.address.ip == a.address.ip        # the address is free again
            assert b2.address.ip != a.address.ip
        finally:
            await store.close()

    asyncio.run(body())


def test_a_reused_pid_is_another_process_netns_never_made_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The node keeps the namespace a lost endpoint was in; a /proc path
    # that opens another one now (the pid reused) is gone for good.
    from uvxlan import netlink
    from uvxlan.node import Lost, Node

    node = Node.__new__(Node)
    epc = parse({"host": {"name": "h1", "underlay": "127.0.0.1"},
                 "network": [{"name": "n", "vni": 5}],
                 "endpoint": [{"network": "n", "netns": "/proc/4242/ns/net",
                               "address": "10.0.0.2/24"}]}).endpoints[0]
    node.lost = {id(epc): Lost(epc, 5, 1450, "netns gone", (1, 100))}
    inode: dict[str, tuple[int, int] | None] = {epc.netns: (1, 100)}
    monkeypatch.setattr(netlink, "netns_inode", lambda ns: inode[ns])
    assert not node.gone_for_good(epc)           # the same namespace: made again
    inode[epc.netns] = (1, 200)                  # the pid reused
    assert node.gone_for_good(epc) and node.reused_process_netns(epc.netns)
    node.lost[id(epc)] = Lost(epc, 5, 1450, "netns gone")   # lost before it was ever made
    assert node.gone_for_good(epc)
    named = parse({"host": {"name": "h1", "underlay": "127.0.0.1"},
                   "network": [{"name": "n", "vni": 5}],
                   "endpoint": [{"network": "n", "netns": "c1",
                                 "address": "10.0.0.3/24"}]}).endpoints[0]
    assert not node.gone_for_good(named)         # a name comes back as itself
