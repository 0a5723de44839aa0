"""Networks, endpoints and IPAM in the cluster store (``uvxlan.cluster``) and
their CLI, run against both backends: sqlite (a database file in tmp_path)
and etcd (a real ``etcd`` on 127.0.0.1, one per module, its /uvxlan/ keys
wiped before each test).

Hosts are registered by writing their HostRecords, and an agent's status by
writing the status key: these tests stand in for the agents, whose own
behaviour is tested end to end elsewhere.  The concurrency tests race
separate processes, as CLIs on several hosts would.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from tests.support import etcdserver
from tests.support.children import Child, Racers
from tests.support.etcdserver import ETCD
from uvxlan import cluster
from uvxlan.cluster import (
    EndpointRecord,
    EndpointStatus,
    HostRecord,
    NetworkRecord,
    attach,
    create_network,
    detach,
    get_network,
    list_endpoints,
    list_hosts,
    list_networks,
    remove_network,
    wait_ready,
)
from uvxlan.errors import ClusterError, ConfigError
from uvxlan.store import Store, open_store

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
TEST_TIMEOUT = 60.0
etcd_server = etcdserver.etcd_server          # the shared fixture, one server per module


def run(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT) -> T:
    """Run a test body on uvloop; a hang fails the test instead of the run."""
    return uvloop.run(asyncio.wait_for(coro, timeout))


class Backend:
    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url

    @contextlib.asynccontextmanager
    async def store(self) -> AsyncIterator[Store]:
        s = open_store(self.url)
        try:
            yield s
        finally:
            await s.close()


async def wipe(url: str) -> None:
    """Delete every cluster key (tests on one etcd server share them)."""
    s = open_store(url)
    try:
        kvs, _ = await s.list(cluster.ROOT)
        for i in range(0, len(kvs), 100):          # etcd allows 128 ops per txn
            assert await s.txn(delete=[kv.key for kv in kvs[i:i + 100]])
    finally:
        await s.close()


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=etcdserver.needs_etcd)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite://{tmp_path}/state/state.db")
        return
    server: etcdserver.EtcdServer = request.getfixturevalue("etcd_server")
    b = Backend("etcd", server.store_url)
    run(wipe(b.url))
    yield b


async def add_host(s: Store, name: str, underlay: str, mtu: int = 1500) -> HostRecord:
    """Register a host as its agent would (without the lease)."""
    h = HostRecord(name=name, underlay=underlay, port=4789, mtu=mtu, version="test",
                   started=time.time())
    await s.put(cluster.host_key(name), cluster.encode(h))
    return h


async def put_status(s: Store, ep: EndpointRecord, state: str, error: str = "",
                     mac: str | None = None) -> None:
    """Write the status the agent of ep.host would."""
    st = EndpointStatus(state=state, error=error, mac=ep.mac if mac is None else mac, ip=ep.ip,
                        at=time.time())
    await s.put(cluster.status_key(ep.host, ep.network, ep.name), cluster.encode(st))


def overlapping(nets: list[NetworkRecord]) -> list[tuple[str, str]]:
    return [(a.name, b.name) for a, b in itertools.combinations(nets, 2)
            if a.network.overlaps(b.network)]


# Networks --------------------------------------------------------------------

def test_network_create_list_inspect_remove(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            assert await list_networks(s) == []
            net1 = await create_network(s, "net1")
            assert (net1.name, net1.vni, net1.subnet, net1.gateway, net1.mtu) == \
                ("net1", 256, "10.0.0.0/24", "10.0.0.1", 1450)
            assert net1.created > 0
            net2 = await create_network(s, "net2", subnet="192.168.7.0/25", vni=4242, mtu=1400)
            assert (net2.vni, net2.subnet, net2.gateway, net2.mtu) == \
                (4242, "192.168.7.0/25", "192.168.7.1", 1400)
            assert await list_networks(s) == [net1, net2]
            assert await get_network(s, "net2") == net2
            kv = await s.get(cluster.network_key("net1"))
            assert kv is not None and cluster.decode(NetworkRecord, kv.value) == net1

            assert await remove_network(s, "net1") == net1
            assert await list_networks(s) == [net2]
            with pytest.raises(ClusterError, match=r"no network named 'net1' \(networks: net2\)"):
                await get_network(s, "net1")
            with pytest.raises(ClusterError, match="no network named 'net1'"):
                await remove_network(s, "net1")
            again = await create_network(s, "net1")          # name, VNI and subnet free again
            assert (again.vni, again.subnet) == (256, "10.0.0.0/24")

    run(body())


@pytest.mark.parametrize("kwargs, field", [
    ({"name": ""}, "network name"),
    ({"name": "a/b"}, "network name"),
    ({"name": "x" * 65}, "network name"),
    ({"name": "net 1"}, "network name"),
    ({"name": ".."}, "network name"),
    ({"subnet": "banana"}, "subnet 'banana'"),
    ({"subnet": "10.0.0.0"}, "subnet '10.0.0.0'"),
    ({"subnet": "10.0.0.0/33"}, "subnet '10.0.0.0/33'"),
    ({"subnet": "300.0.0.0/24"}, "subnet '300.0.0.0/24'"),
    ({"subnet": "fd00::/64"}, "only IPv4"),
    ({"subnet": "10.0.0.5/24"}, "host bits set: did you mean 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/31"}, "/30 or shorter"),
    ({"vni": 0}, r"vni 0 is out of range \(1-16777215\)"),
    ({"vni": 16777216}, "vni 16777216 is out of range"),
    ({"vni": -1}, "vni -1 is out of range"),
    ({"mtu": 1500}, r"MTU 1500 is larger than the underlay allows \(1450\)"),
    ({"mtu": 1451}, r"MTU 1451 is larger than the underlay allows \(1450\)"),
    ({"mtu": 67}, "MTU 67 is below the minimum"),
])
def test_network_bad_input(backend: Backend, kwargs: dict[str, Any], field: str) -> None:
    async def body() -> None:
        async with backend.store() as s:
            args = {"name": "net1", **kwargs}
            name = args.pop("name")
            with pytest.raises(ConfigError, match=field) as caught:
                await create_network(s, name, **args)
            assert "\n" not in str(caught.value)
            kvs, _ = await s.list(cluster.ROOT)
            assert kvs == []                                  # nothing written

    run(body())


def test_network_conflicts(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await create_network(s, "net1", subnet="10.1.0.0/16", vni=300)
            before, _ = await s.list(cluster.ROOT)
            conflicts: list[tuple[dict[str, Any], str]] = [
                ({"name": "net1"}, "network net1 already exists"),
                ({"vni": 300}, "VNI 300 is already used by network net1"),
                ({"subnet": "10.1.0.0/16"}, r"subnet 10.1.0.0/16 overlaps network net1"),
                ({"subnet": "10.1.200.0/24"}, "overlaps network net1"),    # inside it
                ({"subnet": "10.0.0.0/8"}, "overlaps network net1"),       # around it
            ]
            for kwargs, message in conflicts:
                args = {"name": "net2", **kwargs}
                with pytest.raises(ClusterError, match=message):
                    await create_network(s, args.pop("name"), **args)
            after, _ = await s.list(cluster.ROOT)
            assert after == before
            ok = await create_network(s, "net2", subnet="10.2.0.0/16", vni=16777215)
            assert ok.vni == 16777215

    run(body())


def test_vni_allocation(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            assert (await create_network(s, "a", vni=256)).vni == 256
            assert (await create_network(s, "b")).vni == 257
            assert (await create_network(s, "c", vni=258)).vni == 258
            assert (await create_network(s, "d", vni=10)).vni == 10     # below 256: its own
            assert (await create_network(s, "e")).vni == 259
            await remove_network(s, "b")
            assert (await create_network(s, "f")).vni == 257           # the first free

    run(body())


def test_subnet_choice(backend: Backend) -> None:
    """Chosen subnets are /24s of 10.0.0.0/8 in order, skipping networks'
    subnets and the /24s holding a host's underlay address."""
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "10.0.0.7")
            await add_host(s, "h2", "10.0.2.1")
            await create_network(s, "given", subnet="10.0.4.0/23")
            got = [(await create_network(s, f"n{i}")).subnet for i in range(4)]
            assert got == ["10.0.1.0/24", "10.0.3.0/24", "10.0.6.0/24", "10.0.7.0/24"]
            nets = await list_networks(s)
            assert overlapping(nets) == []
            for n in nets:
                assert not any(ipaddress.IPv4Address(h.underlay) in n.network
                               for h in await list_hosts(s))
                assert n.gateway == str(n.network.network_address + 1)

    run(body())


def test_subnet_choice_avoids_the_routes_given(backend: Backend) -> None:
    """A chosen /24 overlaps no route of the asking host (avoid): one that
    covers a /24, a /23 and a /25 inside a /24 are each skipped; a route
    over the whole pool leaves nothing to choose, said in one line."""
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "10.0.5.1")
            avoid = [ipaddress.IPv4Network(r) for r in
                     ("10.0.0.0/24", "10.0.1.0/25", "10.0.2.0/23", "192.168.0.0/16")]
            got = [(await create_network(s, f"n{i}", avoid=avoid)).subnet for i in range(3)]
            assert got == ["10.0.4.0/24", "10.0.6.0/24", "10.0.7.0/24"]
            # Given by hand, a subnet over a route is the user's call.
            assert (await create_network(s, "given", subnet="10.0.0.0/24",
                                         avoid=avoid)).subnet == "10.0.0.0/24"
            with pytest.raises(ClusterError, match=r"no free /24 left in 10\.0\.0\.0/8 "
                               r"\(networks, hosts' underlays and this host's routes"):
                await create_network(s, "none", avoid=[ipaddress.IPv4Network("10.0.0.0/8")])

    run(body())


def test_mtu_from_hosts(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1", mtu=9000)
            assert (await create_network(s, "jumbo")).mtu == 8950
            await add_host(s, "h2", "192.0.2.2", mtu=1400)
            assert (await create_network(s, "small")).mtu == 1350
            with pytest.raises(ConfigError,
                               match=r"MTU 1400 is larger than the underlay allows \(1350\): "
                               r"host h2's underlay MTU is 1400, less 50 for VXLAN"):
                await create_network(s, "big", mtu=1400)
            assert (await create_network(s, "min", mtu=68)).mtu == 68
            assert [h.name for h in await list_hosts(s)] == ["h1", "h2"]

    run(body())


# Endpoints and IPAM ------------------------------------------------------------

async def ipam_keys(s: Store, network: str) -> list[str]:
    kvs, _ = await s.list(f"{cluster.IPAM}{network}/")
    return [kv.key.rsplit("/", 1)[1] for kv in kvs]


def test_ipam_small_subnet(backend: Backend) -> None:
    """A /29: network .0, gateway .1 and broadcast .7 are never handed out;
    .2-.6 are, lowest first; the sixth attach is refused; a detached
    endpoint's address is free again."""
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            net = await create_network(s, "net1", subnet="10.9.0.0/29")
            eps = [await attach(s, "net1", host="h1", netns=f"c{i}") for i in range(5)]
            assert [e.ip for e in eps] == [f"10.9.0.{i}/29" for i in range(2, 7)]
            assert net.gateway == "10.9.0.1"
            with pytest.raises(ClusterError,
                               match=r"network net1 \(10.9.0.0/29\) has no free address left"):
                await attach(s, "net1", host="h1", netns="c5")
            assert sorted(await ipam_keys(s, "net1")) == [f"10.9.0.{i}" for i in range(2, 7)]
            assert await detach(s, "net1", "c2") == eps[2]
            assert "10.9.0.4" not in await ipam_keys(s, "net1")
            again = await attach(s, "net1", host="h1", netns="c9")
            assert again.ip == "10.9.0.4/29"
            with pytest.raises(ClusterError, match="no endpoint 'c2' in network net1"):
                await detach(s, "net1", "c2")
            rows = await list_endpoints(s, "net1")
            assert sorted(e.name for e, _ in rows) == ["c0", "c1", "c3", "c4", "c9"]
            assert len(await ipam_keys(s, "net1")) == 5

    run(body())


def test_ipam_explicit_addresses(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            await create_network(s, "net1", subnet="10.9.0.0/24")
            a = await attach(s, "net1", host="h1", netns="a", ip="10.9.0.2")
            assert a.ip == "10.9.0.2/24"
            b = await attach(s, "net1", host="h1", netns="b", ip="10.9.0.200/24")
            assert b.ip == "10.9.0.200/24"
            assert (await attach(s, "net1", host="h1", netns="c")).ip == "10.9.0.3/24"
            before, _ = await s.list(cluster.ROOT)
            bad: list[tuple[str, type[Exception], str]] = [
                ("10.9.0.2", ClusterError, "ip 10.9.0.2 is already used by endpoint a"),
                ("10.9.0.0", ConfigError, "network address"),
                ("10.9.0.1", ConfigError, "gateway"),
                ("10.9.0.255", ConfigError, "broadcast address"),
                ("10.9.1.5", ConfigError, "not in network net1's subnet 10.9.0.0/24"),
                ("10.9.0.5/16", ConfigError, r"the prefix must be the network's \(/24\)"),
                ("10.9.0.256", ConfigError, "expected an IPv4 address"),
                ("fd00::1", ConfigError, "expected an IPv4 address"),
            ]
            for ip, kind, message in bad:
                with pytest.raises(kind, match=message):
                    await attach(s, "net1", host="h1", netns="x", ip=ip)
            after, _ = await s.list(cluster.ROOT)
            assert after == before                              # nothing half-written

    run(body())


def test_mac(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            await create_network(s, "net1", subnet="172.16.5.0/24")
            a = await attach(s, "net1", host="h1", netns="a")
            assert (a.ip, a.mac) == ("172.16.5.2/24", "02:42:ac:10:05:02")   # as Docker
            b = await attach(s, "net1", host="h1", netns="b", mac="AA:BB:CC:00:11:22")
            assert b.mac == "aa:bb:cc:00:11:22"
            assert b.ip == "172.16.5.3/24"
            # By hand, the MAC .5 would derive: the next derived one skips .5.
            c = await attach(s, "net1", host="h1", netns="c", mac="02:42:ac:10:05:05")
            assert c.ip == "172.16.5.4/24"
            d = await attach(s, "net1", host="h1", netns="d")
            assert (d.ip, d.mac) == ("172.16.5.6/24", "02:42:ac:10:05:06")
            with pytest.raises(ClusterError, match="mac 02:42:ac:10:05:05 is already used by "
                               "endpoint c"):
                await attach(s, "net1", host="h1", netns="e", ip="172.16.5.5")
            with pytest.raises(ClusterError, match="already used by endpoint b"):
                await attach(s, "net1", host="h1", netns="e", mac="aa-bb-cc-00-11-22")
            for mac, message in [("01:00:5e:00:00:01", "multicast"),
                                 ("00:00:00:00:00:00", "all-zero"),
                                 ("aa:bb:cc:00:11", "six hex bytes"),
                                 ("zz:bb:cc:00:11:22", "six hex bytes")]:
                with pytest.raises(ConfigError, match=message):
                    await attach(s, "net1", host="h1", netns="e", mac=mac)
            macs = [e.mac for e, _ in await list_endpoints(s, "net1")]
            assert len(set(macs)) == len(macs) == 4

    run(body())


def test_attach_bad_input(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            await add_host(s, "h2", "192.0.2.2")
            await create_network(s, "net1")
            ep = await attach(s, "net1", host="h2", netns="ctr-1", ifname="veth.a")
            assert (ep.name, ep.netns, ep.host, ep.ifname, ep.network) == \
                ("ctr-1", "ctr-1", "h2", "veth.a", "net1")
            before, _ = await s.list(cluster.ROOT)
            with pytest.raises(ClusterError,
                               match=r"host 'h3' is not registered \(hosts: h1, h2;"):
                await attach(s, "net1", host="h3", netns="x")
            with pytest.raises(ClusterError, match=r"no network named 'nope' \(networks: net1\)"):
                await attach(s, "nope", host="h1", netns="x")
            with pytest.raises(ClusterError, match="endpoint ctr-1 already exists in network"):
                await attach(s, "net1", host="h1", netns="other", name="ctr-1")
            for kwargs, message in [
                ({"ifname": "x" * 16}, "ifname"), ({"ifname": "a/b"}, "ifname"),
                ({"ifname": ""}, "ifname"), ({"ifname": "a b"}, "ifname"),
                ({"name": "a/b"}, "endpoint name 'a/b'"),
                ({"netns": "my ns"}, r"endpoint name \(from netns\) 'my ns'"),
                ({"netns": "a/b"}, "netns 'a/b'"), ({"netns": ""}, "netns ''"),
            ]:
                args: dict[str, Any] = {"host": "h1", "netns": "x", **kwargs}
                with pytest.raises(ConfigError, match=message) as caught:
                    await attach(s, "net1", **args)
                assert "\n" not in str(caught.value)
            after, _ = await s.list(cluster.ROOT)
            assert after == before

    run(body())


def test_remove_refused_with_endpoints(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            await create_network(s, "net1")
            await create_network(s, "net2")
            await attach(s, "net1", host="h1", netns="c1")
            await attach(s, "net1", host="h1", netns="c2")
            await attach(s, "net2", host="h1", netns="c1")
            with pytest.raises(ClusterError) as caught:
                await remove_network(s, "net1")
            assert str(caught.value) == \
                "network net1 has 2 endpoints: c1, c2; detach them first"
            await detach(s, "net1", "c1")
            with pytest.raises(ClusterError, match="network net1 has 1 endpoint: c2; detach it"):
                await remove_network(s, "net1")
            await detach(s, "net1", "c2")
            await remove_network(s, "net1")
            kvs, _ = await s.list(cluster.ROOT)
            assert not [kv.key for kv in kvs if "/net1" in kv.key]
            assert [e.network for e, _ in await list_endpoints(s)] == ["net2"]

    run(body())


def test_remove_races_attach(backend: Backend) -> None:
    """A removal and an attach at once: either the network is gone and
    nothing of the endpoint is left, or both are there."""
    async def body() -> None:
        async with backend.store() as s1, backend.store() as s2:
            await add_host(s1, "h1", "192.0.2.1")
            outcomes = set()
            for i in range(15):
                await create_network(s1, "net1", subnet="10.3.0.0/24")
                removed, attached = await asyncio.gather(
                    remove_network(s1, "net1"),
                    attach(s2, "net1", host="h1", netns=f"c{i}"), return_exceptions=True)
                kvs, _ = await s1.list(cluster.ROOT)
                keys = [kv.key for kv in kvs if "/net1" in kv.key]
                if isinstance(removed, NetworkRecord):
                    assert isinstance(attached, ClusterError), attached
                    assert keys == [], keys
                    outcomes.add("removed")
                else:
                    assert isinstance(removed, ClusterError), removed
                    assert "detach it first" in str(removed)
                    assert isinstance(attached, EndpointRecord)
                    assert len(keys) == 3, keys          # network, endpoint, ipam
                    await detach(s1, "net1", attached.name)
                    await remove_network(s1, "net1")
                    outcomes.add("attached")
            assert outcomes                               # (which wins is up to the race)

    run(body())


def test_list_endpoints_status(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            await add_host(s, "h2", "192.0.2.2")
            await create_network(s, "net1")
            await create_network(s, "net2")
            a = await attach(s, "net1", host="h1", netns="a")
            b = await attach(s, "net1", host="h2", netns="b")
            c = await attach(s, "net2", host="h2", netns="a")
            await put_status(s, a, "ready")
            await put_status(s, b, "error", "no such netns b")
            await put_status(s, c, "ready", mac="02:00:00:00:00:99")   # not about c
            rows = await list_endpoints(s)
            assert [(e.network, e.name) for e, _ in rows] == [("net1", "a"), ("net1", "b"),
                                                              ("net2", "a")]
            st = {(e.network, e.name): x for e, x in rows}
            ready, failed = st[("net1", "a")], st[("net1", "b")]
            assert ready is not None and ready.state == "ready"
            assert failed is not None and (failed.state, failed.error) == \
                ("error", "no such netns b")
            assert st[("net2", "a")] is None
            assert [e.name for e, _ in await list_endpoints(s, "net2")] == ["a"]
            with pytest.raises(ClusterError, match="no network named 'net3'"):
                await list_endpoints(s, "net3")

    run(body())


# Waiting for the agent -----------------------------------------------------------

def test_wait_ready(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s, backend.store() as agent:
            await add_host(s, "h1", "192.0.2.1")
            await create_network(s, "net1")
            ep = await attach(s, "net1", host="h1", netns="c1")

            async def realise() -> None:
                await asyncio.sleep(0.3)
                await put_status(agent, ep, "ready", mac="02:00:00:00:00:01")  # another's
                await asyncio.sleep(0.1)
                await put_status(agent, ep, "ready")

            writer = asyncio.ensure_future(realise())
            t0 = time.monotonic()
            st = await wait_ready(s, ep, 10.0)
            await writer
            assert (st.state, st.mac, st.ip) == ("ready", ep.mac, ep.ip)
            assert time.monotonic() - t0 >= 0.35
            assert await wait_ready(s, ep, 1.0) == st     # already there: at once

    run(body())


def test_wait_ready_error(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            await create_network(s, "net1")
            ep = await attach(s, "net1", host="h1", netns="c1")

            async def fail() -> None:
                await asyncio.sleep(0.2)
                await put_status(s, ep, "error", "netns c1 does not exist")

            writer = asyncio.ensure_future(fail())
            with pytest.raises(ClusterError) as caught:
                await wait_ready(s, ep, 10.0)
            await writer
            assert str(caught.value) == \
                "host h1 could not realise endpoint c1: netns c1 does not exist"

    run(body())


def test_wait_ready_timeout(backend: Backend) -> None:
    """No agent: the wait ends after its timeout.  A status left from an
    earlier endpoint of the same name and address does not count."""
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h2", "192.0.2.2")
            await create_network(s, "net1")
            old = await attach(s, "net1", host="h2", netns="c1")
            await put_status(s, old, "error", "an old failure")
            await detach(s, "net1", "c1")
            ep = await attach(s, "net1", host="h2", netns="c1")
            assert (ep.ip, ep.mac) == (old.ip, old.mac)
            t0 = time.monotonic()
            with pytest.raises(ClusterError) as caught:
                await wait_ready(s, ep, 0.5)
            assert str(caught.value) == ("host h2 did not realise endpoint c1 within 0.5 s "
                                         "(is its agent running?)")
            assert 0.45 <= time.monotonic() - t0 < 3.0          # (loop clocks round to ms)
            assert await cluster.undo_attach(s, ep)
            assert not await cluster.undo_attach(s, ep)          # gone already
            assert await list_endpoints(s) == []

    run(body())


# Concurrent CLIs on several hosts --------------------------------------------------

def worker_main(argv: list[str]) -> None:
    """Another process: connects, says ready, waits for a line on stdin,
    then creates networks or attaches endpoints, and prints them as JSON."""
    mode, url, prefix, n = argv[0], argv[1], argv[2], int(argv[3])

    async def main() -> list[dict[str, Any]]:
        store = open_store(url)
        try:
            await store.list(cluster.NETWORKS)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            out: list[dict[str, Any]] = []
            for i in range(n):
                if mode == "create":
                    rec: Any = await create_network(store, f"{prefix}{i}")
                else:
                    rec = await attach(store, "shared", host="h1", netns=f"{prefix}{i}")
                out.append(json.loads(cluster.encode(rec)))
            return out
        finally:
            await store.close()

    print(json.dumps(uvloop.run(main())), flush=True)


async def race(backend: Backend, mode: str, per_process: int) -> list[dict[str, Any]]:
    """Three processes at once; everything they made."""
    argvs = [[sys.executable, "-c",
              "import sys; from tests.system.test_cluster import worker_main; "
                "worker_main(sys.argv[1:])",
              mode, backend.url, f"p{i}-", str(per_process)] for i in range(3)]
    async with Racers(argvs, cwd=REPO) as racers:
        await racers.go()
        made: list[dict[str, Any]] = []
        for out in await racers.results(40):
            made += json.loads(out)
        return made


def test_concurrent_create(backend: Backend) -> None:
    """Three processes create ten networks each at once, with no VNI or
    subnet given: thirty networks, unique VNIs, no overlapping subnets."""
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "10.0.3.9")            # its /24 is never chosen
            made = await race(backend, "create", 10)
            nets = await list_networks(s)
            assert len(nets) == len(made) == 30
            # what each process was told is what is stored
            assert [json.loads(cluster.encode(n)) for n in nets] == \
                sorted(made, key=lambda m: str(m["name"]))
            vnis = [n.vni for n in nets]
            assert len(set(vnis)) == 30 and sorted(vnis) == list(range(256, 286))
            assert overlapping(nets) == []
            assert not any(ipaddress.IPv4Address("10.0.3.9") in n.network for n in nets)

    run(body())


def test_concurrent_attach(backend: Backend) -> None:
    """Three processes attach twenty endpoints each to one network at once:
    sixty endpoints, unique IPs and MACs, each IP reserved once."""
    async def body() -> None:
        async with backend.store() as s:
            await add_host(s, "h1", "192.0.2.1")
            net = await create_network(s, "shared", subnet="10.50.0.0/24")
            made = await race(backend, "attach", 20)
            rows = await list_endpoints(s, "shared")
            assert len(rows) == len(made) == 60
            ips = [e.address.ip for e, _ in rows]
            macs = [e.mac for e, _ in rows]
            assert len(set(ips)) == 60 and len(set(macs)) == 60
            assert {e.ip for e, _ in rows} == {m["ip"] for m in made}
            hosts = list(net.network.hosts())
            assert sorted(ips) == hosts[1:61]               # lowest first, gateway skipped
            assert sorted(await ipam_keys(s, "shared"), key=ipaddress.IPv4Address) == \
                [str(ip) for ip in sorted(ips)]

    run(body())


# The CLI -------------------------------------------------------------------------

def cli(*args: str, store: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "UVXLAN_STORE"}
    return subprocess.run([sys.executable, "-m", "uvxlan", *args, "--store", store],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def one_line_error(done: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvxlan: error: "), done.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/state/state.db"


def register(url: str, *hosts: tuple[str, str]) -> None:
    async def body() -> None:
        s = open_store(url)
        try:
            for name, underlay in hosts:
                await add_host(s, name, underlay)
        finally:
            await s.close()

    run(body())


def test_cli_networks(db: str) -> None:
    done = cli("network", "create", "net1", store=db)
    assert done.returncode == 0, done.stderr
    shown = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert shown == {"name": "net1", "vni": "256", "subnet": "10.0.0.0/24",
                     "gateway": "10.0.0.1", "mtu": "1450", "admit": "members",
                     "learning": "off", "gbp": "off"}
    done = cli("network", "create", "net2", "--subnet", "10.7.0.0/16", "--vni", "77",
               "--mtu", "1400", "--admit", "any", "--learning", store=db)
    assert done.returncode == 0, done.stderr
    shown = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert (shown["admit"], shown["learning"]) == ("any", "on")
    ins = cli("network", "inspect", "net2", store=db)
    shown = dict(line.split(None, 1) for line in ins.stdout.splitlines())
    assert (shown["admit"], shown["learning"]) == ("any", "on"), ins.stdout

    ls = cli("network", "ls", "--json", store=db)
    assert ls.returncode == 0, ls.stderr
    nets = json.loads(ls.stdout)
    assert [(n["name"], n["vni"], n["subnet"], n["mtu"], n["endpoints"]) for n in nets] == \
        [("net1", 256, "10.0.0.0/24", 1450, 0), ("net2", 77, "10.7.0.0/16", 1400, 0)]
    assert [(n["admit"], n["learning"]) for n in nets] == [("members", False), ("any", True)]
    table = cli("network", "ls", store=db)
    assert table.stdout.split("\n")[0].split() == ["NAME", "VNI", "SUBNET", "GATEWAY", "MTU",
                                                   "ENDPOINTS"]
    assert [line.split()[0] for line in table.stdout.strip().split("\n")[1:]] == \
        ["net1", "net2"]

    one_line_error(cli("network", "create", "net3", "--subnet", "10.7.1.0/24", store=db),
                   "overlaps network net2")
    one_line_error(cli("network", "create", "net1", store=db), "network net1 already exists")
    one_line_error(cli("network", "create", "net3", "--vni", "77", store=db),
                   "VNI 77 is already used by network net2")
    one_line_error(cli("network", "create", "net3", "--vni", "0", store=db), "vni 0")
    one_line_error(cli("network", "create", "net3", "--vni", "many", store=db),
                   "--vni must be an integer")
    one_line_error(cli("network", "create", "net3", "--subnet", "10.8.0.1/24", store=db),
                   "host bits set")
    one_line_error(cli("network", "create", "net3", "--mtu", "1500", store=db),
                   "MTU 1500 is larger than the underlay allows (1450)")
    one_line_error(cli("network", "create", "bad/name", store=db), "network name")
    one_line_error(cli("network", "inspect", "net9", store=db), "no network named 'net9'")
    one_line_error(cli("network", "rm", "net9", store=db), "no network named 'net9'")

    done = cli("network", "rm", "net2", store=db)
    assert (done.returncode, done.stdout) == (0, "net2\n"), done.stderr
    assert [n["name"] for n in json.loads(cli("network", "ls", "--json",
                                              store=db).stdout)] == ["net1"]


def test_cli_attach_detach(db: str) -> None:
    register(db, ("h1", "192.0.2.1"), ("h2", "192.0.2.2"))
    assert cli("network", "create", "net1", store=db).returncode == 0
    one_line_error(cli("attach", "net1", "--host", "h9", "--netns", "c1", store=db),
                   "host 'h9' is not registered (hosts: h1, h2;")
    one_line_error(cli("attach", "net1", "--host", "h1", "--netns", "c1", "--ip", "10.0.0.1",
                       store=db), "gateway")
    one_line_error(cli("attach", "net1", "--host", "h1", "--netns", "c1", "--timeout", "soon",
                       store=db), "--timeout must be a positive number")

    done = cli("attach", "net1", "--host", "h1", "--netns", "c1", "--no-wait", store=db)
    assert done.returncode == 0, done.stderr
    shown = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert (shown["name"], shown["ip"], shown["mac"], shown["host"]) == \
        ("c1", "10.0.0.2/24", "02:42:0a:00:00:02", "h1")

    # Nobody realises it: the attach fails after its timeout and leaves nothing.
    t0 = time.monotonic()
    line = one_line_error(cli("attach", "net1", "--host", "h2", "--netns", "c2",
                              "--timeout", "1", store=db),
                          "host h2 did not realise endpoint c2 within 1 s")
    assert time.monotonic() - t0 < 15, line
    eps = json.loads(cli("endpoint", "ls", "--json", store=db).stdout)
    assert [(e["name"], e["status"]) for e in eps] == [("c1", None)]

    inspect = json.loads(cli("network", "inspect", "net1", "--json", store=db).stdout)
    assert inspect["name"] == "net1" and [e["name"] for e in inspect["endpoints"]] == ["c1"]
    one_line_error(cli("network", "rm", "net1", store=db),
                   "network net1 has 1 endpoint: c1; detach it first")
    table = cli("endpoint", "ls", "--network", "net1", store=db)
    assert table.returncode == 0 and "pending" in table.stdout.split("\n")[1]
    one_line_error(cli("endpoint", "ls", "--network", "nope", store=db), "no network named")
    one_line_error(cli("detach", "net1", "c7", store=db), "no endpoint 'c7' in network net1")
    done = cli("detach", "net1", "c1", store=db)
    assert (done.returncode, done.stdout) == (0, "c1\n"), done.stderr
    assert json.loads(cli("endpoint", "ls", "--json", store=db).stdout) == []
    assert cli("network", "rm", "net1", store=db).returncode == 0

    hosts = json.loads(cli("host", "ls", "--json", store=db).stdout)
    assert [(h["name"], h["underlay"], h["port"]) for h in hosts] == \
        [("h1", "192.0.2.1", 4789), ("h2", "192.0.2.2", 4789)]
    table = cli("host", "ls", store=db)
    assert table.returncode == 0 and "192.0.2.1:4789" in table.stdout


def test_cli_attach_waits_for_the_agent(db: str) -> None:
    """attach waits for the status: ready prints the endpoint; an error
    fails with the agent's message and detaches again."""
    register(db, ("h1", "192.0.2.1"))
    assert cli("network", "create", "net1", store=db).returncode == 0

    async def agent(state: str, name: str) -> subprocess.CompletedProcess[str]:
        """Run the CLI's attach while answering for the agent."""
        proc = Child(
            sys.executable, "-m", "uvxlan", "attach", "net1", "--host", "h1", "--netns", name,
            "--timeout", "20", "--store", db, cwd=REPO)
        s = open_store(db)
        try:
            deadline = time.monotonic() + 15
            while (kv := await s.get(cluster.endpoint_key("net1", name))) is None:
                assert time.monotonic() < deadline, "the CLI wrote no endpoint"
                await asyncio.sleep(0.05)
            ep = cluster.decode(EndpointRecord, kv.value)
            await put_status(s, ep, state, "" if state == "ready" else "no netns " + name)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            await s.close()
            await proc.kill()
        assert proc.returncode is not None
        return subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode())

    done = run(agent("ready", "c1"))
    assert done.returncode == 0, done.stderr
    shown = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert (shown["name"], shown["ip"], shown["host"], shown["status"]) == \
        ("c1", "10.0.0.2/24", "h1", "ready")

    failed = run(agent("error", "c2"))
    one_line_error(failed, "host h1 could not realise endpoint c2: no netns c2")
    eps = json.loads(cli("endpoint", "ls", "--json", store=db).stdout)
    assert [(e["name"], e["status"]["state"]) for e in eps] == [("c1", "ready")]


def test_cli_store_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store wants a directory\n")
    # A command that adds makes the store, or says why it cannot; one
    # that only reads never makes it.
    one_line_error(cli("network", "create", "n1", store=f"sqlite://{blocker}/state.db"),
                   "cannot create directory")
    one_line_error(cli("network", "ls", store=f"sqlite://{blocker}/state.db"),
                   "store file missing")
    one_line_error(cli("network", "ls", store="mysql://x"), "store URL")
    if ETCD.exists():
        port = etcdserver.free_ports(1)[0]
        one_line_error(cli("host", "ls", store=f"etcd://127.0.0.1:{port}?timeout=1"),
                       "etcd unreachable")
    help_text = cli("attach", "--help", store="sqlite:///unused.db")
    assert help_text.returncode == 0 and "examples:" in help_text.stdout


def test_cli_env_store(tmp_path: Path) -> None:
    """Without --store: $UVXLAN_STORE."""
    url = f"sqlite://{tmp_path}/env.db"
    env = {**os.environ, "UVXLAN_STORE": url}
    done = subprocess.run([sys.executable, "-m", "uvxlan", "network", "create", "envnet"],
                          capture_output=True, text=True, timeout=30, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env.db").exists()
    listed = cli("network", "ls", "--json", store=url)
    assert [n["name"] for n in json.loads(listed.stdout)] == ["envnet"]
