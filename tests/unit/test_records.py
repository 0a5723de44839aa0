"""Hostile records: what a writer of the store could put there to hurt a
host, written straight to the store (no CLI checks), and what the agent's
controller makes of it.  Each is refused, logged once, the rest of the
cluster still served, and the record accepted again once fixed.  The
store is SQLite in a tmp dir, the node the in-memory fake of
test_controller.py; ``uvxlan check`` runs the same rules (last tests)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.test_controller import MTU, PORT, VTEP, FakeNode, Rig, run
from uvxlan import cli, cluster, records
from uvxlan.cluster import EndpointRecord, HostRecord, NetworkRecord

NET1 = cluster.network_key("net1")


def host(name: str, underlay: str, mtu: int = 1500) -> bytes:
    return cluster.encode(HostRecord(name=name, underlay=underlay, port=PORT, mtu=mtu))


def endpoint(name: str, host: str, ip: str, mac: str, network: str = "net1") -> bytes:
    return cluster.encode(EndpointRecord(name=name, network=network, host=host, netns=name,
                                         ifname="eth0", mac=mac, ip=ip))


def network(name: str, vni: int, subnet: str, mtu: int = MTU,
            gateway: str | None = None) -> bytes:
    gw = gateway or subnet.replace(".0/24", ".1")
    return cluster.encode(NetworkRecord(name=name, vni=vni, subnet=subnet, gateway=gw,
                                        mtu=mtu))


M1, M2 = "02:42:0a:00:00:0b", "02:42:0a:00:00:0c"   # c1 (h1: here) and c2 (h2)


async def base(rig: Rig) -> None:
    """c1 on this host (h1), c2 on h2, in net1 (VNI 256): served."""
    await rig.attach("c1", "h1", "10.0.0.11")
    await rig.attach("c2", "h2", "10.0.0.12")
    await rig.sync()
    assert_good_served(rig)


def assert_good_served(rig: Rig) -> None:
    assert rig.node.fdb[256, M1] == "local"
    assert rig.node.fdb[256, M2] == f"{VTEP['h2']}:{PORT}"
    assert rig.node.arp[256, "10.0.0.11"] == M1 and rig.node.arp[256, "10.0.0.12"] == M2
    assert (256, VTEP["h2"], PORT) in rig.node.flood


def warnings_about(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and f"store key {key}: refused" in r.getMessage()]


async def refused(rig: Rig, caplog: pytest.LogCaptureFixture, key: str, value: bytes,
                  why: str) -> None:
    """Write value at key: refused with why, logged once over three applies,
    the good endpoints still served."""
    caplog.clear()
    await rig.store.put(key, value)
    await rig.sync()
    await rig.sync()
    await rig.ctl.apply()
    assert why in rig.ctl.refused.get(key, ""), rig.ctl.refused
    assert len(warnings_about(caplog, key)) == 1, caplog.text
    assert_good_served(rig)


async def accepted(rig: Rig, caplog: pytest.LogCaptureFixture, key: str, value: bytes
                   ) -> None:
    caplog.clear()
    caplog.set_level(logging.INFO, logger="uvxlan.controller")
    await rig.store.put(key, value)
    await rig.sync()
    assert key not in rig.ctl.refused, rig.ctl.refused
    assert f"store key {key}: accepted" in caplog.text
    assert_good_served(rig)


# Hosts ---------------------------------------------------------------------------


def test_a_host_record_at_another_hosts_key_is_refused(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.host_key("h4")
        await rig.store.put(cluster.endpoint_key("net1", "c4"),
                            endpoint("c4", "h4", "10.0.0.14/24", "02:00:00:00:00:14"))
        await refused(rig, caplog, key, host("h2", "192.0.2.4"), "not its own")
        assert (256, "02:00:00:00:00:14") not in rig.node.fdb       # nothing behind it
        assert "host h4 is refused" in rig.ctl.refused[cluster.endpoint_key("net1", "c4")]
        await accepted(rig, caplog, key, host("h4", "192.0.2.4"))
        assert rig.node.fdb[256, "02:00:00:00:00:14"] == f"192.0.2.4:{PORT}"

    run(tmp_path, scenario)


@pytest.mark.parametrize("underlay", ["0.0.0.0", "0.1.2.3", "127.0.0.1", "127.9.9.9",
                                      "224.0.0.1", "239.1.1.1", "240.0.0.1",
                                      "255.255.255.255", "not-an-ip"])
def test_a_host_underlay_that_is_no_unicast_address_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, underlay: str) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        # h2 moves to a bad address: its endpoints lose their paths, the
        # flood list never points at it.
        key = cluster.host_key("h2")
        caplog.clear()
        await rig.store.put(key, host("h2", underlay))
        await rig.sync()
        await rig.sync()
        assert "not a VTEP address" in rig.ctl.refused[key] or "IPv4" in rig.ctl.refused[key]
        assert len(warnings_about(caplog, key)) == 1
        assert all(ip != underlay for _, ip, _ in rig.node.flood)
        assert (256, M2) not in rig.node.fdb and rig.node.fdb[256, M1] == "local"
        await accepted(rig, caplog, key, host("h2", VTEP["h2"]))

    run(tmp_path, scenario)


def test_a_host_claiming_this_hosts_underlay_is_refused(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.host_key("h4")
        await rig.store.put(cluster.endpoint_key("net1", "c4"),
                            endpoint("c4", "h4", "10.0.0.14/24", "02:00:00:00:00:14"))
        await refused(rig, caplog, key, host("h4", VTEP["h1"]), f"{VTEP['h1']} is host h1's")
        assert all(ip != VTEP["h1"] for _, ip, _ in rig.node.flood)   # never to ourselves
        await accepted(rig, caplog, key, host("h4", "192.0.2.4"))

    run(tmp_path, scenario)


def test_a_host_claiming_another_hosts_underlay_loses_to_the_first(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.host_key("h4")
        await refused(rig, caplog, key, host("h4", VTEP["h2"]), f"{VTEP['h2']} is host h2's")
        await accepted(rig, caplog, key, host("h4", "192.0.2.4"))

    run(tmp_path, scenario)


def test_a_host_whose_mtu_cannot_carry_the_network_gets_no_paths_in_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        await rig.store.put(cluster.host_key("h4"), host("h4", "192.0.2.4"))
        key = cluster.endpoint_key("net1", "c4")
        await rig.store.put(key, endpoint("c4", "h4", "10.0.0.14/24", "02:00:00:00:00:14"))
        await rig.sync()
        assert rig.node.fdb[256, "02:00:00:00:00:14"] == f"192.0.2.4:{PORT}"
        caplog.clear()
        await rig.store.put(cluster.host_key("h4"), host("h4", "192.0.2.4", mtu=1400))
        await rig.sync()
        await rig.sync()
        assert "underlay MTU 1400 cannot carry network net1's MTU 1450" in rig.ctl.refused[key]
        assert len(warnings_about(caplog, key)) == 1
        assert (256, "02:00:00:00:00:14") not in rig.node.fdb
        assert (256, "192.0.2.4", PORT) not in rig.node.flood
        assert_good_served(rig)
        await rig.store.put(cluster.host_key("h4"), host("h4", "192.0.2.4", mtu=1500))
        await rig.sync()
        assert key not in rig.ctl.refused
        assert rig.node.fdb[256, "02:00:00:00:00:14"] == f"192.0.2.4:{PORT}"

    run(tmp_path, scenario)


# Networks ------------------------------------------------------------------------


def test_a_network_this_underlay_cannot_carry_is_not_served_here(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key, ep_key = cluster.network_key("net2"), cluster.endpoint_key("net2", "c5")
        await rig.store.put(ep_key, endpoint("c5", "h1", "10.0.1.5/24", "02:00:00:00:01:05",
                                             network="net2"))
        await refused(rig, caplog, key, network("net2", 300, "10.0.1.0/24", mtu=1500),
                      "MTU 1500 needs an underlay MTU of 1550; host h1's is 1500")
        assert 300 not in rig.node.vnis
        # Our endpoint in it says why, at once (uvxlan attach stops waiting).
        st = rig.ctl.statuses[ep_key]
        assert st.state == "error" and "network net2 is refused: MTU 1500" in st.error
        await accepted(rig, caplog, key, network("net2", 300, "10.0.1.0/24", mtu=1450))
        assert rig.node.vnis[300] == "net2"
        assert ("attach", "c5", 300, 1450) in rig.node.calls
        assert rig.ctl.statuses[ep_key].state == "ready"

    run(tmp_path, scenario)


def test_a_network_on_a_vni_another_network_holds_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A second network on VNI 256 would put its endpoints (unchecked
    against net1's) into net1's segment."""
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.network_key("evil")
        ep_key = cluster.endpoint_key("evil", "x")
        await rig.store.put(ep_key, endpoint("x", "h3", "10.9.0.12/24", M2, network="evil"))
        await refused(rig, caplog, key, network("evil", 256, "10.9.0.0/24"),
                      "VNI 256 is network net1's")
        assert "network evil is refused" in rig.ctl.refused[ep_key]
        assert rig.node.vnis == {256: "net1"}
        await rig.store.put(ep_key, endpoint("x", "h3", "10.9.0.12/24", "02:00:00:00:09:12",
                                             network="evil"))
        await accepted(rig, caplog, key, network("evil", 301, "10.9.0.0/24"))
        assert rig.node.vnis == {256: "net1", 301: "evil"}
        assert rig.node.fdb[301, "02:00:00:00:09:12"] == f"{VTEP['h3']}:{PORT}"

    run(tmp_path, scenario)


@pytest.mark.parametrize("gateway", ["10.1.0.0", "10.1.0.255", "10.2.0.1", "x"])
def test_a_network_whose_gateway_is_no_host_address_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, gateway: str) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.network_key("net2")
        await refused(rig, caplog, key, network("net2", 300, "10.1.0.0/24", gateway=gateway),
                      "gateway")
        await accepted(rig, caplog, key, network("net2", 300, "10.1.0.0/24"))

    run(tmp_path, scenario)


# Endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "why"), [
    ("10.0.1.5/24", "not in network net1's subnet"),
    ("10.0.0.1/24", "net1's gateway"),
    ("10.0.0.0/24", "net1's network address"),
    ("10.0.0.255/24", "net1's broadcast address"),
    ("10.0.0.20/16", "the prefix must be the network's"),
    ("10.0.0.20", "needs a prefix length"),
])
def test_an_endpoint_address_its_network_cannot_have_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, ip: str, why: str) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.endpoint_key("net1", "c4")
        await refused(rig, caplog, key, endpoint("c4", "h3", ip, "02:00:00:00:00:14"), why)
        assert (256, "02:00:00:00:00:14") not in rig.node.fdb
        await accepted(rig, caplog, key, endpoint("c4", "h3", "10.0.0.20/24",
                                                  "02:00:00:00:00:14"))
        assert rig.node.arp[256, "10.0.0.20"] == "02:00:00:00:00:14"

    run(tmp_path, scenario)


@pytest.mark.parametrize("claim", ["mac", "ip"])
def test_a_remote_endpoint_claiming_a_local_ones_address_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, claim: str) -> None:
    """The local one wins, even against a claim written before it."""
    async def scenario(rig: Rig) -> None:
        key = cluster.endpoint_key("net1", "x")
        mac, ip = (M1, "10.0.0.30/24") if claim == "mac" else ("02:00:00:00:00:30",
                                                               "10.0.0.11/24")
        await rig.store.put(key, endpoint("x", "h3", ip, mac))       # created first
        await rig.store.put(cluster.endpoint_key("net1", "c1"),
                            endpoint("c1", "h1", "10.0.0.11/24", M1))
        await rig.attach("c2", "h2", "10.0.0.12")
        await rig.sync()
        assert_good_served(rig)
        assert key in rig.ctl.refused and "endpoint net1/c1's" in rig.ctl.refused[key]
        assert all(where != f"{VTEP['h3']}:{PORT}" for where in rig.node.fdb.values())
        await rig.sync()
        assert len(warnings_about(caplog, key)) == 1
        await accepted(rig, caplog, key, endpoint("x", "h3", "10.0.0.30/24",
                                                  "02:00:00:00:00:30"))
        assert rig.node.fdb[256, "02:00:00:00:00:30"] == f"{VTEP['h3']}:{PORT}"

    run(tmp_path, scenario)


@pytest.mark.parametrize("spelling", [str.upper, lambda m: m.replace(":", "-")])
def test_a_local_mac_spelled_otherwise_is_no_way_around_the_claim(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        spelling: Callable[[str], str]) -> None:
    """02:42:0A:... is c1's MAC too: a record must hold the one form uvxlan
    writes, or a text comparison of MACs would let it take c1's traffic."""
    async def scenario(rig: Rig) -> None:
        key = cluster.endpoint_key("net1", "x")
        await rig.store.put(cluster.endpoint_key("net1", "c1"),
                            endpoint("c1", "h1", "10.0.0.11/24", M1))
        await rig.store.put(key, endpoint("x", "h3", "10.0.0.30/24", spelling(M1)))
        await rig.attach("c2", "h2", "10.0.0.12")
        await rig.sync()
        assert_good_served(rig)
        assert key in rig.ctl.refused and "is not written as" in rig.ctl.refused[key]
        assert all(where != f"{VTEP['h3']}:{PORT}" for where in rig.node.fdb.values())

    run(tmp_path, scenario)


@pytest.mark.parametrize("claim", ["mac", "ip"])
def test_two_remote_endpoints_claiming_one_address_the_first_created_wins(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, claim: str) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.endpoint_key("net1", "a-later")     # sorts first: the key is no tiebreak
        mac, ip = (M2, "10.0.0.30/24") if claim == "mac" else ("02:00:00:00:00:30",
                                                               "10.0.0.12/24")
        await refused(rig, caplog, key, endpoint("a-later", "h3", ip, mac), "net1/c2's")
        assert rig.node.arp[256, "10.0.0.12"] == M2
        # The first one goes: the other takes its place.
        await cluster.detach(rig.store, "net1", "c2")
        await rig.sync()
        assert key not in rig.ctl.refused
        ip_only = ip.split("/")[0]
        assert rig.node.arp[256, ip_only] == mac
        assert rig.node.fdb[256, mac] == f"{VTEP['h3']}:{PORT}"

    run(tmp_path, scenario)


# Anything else a writer could use ------------------------------------------------


@pytest.mark.parametrize(("value", "why"), [
    (b"[" * 3000, "nested too deep"),
    (b'{"pad": "' + b"x" * 10000 + b'"}', "larger than any record"),
    (b"\xff\xfe", "not a EndpointRecord"),
    (b"[]", "not an object"),
])
def test_a_value_no_record_can_be_is_refused(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture,
                                             value: bytes, why: str) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.endpoint_key("net1", "c4")
        await refused(rig, caplog, key, value, why)
        await accepted(rig, caplog, key, endpoint("c4", "h3", "10.0.0.20/24",
                                                  "02:00:00:00:00:14"))

    run(tmp_path, scenario)


def test_a_name_that_would_forge_log_lines_is_refused(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        key = cluster.endpoint_key("net1", "c4\nuvxlan-agent[h1]: all is well")
        caplog.clear()
        await rig.store.put(key, endpoint("c4\nuvxlan-agent[h1]: all is well", "h3",
                                          "10.0.0.20/24", "02:00:00:00:00:14"))
        await rig.sync()
        assert "cannot be a store key's component" in rig.ctl.refused[key]
        assert not any("\n" in r.getMessage() for r in caplog.records)
        assert_good_served(rig)

    run(tmp_path, scenario)


def test_the_config_files_vni_refusal_is_logged_once_and_shown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(rig: Rig) -> None:
        await rig.attach("c1", "h1", "10.0.0.11")
        for _ in range(3):
            await rig.sync()
        assert "config file" in rig.ctl.refused[NET1]
        assert len(warnings_about(caplog, NET1)) == 1
        assert rig.node.vnis == {}

    run(tmp_path, scenario, FakeNode(static_vnis={256}))


# The commands: the same rules ------------------------------------------------------


def test_uvxlan_check_lists_what_the_agents_refuse(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{tmp_path}/state.db"

    async def scenario(rig: Rig) -> None:
        await base(rig)
        assert await records.check_store(rig.store) == {}
        await rig.store.put(cluster.host_key("h4"), host("h4", VTEP["h1"]))
        await rig.store.put(cluster.endpoint_key("net1", "x"),
                            endpoint("x", "h3", "10.0.0.11/24", "02:00:00:00:00:30"))
        await rig.store.put(cluster.endpoint_key("net1", "y"),
                            endpoint("y", "h3", "10.0.0.1/24", "02:00:00:00:00:31"))
        await rig.sync()
        found = await records.check_store(rig.store)
        assert set(found) == set(rig.ctl.refused) | {cluster.endpoint_key("net1", "c1")}
        # c1 is refused only where x is local (h3); x everywhere else.
        assert found[cluster.endpoint_key("net1", "c1")].endswith("(on h3)")
        assert found[cluster.endpoint_key("net1", "x")].endswith("(on h1, h2)")

    run(tmp_path, scenario)
    assert cli.main(["check", "--store", url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "/uvxlan/endpoints/net1/c1", "/uvxlan/endpoints/net1/x", "/uvxlan/endpoints/net1/y",
        "/uvxlan/hosts/h4"]
    assert "ip 10.0.0.1 is network net1's gateway" in out[2]
    assert cli.main(["check", "--store", url, "--json"]) == 1
    assert set(json.loads(capsys.readouterr().out)) == {line.split(":")[0] for line in out}

    assert cli.main(["endpoint", "ls", "--store", url, "--json"]) == 0
    rows = {r["name"]: r["refused"] for r in json.loads(capsys.readouterr().out)}
    assert rows["c2"] is None and "gateway" in rows["y"]
    assert cli.main(["host", "ls", "--store", url]) == 0
    table = capsys.readouterr().out
    assert "refused: underlay 192.0.2.1 is host h1's" in table


def test_uvxlan_check_on_a_clean_store_exits_0(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, base)
    assert cli.main(["check", "--store", f"sqlite://{tmp_path}/state.db"]) == 0
    assert capsys.readouterr().out == "no refused records\n"


def test_attach_refuses_a_host_whose_underlay_cannot_carry_the_network(
        tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        await rig.store.put(cluster.host_key("h4"), host("h4", "192.0.2.4", mtu=1400))
        with pytest.raises(cluster.ClusterError, match="underlay MTU 1400 cannot carry"):
            await rig.attach("c4", "h4", "10.0.0.14")

    run(tmp_path, scenario)


def test_the_cli_never_writes_what_the_agents_refuse(tmp_path: Path) -> None:
    """Whatever the commands write passes the agents' checks."""
    async def scenario(rig: Rig) -> None:
        await base(rig)
        await cluster.create_network(rig.store, "net2")
        await rig.attach("c3", "h3", "10.0.0.13")
        await cluster.attach(rig.store, "net2", host="h2", netns="c1")
        assert await records.check_store(rig.store) == {}
        kvs, _ = await rig.store.list(cluster.ROOT)
        assert {kv.key for kv in kvs if records.shapes_datapath(kv.key)} >= {
            cluster.network_key("net2"), cluster.endpoint_key("net2", "c1")}

    run(tmp_path, scenario)


def test_our_own_host_key_overwritten_is_written_again(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """Overwritten with another address and no lease (a key that would
    outlive the agent): the next keepalive puts ours back, under our lease."""
    async def scenario(rig: Rig) -> None:
        rig.ctl.ttl = 2.0
        task = asyncio.create_task(rig.ctl.run())
        try:
            async with asyncio.timeout(5):
                await rig.ctl.synced.wait()
            key = cluster.host_key("h1")
            await rig.store.put(key, host("h1", "192.0.2.66"))
            async with asyncio.timeout(5):
                while True:
                    kv = await rig.store.get(key)
                    if kv is not None and kv.value == cluster.encode(rig.ctl.record):
                        break
                    await asyncio.sleep(0.05)
            assert kv.lease == rig.ctl.lease != 0
            assert "not this agent's record; writing it again" in caplog.text
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await rig.ctl.close()

    run(tmp_path, scenario)


def test_a_hostile_status_never_breaks_endpoint_ls(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        for value in (b"[" * 3000, b'{"state": "ready", "mac": 5, "ip": []}'):
            await rig.store.put(cluster.status_key("h2", "net1", "c2"), value)
            rows = {ep.name: st for ep, st in await cluster.list_endpoints(rig.store)}
            assert rows["c2"] is None

    run(tmp_path, scenario)


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255"])
def test_an_agent_never_advertises_what_the_others_would_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str) -> None:
    argv = ["agent", "--name", "hx", "--advertise", address,
            "--store", f"sqlite://{tmp_path}/state.db"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"underlay (--advertise) '{address}' is" in err[0], err
    assert not (tmp_path / "state.db").exists()                # refused before anything


def test_our_own_host_key_overwritten_never_costs_our_endpoints(
        tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        await base(rig)
        for value in (b"junk", host("h1", "224.0.0.1"), host("h1", VTEP["h2"])):
            await rig.store.put(cluster.host_key("h1"), value)
            await rig.sync()
            assert cluster.endpoint_key("net1", "c1") not in rig.ctl.refused
            assert_good_served(rig)

    run(tmp_path, scenario)


@pytest.mark.parametrize(("field", "value", "why"), [
    ("version", "1.0\x1b[2J", "not a printable string"),
    ("version", ["1"], "not a printable string"),
    ("started", float("nan"), "not a time"),
    ("started", True, "not a time"),
])
def test_what_host_ls_prints_is_checked_too(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           capsys: pytest.CaptureFixture[str], field: str,
                                           value: object, why: str) -> None:
    """A value the commands print must not move the terminal's cursor nor
    stop the command (json.dumps writes NaN; the store keeps it)."""
    async def scenario(rig: Rig) -> None:
        await base(rig)
        record = json.loads(host("h4", "192.0.2.4"))
        record[field] = value
        key = cluster.host_key("h4")
        await refused(rig, caplog, key, json.dumps(record).encode(), why)
        await accepted(rig, caplog, key, host("h4", "192.0.2.4"))
        await rig.store.put(key, json.dumps(record).encode())

    run(tmp_path, scenario)
    capsys.readouterr()
    assert cli.main(["host", "ls", "--store", f"sqlite://{tmp_path}/state.db"]) == 0
    out = capsys.readouterr().out
    assert "h4" not in out and "\x1b" not in out


# Incremental screening: the controller's Screener equals screen() -----------------


def test_the_incremental_screener_equals_a_full_screen_after_every_change() -> None:
    """Random puts and deletes of hosts (some sharing an underlay, one with
    a small MTU, ours), networks (some sharing a VNI, one too big for us),
    endpoints (some sharing a MAC or IP, some of hosts or networks that are
    not there) and bad values: after each change, the Screener's outcome
    is exactly screen()'s over the whole model."""
    import random

    rnd = random.Random(11)
    here = records.Here("h1", VTEP["h1"], 1500, frozenset({999}))
    hosts = [host("h1", VTEP["h1"]), host("h2", VTEP["h2"]), host("h3", VTEP["h2"]),
             host("h4", "192.0.2.4", mtu=1400), host("h5", VTEP["h1"])]
    nets = [network("net1", 256, "10.0.0.0/24"), network("net1", 257, "10.0.0.0/24"),
            network("net2", 256, "10.0.1.0/24"), network("net2", 999, "10.0.1.0/24"),
            network("net3", 258, "10.0.2.0/24", mtu=9000)]
    macs = [M1, M2, "02:42:0a:00:00:0d"]
    values: dict[str, list[bytes]] = {}
    for h in hosts:
        values.setdefault(cluster.host_key(json.loads(h)["name"]), []).append(h)
    for n in nets:
        values.setdefault(cluster.network_key(json.loads(n)["name"]), []).append(n)
    for net in ("net1", "net2", "net4"):
        third = {"net1": 0, "net2": 1, "net4": 3}[net]
        for i in range(5):
            key = cluster.endpoint_key(net, f"c{i}")
            values[key] = [endpoint(f"c{i}", h, f"10.0.{third}.{a}/24", m, network=net)
                           for h in ("h1", "h2", "h4", "h9") for a in (11, 12, 1)
                           for m in macs]
    for key in list(values)[::4]:
        values[key].append(b"{not json")
    model: dict[str, bytes] = {}
    created: dict[str, int] = {}
    inc = records.Screener(here)
    seen: set[str] = set()
    for rev in range(1, 1500):
        key = rnd.choice(list(values))
        if key in model and rnd.random() < 0.3:
            del model[key], created[key]
            inc.update({key: None})
        else:
            model[key] = rnd.choice(values[key])
            created.setdefault(key, rev)
            inc.update({key: (model[key], created[key])})
        assert inc.out == records.screen(model, created, here), (rev, key)
        seen |= set(inc.out.refused.values())
    # Every kind of refusal came and went on the way.
    for kind in (r"^mac .* is endpoint", r"^ip .* is endpoint", r"^underlay .* is host",
                 r"created first", r"config file", r"^MTU .* not served", r"^network .* refused",
                 r"^host .* refused", r"gateway"):
        assert any(re.search(kind, why) for why in seen), (kind, seen)
