"""VXLAN-GBP in the cluster store: a network's gbp flag and policy in its
record, an endpoint's group in its record, uvxlan policy's transaction, and
the controller taking them to the node (test_controller's fake).  No root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_controller import MTU, FakeNode, Rig, run
from uvxlan import cluster
from uvxlan.cluster import EndpointRecord, NetworkRecord
from uvxlan.errors import ClusterError, ConfigError, RecordError
from uvxlan.gbp import Policy, Rule
from uvxlan.store import KV


def test_gbp_and_policy_follow_the_network_record_and_groups_the_endpoint(
        tmp_path: Path) -> None:
    node = FakeNode()

    async def scenario(rig: Rig) -> None:
        await cluster.create_network(rig.store, "gbp", subnet="10.1.0.0/24", vni=400,
                                     mtu=MTU, gbp=True)
        calls = await rig.sync()
        # net1 has no GBP: nothing is asked of the node for it.
        assert ("set_gbp", 400, True, Policy()) in calls
        assert [c for c in calls if c[0] == "set_gbp"] == [("set_gbp", 400, True, Policy())]
        await cluster.set_policy(rig.store, "gbp",
                                 lambda p: p.with_rule(Rule(10, 20, "deny")))
        await cluster.set_policy(rig.store, "gbp", lambda p: Policy("deny", p.rules))
        calls = await rig.sync()
        want = Policy("deny", (Rule(10, 20, "deny"),))
        assert [c for c in calls if c[0] == "set_gbp"] == [("set_gbp", 400, True, want)]
        assert node.gbp == {400: (True, want)}
        assert await rig.sync() == []        # nothing changed, nothing asked
        ep = await cluster.attach(rig.store, "gbp", host="h1", netns="c1", group=20)
        assert ep.group == 20
        await rig.sync()
        (epc,) = [e for e, v in node.ports if v == 400]
        assert epc.group == 20

    run(tmp_path, scenario, node)


def test_policy_changes_are_refused_where_they_cannot_hold(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        with pytest.raises(ClusterError, match="does not use GBP"):
            await cluster.set_policy(rig.store, "net1", lambda p: p)
        with pytest.raises(ConfigError, match="does not use GBP"):
            await cluster.attach(rig.store, "net1", host="h1", netns="c1", group=3)
        with pytest.raises(ClusterError, match="no network named 'nope'"):
            await cluster.set_policy(rig.store, "nope", lambda p: p)
        await cluster.create_network(rig.store, "gbp", subnet="10.1.0.0/24", vni=400,
                                     mtu=MTU, gbp=True)
        many = tuple(Rule(s, 1, "deny") for s in range(200))
        with pytest.raises(ConfigError, match="do not fit its store record"):
            await cluster.set_policy(rig.store, "gbp", lambda p: Policy(p.default, many))
        assert (await cluster.get_network(rig.store, "gbp")).gbp_policy == Policy()
        with pytest.raises(ConfigError, match="not a group"):
            await cluster.attach(rig.store, "gbp", host="h1", netns="c1", group=65536)

    run(tmp_path, scenario)


def _net(**kw: object) -> NetworkRecord:
    base = dict(name="n", vni=300, subnet="10.0.0.0/24", gateway="10.0.0.1", mtu=1450)
    return NetworkRecord(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("kw, says", [
    ({"policy": [{"from": 1, "to": 2, "action": "deny"}]}, "policy applies only with gbp"),
    ({"policy_default": "deny"}, "policy applies only with gbp"),
    ({"gbp": "on"}, "expected true or false"),
    ({"gbp": True, "policy": {"from": 1}}, "a list of rules"),
    ({"gbp": True, "policy": [{"from": 1, "to": 2, "action": "drop"}]}, "not allow or deny"),
    ({"gbp": True, "policy": [{"from": 1, "to": 2, "action": "deny"}] * 2}, "given twice"),
])
def test_a_bad_gbp_network_record_is_refused_naming_the_key(kw: dict[str, object],
                                                            says: str) -> None:
    rec = _net(**kw)
    kv = KV(cluster.network_key("n"), json.dumps(vars(rec) | kw).encode(), 1, 1, 0)
    with pytest.raises(RecordError, match=says) as caught:
        cluster.checked(NetworkRecord, kv)
    assert cluster.network_key("n") in str(caught.value)


def test_records_from_before_gbp_decode_without_it() -> None:
    old = {"name": "n", "vni": 300, "subnet": "10.0.0.0/24", "gateway": "10.0.0.1",
           "mtu": 1450}
    net = cluster.checked(NetworkRecord, KV(cluster.network_key("n"),
                                            json.dumps(old).encode(), 1, 1, 0))
    assert (net.gbp, net.gbp_policy) == (False, Policy())
    ep = {"name": "c1", "network": "n", "host": "h1", "netns": "c1", "ifname": "eth0",
          "mac": "02:42:0a:00:00:02", "ip": "10.0.0.2/24"}
    rec = cluster.checked(EndpointRecord, KV(cluster.endpoint_key("n", "c1"),
                                             json.dumps(ep).encode(), 1, 1, 0))
    assert rec.group == 0
    bad = KV(cluster.endpoint_key("n", "c1"), json.dumps({**ep, "group": -3}).encode(), 1, 1, 0)
    with pytest.raises(RecordError, match="not a group"):
        cluster.checked(EndpointRecord, bad)
