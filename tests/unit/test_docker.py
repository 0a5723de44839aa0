"""Docker's network and IPAM driver (uvxlan.docker): the calls on a real
SQLite store with fake TAPs, and the HTTP server on a real unix socket.
tests/system/test_docker.py runs it under real dockerds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from uvxlan import bounded, cluster, docker
from uvxlan.cluster import EndpointRecord
from uvxlan.errors import ConfigError
from uvxlan.netlink import FoundLink
from uvxlan.store import Store, open_store

NET_ID = "9e" * 32
SANDBOX = "/var/run/docker/netns/0123456789ab"


class FakeTaps:
    """TAPs in memory; ``moved()`` plays Docker moving one into a sandbox."""

    def __init__(self) -> None:
        self.here: dict[str, tuple[str, int]] = {}          # name -> mac, mtu
        self.there: dict[tuple[str, str], FoundLink] = {}   # (netns, mac) ->
        self.removed: list[str] = []

    def make(self, name: str, mac: str, mtu: int) -> None:
        assert name not in self.here
        self.here[name] = (mac, mtu)

    def moved(self, name: str, netns: str, ifname: str, address: str) -> None:
        mac, _ = self.here.pop(name)
        self.there[(netns, mac)] = FoundLink(ifname=ifname, up=True, addresses=[address])

    def back(self, netns: str, mac: str, name: str, mtu: int) -> None:
        del self.there[(netns, mac)]
        self.here[name] = (mac, mtu)

    def find(self, netns: str, mac: str) -> FoundLink | None:
        return self.there.get((netns, mac))

    def exists(self, name: str) -> bool:
        return name in self.here

    def remove(self, name: str) -> None:
        self.removed.append(name)
        self.here.pop(name, None)


def eid(n: int) -> str:
    return f"{n:064x}"


def run(tmp_path: Path, scenario: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = open_store(f"sqlite://{tmp_path}/state.db")
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


async def ok(plugin: docker.Plugin, method: str, req: dict[str, Any]) -> dict[str, Any]:
    answer = await plugin.call(method, req)
    assert answer is not None
    assert "Err" not in answer and "Error" not in answer, answer
    return answer


async def refused(plugin: docker.Plugin, method: str, req: dict[str, Any]) -> str:
    answer = await plugin.call(method, req)
    assert answer is not None
    key = "Error" if method.startswith("IpamDriver.") else "Err"
    assert set(answer) == {key}, answer
    why: str = answer[key]
    assert why.startswith("uvxlan: ") and "\n" not in why, why
    return why


async def network(plugin: docker.Plugin, name: str = "net1", subnet: str = "10.10.0.0/24",
                  net_id: str = NET_ID, **opts: str) -> str:
    """What `docker network create -d uvxlan --ipam-driver uvxlan --subnet S
    -o uvxlan.network=NAME` sends: the pool id."""
    pool = await ok(plugin, "IpamDriver.RequestPool",
                    {"AddressSpace": "uvxlan", "Pool": subnet, "Options": {}, "V6": False})
    gw = await ok(plugin, "IpamDriver.RequestAddress",
                  {"PoolID": pool["PoolID"], "Address": "",
                   "Options": {"RequestAddressType": docker.GATEWAY_REQUEST}})
    await ok(plugin, "NetworkDriver.CreateNetwork", {
        "NetworkID": net_id,
        "Options": {docker.GENERIC: {"uvxlan.network": name,
                                     **{f"uvxlan.{k}": v for k, v in opts.items()}},
                    "com.docker.network.enable_ipv6": False},
        "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": pool["Pool"],
                      "Gateway": gw["Address"]}],
        "IPv6Data": []})
    return str(pool["PoolID"])


async def endpoint(plugin: docker.Plugin, pool: str, n: int, mac: str = "") -> dict[str, Any]:
    """What `docker run --network` sends before Join: the address, then the
    endpoint; CreateEndpoint's answer with the address."""
    address = await ok(plugin, "IpamDriver.RequestAddress",
                       {"PoolID": pool, "Address": "", "Options": {}})
    answer = await ok(plugin, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": eid(n), "Options": {},
        "Interface": {"Address": address["Address"], "AddressIPv6": "", "MacAddress": mac}})
    return {"Address": address["Address"], **answer}


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def record(store: Store, network: str, n: int) -> EndpointRecord | None:
    kv = await store.get(cluster.endpoint_key(network, docker.endpoint_name(eid(n))))
    return None if kv is None else cluster.checked(EndpointRecord, kv)


def test_handshake_answers_what_libnetwork_reads(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        p = docker.Plugin(store, "h1", FakeTaps())
        assert await ok(p, "Plugin.Activate", {}) == {
            "Implements": ["NetworkDriver", "IpamDriver"]}
        assert await ok(p, "NetworkDriver.GetCapabilities", {}) == {
            "Scope": "local", "ConnectivityScope": "global"}
        assert await ok(p, "IpamDriver.GetCapabilities", {}) == {
            "RequiresMACAddress": False, "RequiresRequestReplay": False}
        assert await ok(p, "IpamDriver.GetDefaultAddressSpaces", {}) == {
            "LocalDefaultAddressSpace": "uvxlan", "GlobalDefaultAddressSpace": "uvxlan"}
        for method in ("NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete",
                       "NetworkDriver.ProgramExternalConnectivity",
                       "NetworkDriver.RevokeExternalConnectivity", "IpamDriver.ReleasePool"):
            assert await ok(p, method, {}) == {}
        assert await p.call("NetworkDriver.AllocateNetwork", {}) is None   # swarm only: 404

    run(tmp_path, scenario)


def test_a_container_from_network_create_to_removal(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        p = docker.Plugin(store, "h1", taps)
        pool = await network(p, vni="5000", mtu="1400")
        net = await cluster.get_network(store, "net1")
        assert (net.subnet, net.vni, net.mtu, net.gateway) == ("10.10.0.0/24", 5000, 1400,
                                                              "10.10.0.1")
        ep = await endpoint(p, pool, 1)
        # The first address after the gateway; its derived MAC answered.
        assert ep == {"Address": "10.10.0.2/24",
                      "Interface": {"MacAddress": "02:42:0a:0a:00:02"}}
        joined = await ok(p, "NetworkDriver.Join", {
            "NetworkID": NET_ID, "EndpointID": eid(1), "SandboxKey": SANDBOX, "Options": {}})
        src = "uvx" + eid(1)[:12]
        assert joined == {"InterfaceName": {"SrcName": src, "DstPrefix": "eth"},
                          "DisableGatewayService": True}      # no Gateway: no route, no gwbridge
        assert taps.here[src] == ("02:42:0a:0a:00:02", 1400)
        # Nothing is written until Docker has moved and configured the TAP:
        # the controller would otherwise make a TAP of its own there.
        await asyncio.sleep(0.05)
        assert await record(store, "net1", 1) is None
        taps.moved(src, SANDBOX, "eth0", "10.10.0.2/24")
        await until(lambda: _exists(store, "net1", 1))
        rec = await record(store, "net1", 1)
        assert rec is not None
        assert (rec.host, rec.netns, rec.ifname, rec.ip, rec.mac) == (
            "h1", SANDBOX, "eth0", "10.10.0.2/24", "02:42:0a:0a:00:02")
        info = await ok(p, "NetworkDriver.EndpointOperInfo",
                        {"NetworkID": NET_ID, "EndpointID": eid(1)})
        assert info["Value"]["uvxlan.endpoint"] == rec.name
        # docker rm: Leave, Docker moves the TAP back, DeleteEndpoint,
        # ReleaseAddress.
        assert await ok(p, "NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": eid(1)}) == {}
        taps.back(SANDBOX, rec.mac, src, 1400)
        # (the controller removes the TAP once the record is gone)
        asyncio.get_running_loop().call_later(0.1, taps.here.pop, src)
        await ok(p, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": eid(1)})
        assert await record(store, "net1", 1) is None
        assert taps.removed == []
        ipam = cluster.ipam_key("net1", "10.10.0.2")
        assert await store.get(ipam) is not None          # still Docker's until released
        await ok(p, "IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.10.0.2"})
        assert await store.get(ipam) is None
        await ok(p, "IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.10.0.1"})
        await ok(p, "NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
        # The store network stays: other hosts' Docker networks map to it.
        assert (await cluster.get_network(store, "net1")).vni == 5000

    run(tmp_path, scenario)


async def _exists(store: Store, network: str, n: int) -> bool:
    return await record(store, network, n) is not None


def test_two_hosts_share_the_network_and_never_an_address(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        h1, h2 = docker.Plugin(store, "h1", FakeTaps()), docker.Plugin(store, "h2", FakeTaps())
        pool1 = await network(h1)
        pool2 = await network(h2, net_id="7f" * 32)
        assert pool1 == pool2 == "10.10.0.0/24"
        assert [n.name for n in await cluster.list_networks(store)] == ["net1"]
        # Both hosts at once: the store's compare-and-swap keeps them apart.
        got = await asyncio.gather(*(
            ok(p, "IpamDriver.RequestAddress", {"PoolID": pool1, "Address": "", "Options": {}})
            for _ in range(10) for p in (h1, h2)))
        addresses = [a["Address"] for a in got]
        assert len(set(addresses)) == 20
        assert "10.10.0.1/24" not in addresses                 # never the gateway
        # An address another host holds is not released by this one.
        await ok(h2, "IpamDriver.ReleaseAddress", {"PoolID": pool1,
                                                   "Address": addresses[0].split("/")[0]})
        assert await store.get(cluster.ipam_key("net1", addresses[0].split("/")[0])) is not None
        # A CreateEndpoint for an address this host did not reserve.
        why = await refused(h2, "NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": eid(9),
            "Interface": {"Address": addresses[0], "MacAddress": ""}})
        assert "not reserved for this host" in why

    run(tmp_path, scenario)


def test_the_same_command_on_another_host_must_agree(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        h1, h2 = docker.Plugin(store, "h1", FakeTaps()), docker.Plugin(store, "h2", FakeTaps())
        await network(h1, vni="300")
        why = await refused(h2, "NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {docker.GENERIC: {"uvxlan.network": "net1"}},
            "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.20.0.0/24"}]})
        assert why == ("uvxlan: network net1 has subnet 10.10.0.0/24, not 10.20.0.0/24: give "
                       "--subnet 10.10.0.0/24 (or --ipam-opt uvxlan.network=net1)")
        why = await refused(h2, "NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID,
            "Options": {docker.GENERIC: {"uvxlan.network": "net1", "uvxlan.vni": "301"}},
            "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]})
        assert why == "uvxlan: network net1 has VNI 300, not 301 (-o uvxlan.vni)"
        # A pool overlapping another network is refused at RequestPool.
        why = await refused(h2, "IpamDriver.RequestPool",
                            {"AddressSpace": "uvxlan", "Pool": "10.10.0.0/16"})
        assert why == "uvxlan: subnet 10.10.0.0/16 overlaps network net1 (10.10.0.0/24)"

    run(tmp_path, scenario)


def test_pool_without_subnet(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        p = docker.Plugin(store, "h1", FakeTaps())
        await network(p, subnet="10.0.0.0/24")
        named = await ok(p, "IpamDriver.RequestPool",
                         {"AddressSpace": "uvxlan", "Options": {"uvxlan.network": "net1"}})
        assert named["PoolID"] == named["Pool"] == "10.0.0.0/24"
        # A new network: the first free /24, as uvxlan network create picks.
        fresh = await ok(p, "IpamDriver.RequestPool", {"AddressSpace": "uvxlan"})
        assert fresh["Pool"] == "10.0.1.0/24"

    run(tmp_path, scenario)


@pytest.mark.parametrize(("method", "req", "why"), [
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {"uvxlan.network": "net1", "uvxlan.colour": "red"}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     "uvxlan: unknown option -o uvxlan.colour (known: uvxlan.network, uvxlan.vni, "
     "uvxlan.mtu, uvxlan.gateway)"),
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     "uvxlan: name the uvxlan network: docker network create -d uvxlan --ipam-driver uvxlan "
     "-o uvxlan.network=NAME ..."),
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {"uvxlan.network": "net1"}},
      "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "172.18.0.0/16"}]},
     "uvxlan: use --ipam-driver uvxlan: Docker's own IPAM hands out addresses per host, "
     "uvxlan's are unique across hosts"),
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {"uvxlan.network": "net1", "uvxlan.vni": "0"}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     "uvxlan: -o uvxlan.vni 0 is out of range (1-16777215)"),
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {"uvxlan.network": "net1", "uvxlan.mtu": "big"}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     "uvxlan: -o uvxlan.mtu=big: expected a whole number"),
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {"uvxlan.network": "net1", "uvxlan.gateway": "yes"}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     "uvxlan: -o uvxlan.gateway=yes: expected none or gwbridge"),
    ("NetworkDriver.CreateNetwork",
     {"NetworkID": "../x", "Options": {docker.GENERIC: {"uvxlan.network": "net1"}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     "uvxlan: network id '../x' is not Docker's"),
    ("NetworkDriver.CreateNetwork",
     {"Options": {docker.GENERIC: {"uvxlan.network": "a/b"}},
      "IPv4Data": [{"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24"}]},
     None),
    ("IpamDriver.RequestPool", {"AddressSpace": "uvxlan", "V6": True},
     "uvxlan: IPv6 is not supported: create the network without --ipv6"),
    ("IpamDriver.RequestPool", {"AddressSpace": "uvxlan", "Pool": "10.10.0.0/24",
                                "SubPool": "10.10.0.128/25"}, None),
    ("IpamDriver.RequestPool", {"AddressSpace": "uvxlan", "Options": {"subnet": "x"}},
     "uvxlan: unknown option --ipam-opt subnet (known: uvxlan.network)"),
    ("IpamDriver.RequestAddress",
     {"PoolID": "10.10.0.0/24", "Address": "10.10.0.9",
      "Options": {"RequestAddressType": docker.GATEWAY_REQUEST}},
     "uvxlan: --gateway 10.10.0.9: uvxlan's gateway is the subnet's first address, "
     "10.10.0.1 (no container takes it)"),
    ("IpamDriver.RequestAddress", {"PoolID": "10.99.0.0/24", "Options": {}},
     "uvxlan: no uvxlan network has subnet 10.99.0.0/24 (removed with uvxlan network rm?)"),
    ("NetworkDriver.Join", {"EndpointID": eid(7), "SandboxKey": SANDBOX},
     None),
    ("NetworkDriver.Join", {"EndpointID": "../../etc"}, None),
])
def test_refusals_are_one_line(tmp_path: Path, method: str, req: dict[str, Any],
                               why: str | None) -> None:
    async def scenario(store: Store) -> None:
        p = docker.Plugin(store, "h1", FakeTaps())
        got = await refused(p, method, req)
        if why is not None:
            assert got == why
        assert await cluster.list_networks(store) == []       # nothing made

    run(tmp_path, scenario)


def test_a_gateway_is_docker_gwbridge_where_asked_for_after_a_restart_too(
        tmp_path: Path) -> None:
    """-o uvxlan.gateway=gwbridge: Join leaves Docker's gateway service on
    (libnetwork gives the container docker_gwbridge); another host's Docker
    network on the same store network, without it, keeps it off.  The
    choice is in the store: an agent restarted after network create keeps
    it; DeleteNetwork takes it away."""
    async def scenario(store: Store) -> None:
        h1, h2 = docker.Plugin(store, "h1", FakeTaps()), docker.Plugin(store, "h2", FakeTaps())
        pool = await network(h1, gateway="gwbridge")
        await network(h2, net_id="7f" * 32)
        ep = await endpoint(h1, pool, 1)
        assert ep["Address"] == "10.10.0.2/24"
        again = docker.Plugin(store, "h1", FakeTaps())              # h1's agent restarted
        joined = await ok(again, "NetworkDriver.Join", {
            "NetworkID": NET_ID, "EndpointID": eid(1), "SandboxKey": SANDBOX, "Options": {}})
        assert joined["DisableGatewayService"] is False and "Gateway" not in joined
        address = await ok(h2, "IpamDriver.RequestAddress",
                           {"PoolID": pool, "Address": "", "Options": {}})
        await ok(h2, "NetworkDriver.CreateEndpoint", {
            "NetworkID": "7f" * 32, "EndpointID": eid(2), "Options": {},
            "Interface": {"Address": address["Address"], "AddressIPv6": "", "MacAddress": ""}})
        joined = await ok(h2, "NetworkDriver.Join", {
            "NetworkID": "7f" * 32, "EndpointID": eid(2), "SandboxKey": SANDBOX,
            "Options": {}})
        assert joined["DisableGatewayService"] is True
        await again.close()
        await h2.close()
        key = cluster.docker_network_key("h1", NET_ID)
        kept = await store.get(key)
        assert kept is not None
        assert json.loads(kept.value) == {"network": "net1", "gateway": "gwbridge"}
        await ok(again, "NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
        assert await store.get(key) is None
        assert await store.get(cluster.docker_network_key("h2", "7f" * 32)) is not None

    run(tmp_path, scenario)


def test_a_mac_docker_gives_is_kept(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        p = docker.Plugin(store, "h1", taps)
        pool = await network(p)
        ep = await endpoint(p, pool, 2, mac="02:00:00:00:00:aa")
        assert ep == {"Address": "10.10.0.2/24"}    # libnetwork refuses a MAC changed back
        await ok(p, "NetworkDriver.Join", {"EndpointID": eid(2), "SandboxKey": SANDBOX})
        taps.moved("uvx" + eid(2)[:12], SANDBOX, "eth1", "10.10.0.2/24")
        await until(lambda: _exists(store, "net1", 2))
        rec = await record(store, "net1", 2)
        assert rec is not None and (rec.mac, rec.ifname) == ("02:00:00:00:00:aa", "eth1")
        # Another endpoint asking for the same MAC is refused.
        address = await ok(p, "IpamDriver.RequestAddress", {"PoolID": pool, "Options": {}})
        why = await refused(p, "NetworkDriver.CreateEndpoint", {
            "EndpointID": eid(3), "Interface": {"Address": address["Address"],
                                                "MacAddress": "02:00:00:00:00:AA"}})
        assert why.startswith("uvxlan: mac 02:00:00:00:00:aa is already used by endpoint")

    run(tmp_path, scenario)


def test_a_tap_never_placed_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """Docker failed after Join (the container did not start): no record
    was written, and DeleteEndpoint removes the TAP the controller never
    took."""
    monkeypatch.setattr(docker, "REMOVE_WAIT_S", 0.1)

    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        p = docker.Plugin(store, "h1", taps)
        pool = await network(p)
        await endpoint(p, pool, 4)
        await ok(p, "NetworkDriver.Join", {"EndpointID": eid(4), "SandboxKey": SANDBOX})
        await ok(p, "NetworkDriver.Leave", {"EndpointID": eid(4)})
        await ok(p, "NetworkDriver.DeleteEndpoint", {"EndpointID": eid(4)})
        assert taps.removed == ["uvx" + eid(4)[:12]] and not taps.here
        assert await record(store, "net1", 4) is None
        await p.close()

    run(tmp_path, scenario)


def test_delete_after_a_restart_finds_the_record(tmp_path: Path) -> None:
    """A new agent (a new Plugin, nothing in memory) still removes the
    endpoint Docker deletes, found by its name in the store."""
    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        before = docker.Plugin(store, "h1", taps)
        pool = await network(before)
        await endpoint(before, pool, 5)
        await ok(before, "NetworkDriver.Join", {"EndpointID": eid(5), "SandboxKey": SANDBOX})
        taps.moved("uvx" + eid(5)[:12], SANDBOX, "eth0", "10.10.0.2/24")
        await until(lambda: _exists(store, "net1", 5))
        after = docker.Plugin(store, "h1", FakeTaps())
        await ok(after, "NetworkDriver.DeleteEndpoint", {"EndpointID": eid(5)})
        assert await record(store, "net1", 5) is None
        await ok(after, "IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.10.0.2"})
        assert await store.get(cluster.ipam_key("net1", "10.10.0.2")) is None

    run(tmp_path, scenario)


# The HTTP server ---------------------------------------------------------------


def serve(tmp_path: Path, scenario: Callable[[str, docker.PluginServer], Awaitable[None]]
          ) -> None:
    path = str(tmp_path / "plugins" / "uvxlan.sock")

    async def main() -> None:
        store = open_store(f"sqlite://{tmp_path}/state.db")
        server = docker.PluginServer(docker.bind_plugin(path),
                                     docker.Plugin(store, "h1", FakeTaps()))
        await server.start()
        try:
            await scenario(path, server)
        finally:
            await server.close()
            await store.close()
        assert not os.path.exists(path)              # the socket goes with the server

    asyncio.run(main())


async def exchange(path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Type: application/vnd.docker.plugins.v1.2+json" in head
    return int(head.split()[1]), json.loads(body)


def post(method: str, body: bytes) -> bytes:
    return (f"POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {len(body)}\r\n"
            f"Accept: application/vnd.docker.plugins.v1.2+json\r\n\r\n").encode() + body


def test_server_answers_as_dockers_plugin_client_expects(tmp_path: Path) -> None:
    async def scenario(path: str, _: docker.PluginServer) -> None:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert await exchange(path, post("Plugin.Activate", b"null\n")) == (
            200, {"Implements": ["NetworkDriver", "IpamDriver"]})
        status, body = await exchange(path, post("NetworkDriver.CreateNetwork", json.dumps(
            {"NetworkID": NET_ID, "Options": {docker.GENERIC: {"x": "1"}}}).encode()))
        assert status == 200 and body["Err"].startswith("uvxlan: unknown option -o x")
        assert (await exchange(path, post("NetworkDriver.Nope", b"{}")))[0] == 404
        assert (await exchange(path, post("Plugin.Activate", b"{")))[0] == 400
        assert (await exchange(path, b"GET /Plugin.Activate HTTP/1.1\r\n\r\n"))[0] == 405
        big = docker.BODY_MAX + 1
        assert (await exchange(path, post("Plugin.Activate", b"").replace(
            b"Content-Length: 0", f"Content-Length: {big}".encode())))[0] == 413
        chunked = (b"POST /Plugin.Activate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"0\r\n\r\n")
        assert (await exchange(path, chunked))[0] == 411

    serve(tmp_path, scenario)


def test_server_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "IDLE_S", 0.2)
    monkeypatch.setattr(docker.PluginServer, "connections_max", 2)

    async def scenario(path: str, server: docker.PluginServer) -> None:
        # Two idle clients take the slots; a third is refused at once.
        idle = [await asyncio.open_unix_connection(path) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_unix_connection(path)
        assert (await reader.read()).startswith(b"HTTP/1.1 503 ")     # before any request
        writer.close()
        for reader, writer in idle:
            raw = await reader.read()
            assert raw.startswith(b"HTTP/1.1 408 ")
            writer.close()
        assert server.refused["busy"] == 1 and server.refused["idle"] == 2
        # A body shorter than its Content-Length: 408 too, not a hang.
        status, _ = await exchange(path, post("Plugin.Activate", b"{}")[:-1])
        assert status == 408

    serve(tmp_path, scenario)


def test_bind_replaces_a_dead_socket_and_refuses_a_live_one(tmp_path: Path) -> None:
    path = str(tmp_path / "uvxlan.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()                                  # the file stays: a dead agent's
    live = docker.bind_plugin(path)
    try:
        with pytest.raises(ConfigError, match="another process serves it"):
            docker.bind_plugin(path)
    finally:
        live.close()
    os.unlink(path)
    Path(path).write_text("")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        docker.bind_plugin(path)
    with pytest.raises(ConfigError, match="must be an absolute path"):
        docker.bind_plugin("uvxlan.sock")


# The agent's option ----------------------------------------------------------------


def test_the_option_in_the_config_file_and_on_the_command_line(tmp_path: Path) -> None:
    from uvxlan import cli, config

    h = config.parse({"host": {"underlay": "192.0.2.1", "docker_plugin": "/run/x.sock"}}).host
    assert h.docker_plugin == "/run/x.sock"
    assert config.parse({"host": {"underlay": "192.0.2.1"}}).host.docker_plugin == ""
    for bad in ("x.sock", "/" + "a" * 200):
        with pytest.raises(ConfigError, match="docker_plugin"):
            config.parse({"host": {"underlay": "192.0.2.1", "docker_plugin": bad}})
    args = cli.build_parser().parse_args(["agent", "--docker-plugin"])
    assert args.docker_plugin == "/run/docker/plugins/uvxlan.sock" == config.DOCKER_PLUGIN
    args = cli.build_parser().parse_args(["agent", "--docker-plugin", "/run/p/u.sock"])
    assert args.docker_plugin == "/run/p/u.sock"


def test_the_plugin_needs_a_store(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """With a config file alone there are no store networks to map Docker's
    to: one line, before anything is made (no socket)."""
    from uvxlan import cli

    toml = tmp_path / "h1.toml"
    toml.write_text(f'[host]\nunderlay = "192.0.2.1"\ncontrol_dir = "{tmp_path}/ctl"\n')
    sock = tmp_path / "plugins" / "uvxlan.sock"
    assert cli.main(["agent", "--config", str(toml), "--docker-plugin", str(sock)]) == 1
    err = capfd.readouterr().err
    assert err == ("uvxlan: error: docker_plugin needs a cluster store (--store): Docker's "
                   "networks are the store's\n")
    assert not sock.exists()


# An agent restarted between Docker's calls --------------------------------------


def test_a_restart_between_create_endpoint_and_join(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        before = docker.Plugin(store, "h1", taps)
        pool = await network(before)
        await endpoint(before, pool, 6, mac="02:00:00:00:00:06")
        after = docker.Plugin(store, "h1", taps)          # nothing in memory
        joined = await ok(after, "NetworkDriver.Join",
                          {"EndpointID": eid(6), "SandboxKey": SANDBOX})
        src = joined["InterfaceName"]["SrcName"]
        assert taps.here[src] == ("02:00:00:00:00:06", 1450)   # the MAC Docker gave
        taps.moved(src, SANDBOX, "eth0", "10.10.0.2/24")
        await until(lambda: _exists(store, "net1", 6))
        # Another host's agent knows nothing of it.
        other = docker.Plugin(store, "h2", FakeTaps())
        await refused(other, "NetworkDriver.Join", {"EndpointID": eid(7), "SandboxKey": SANDBOX})

    run(tmp_path, scenario)


def test_a_restart_between_join_and_the_record(tmp_path: Path) -> None:
    """The agent stops after Join answered, before Docker had set the TAP
    up: the next one finds it in the sandbox and writes the record."""
    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        before = docker.Plugin(store, "h1", taps)
        pool = await network(before)
        await endpoint(before, pool, 8)
        await ok(before, "NetworkDriver.Join", {"EndpointID": eid(8), "SandboxKey": SANDBOX})
        await before.close()                              # its placing task ends with it
        taps.moved("uvx" + eid(8)[:12], SANDBOX, "eth0", "10.10.0.2/24")
        await asyncio.sleep(0.05)
        assert await record(store, "net1", 8) is None
        after = docker.Plugin(store, "h1", taps)
        await after.resume()
        await until(lambda: _exists(store, "net1", 8))
        rec = await record(store, "net1", 8)
        assert rec is not None and (rec.netns, rec.ifname) == (SANDBOX, "eth0")
        # Placed: a further resume takes nothing up again.
        again = docker.Plugin(store, "h1", taps)
        await again.resume()
        assert again.endpoints == {}

    run(tmp_path, scenario)


def test_a_never_placed_endpoint_deleted_after_a_restart(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(docker, "REMOVE_WAIT_S", 0.1)

    async def scenario(store: Store) -> None:
        taps = FakeTaps()
        before = docker.Plugin(store, "h1", taps)
        pool = await network(before)
        await endpoint(before, pool, 9)
        after = docker.Plugin(store, "h1", taps)
        await ok(after, "NetworkDriver.DeleteEndpoint", {"EndpointID": eid(9)})
        kv = await store.get(cluster.ipam_key("net1", "10.10.0.2"))
        assert kv is not None and json.loads(kv.value) == {"endpoint": docker.RESERVED,
                                                           "host": "h1"}
        await ok(after, "IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.10.0.2"})
        assert await store.get(cluster.ipam_key("net1", "10.10.0.2")) is None

    run(tmp_path, scenario)
