"""VXLAN-GBP's Python side: the config file's keys (network gbp, policy,
policy_default; endpoint group), the policy model, and the control socket's
"policy" request on a fake node.  The fast path itself is tested in
tests/system/test_gbp_switch.py and against Linux in test_gbp_interop.py.
No root."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from uvxlan import gbp
from uvxlan.config import parse
from uvxlan.daemon import _changes_policy
from uvxlan.errors import ConfigError
from uvxlan.gbp import GbpState, Policy, Rule

UNDERLAY = "192.0.2.1"


def conf(net: dict[str, Any], ep: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {"host": {"underlay": UNDERLAY},
                            "network": [{"name": "net1", "vni": 300, **net}]}
    if ep is not None:
        data["endpoint"] = [{"network": "net1", "netns": "c1", "address": "10.0.0.2/24", **ep}]
    return parse(data, "test")


def error(net: dict[str, Any], ep: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        conf(net, ep)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_gbp_is_off_and_every_group_0_by_default() -> None:
    c = conf({}, {})
    assert c.networks[0].gbp is False
    assert c.networks[0].policy == Policy("allow", ())
    assert c.endpoints[0].group == 0


def test_the_file_gives_gbp_its_policy_and_groups() -> None:
    c = conf({"gbp": True, "policy_default": "deny",
              "policy": [{"from": 20, "to": 10, "action": "allow"},
                         {"from": 10, "to": 20, "action": "deny"}]},
             {"group": 65535})
    assert c.networks[0].gbp is True
    # Kept in one order whatever the file's, so two equal policies compare equal.
    assert c.networks[0].policy == Policy("deny", (Rule(10, 20, "deny"), Rule(20, 10, "allow")))
    assert c.endpoints[0].group == 65535


@pytest.mark.parametrize("net, ep, says", [
    ({"policy": []}, None, "policy: applies only with gbp = true"),
    ({"policy_default": "deny"}, None, "policy: applies only with gbp = true"),
    ({"gbp": True, "policy_default": "maybe"}, None, "default: 'maybe' is not allow or deny"),
    ({"gbp": True, "policy": [{"from": 1, "to": 2}]}, None, "#1: 'action' is missing"),
    ({"gbp": True, "policy": [{"from": 1, "to": 2, "action": "deny", "why": "x"}]}, None,
     "unknown key 'why'"),
    ({"gbp": True, "policy": [{"from": 65536, "to": 2, "action": "deny"}]}, None,
     "from: 65536 is not a group (0..65535)"),
    ({"gbp": True, "policy": [{"from": True, "to": 2, "action": "deny"}]}, None,
     "from: True is not a group"),
    ({"gbp": True, "policy": [{"from": 1, "to": 2, "action": "deny"},
                              {"from": 1, "to": 2, "action": "allow"}]}, None,
     "#2: from 1 to 2 is given twice"),
    ({"gbp": True, "policy": ["1->2"]}, None, "'1->2' is not {from, to, action}"),
    ({"gbp": "yes"}, None, "gbp: must be true or false"),
    ({"gbp": True}, {"group": -1}, "group: -1 is not a group"),
    ({"gbp": True}, {"group": "web"}, "group: 'web' is not a group"),
    ({}, {"group": 5}, "group: applies only in a network with gbp = true"),
])
def test_bad_policy_and_groups_are_one_line_naming_the_key(
        net: dict[str, Any], ep: dict[str, Any] | None, says: str) -> None:
    msg = error(net, ep)
    assert says in msg and "test: " in msg


def test_too_many_rules_are_refused() -> None:
    rules = [{"from": s, "to": d, "action": "deny"} for s in range(129) for d in range(128)]
    assert len(rules) > gbp.RULES_MAX
    assert f"at most {gbp.RULES_MAX}" in error({"gbp": True, "policy": rules})


def test_policy_edits_keep_one_rule_per_pair() -> None:
    p = Policy("allow").with_rule(Rule(1, 2, "deny")).with_rule(Rule(0, 5, "allow"))
    assert p.with_rule(Rule(1, 2, "allow")).rules == (Rule(0, 5, "allow"), Rule(1, 2, "allow"))
    assert p.without(1, 2).rules == (Rule(0, 5, "allow"),)
    assert p.to_json() == {"default": "allow", "rules": [
        {"from": 0, "to": 5, "action": "allow"}, {"from": 1, "to": 2, "action": "deny"}]}


# --- The control socket's request, on a fake node ---------------------------


@dataclass
class FakeNode:
    """The node as gbp.answer sees it: VNI 300 (net1, the file's) and 400
    (net2, the store's), each holding a policy as the fast path would."""

    on: dict[int, bool] = field(default_factory=lambda: {300: True, 400: True})
    policies: dict[int, Policy] = field(default_factory=lambda: {300: Policy(), 400: Policy()})
    static_vnis: set[int] = field(default_factory=lambda: {300})

    def gbp(self, name: str) -> tuple[int, GbpState]:
        vni = {"net1": 300, "net2": 400}.get(name)
        if vni is None:
            raise ConfigError(f"no network {name!r} on this agent")
        p = self.policies[vni]
        return vni, GbpState(self.on[vni], p.default, 3, 4, {r: 7 for r in p.rules})

    def set_gbp(self, vni: int, on: bool, policy: Policy) -> None:
        self.on[vni] = on
        self.policies[vni] = policy


def ask(node: FakeNode, store: bool = False, **req: Any) -> dict[str, Any]:
    return gbp.answer(node, req, store=store)


def test_show_set_delete_and_default_live() -> None:
    node = FakeNode()
    shown = ask(node, network="net1")
    assert shown == {"network": "net1", "vni": 300, "gbp": True, "default": "allow",
                     "default_allowed": 3, "default_denied": 4, "rules": []}
    got = ask(node, network="net1", op="set", action="deny", **{"from": 10, "to": 20})
    assert got["rules"] == [{"from": 10, "to": 20, "action": "deny", "hits": 7}]
    ask(node, network="net1", op="set", action="allow", **{"from": 10, "to": 20})
    assert node.policies[300].rules == (Rule(10, 20, "allow"),)
    ask(node, network="net1", op="default", action="deny")
    assert node.policies[300] == Policy("deny", (Rule(10, 20, "allow"),))
    ask(node, network="net1", op="del", **{"from": 10, "to": 20})
    assert node.policies[300] == Policy("deny", ())


@pytest.mark.parametrize("req, says", [
    ({"network": "net9"}, "no network 'net9'"),
    ({}, "a network name is required"),
    ({"network": "net1", "op": "drop"}, "'drop' is not show, set, del or default"),
    ({"network": "net1", "op": "set", "from": 1, "to": 2, "action": "maybe"},
     "'maybe' is not allow or deny"),
    ({"network": "net1", "op": "set", "from": 1, "action": "deny"}, "to: None is not a group"),
    ({"network": "net1", "op": "del", "from": 1, "to": 2}, "has no rule from 1 to 2"),
])
def test_bad_requests_are_refused_in_one_line(req: dict[str, Any], says: str) -> None:
    node = FakeNode()
    with pytest.raises(ConfigError, match=says):
        gbp.answer(node, req, store=False)
    assert node.policies[300] == Policy()


def test_a_store_network_and_a_network_without_gbp_are_not_changed_here() -> None:
    node = FakeNode()
    with pytest.raises(ConfigError, match="is the store's"):
        ask(node, store=True, network="net2", op="default", action="deny")
    assert ask(node, store=True, network="net2")["default"] == "allow"   # shown, though
    ask(node, store=True, network="net1", op="default", action="deny")   # the file's
    node.on[300] = False
    with pytest.raises(ConfigError, match="does not use GBP"):
        ask(node, network="net1", op="default", action="allow")


def test_only_a_change_is_a_mutating_request() -> None:
    assert _changes_policy({"cmd": "policy", "op": "set"})
    assert not _changes_policy({"cmd": "policy"})
    assert not _changes_policy({"cmd": "policy", "op": "show"})
    assert not _changes_policy({"cmd": "stats", "op": "set"})
