"""VXLAN Group Based Policy (draft-smith-vxlan-group-policy; Linux's vxlan
``gbp``): the policy of a network as Python holds it, and its checks.

A network with ``gbp`` on carries each frame's group (its sender's
endpoint ``group``, 0..65535) in the VXLAN header, and the fast path
(csrc/gbp.c) delivers a frame to a local endpoint only if the policy
allows the pair (source group, the endpoint's group): the rule for the
pair, else the network's default.  ``allow`` is the default's default, so
turning GBP on changes nothing until a rule or ``default = "deny"`` does.

One source for each fact: the actions' numbers are C's (``UVX_GBP_*``,
read by uvxlan.native); the bounds are here and checked against C there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from uvxlan.errors import ConfigError

ACTIONS = ("allow", "deny")
GROUP_MAX = 65535
#: Rules in one network's policy (C's UVX_GBP_RULES_MAX).
RULES_MAX = 16384
DEFAULT_ACTION = "allow"


def group(value: object, where: str = "group") -> int:
    """An endpoint's or a rule's group: a whole number 0..65535."""
    # A bool is not a group, though Python says it is an int.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= GROUP_MAX:
        raise ConfigError(f"{where}: {value!r} is not a group (0..{GROUP_MAX})")
    return value


def action(value: object, where: str = "action") -> str:
    if value not in ACTIONS:
        raise ConfigError(f"{where}: {value!r} is not {' or '.join(ACTIONS)}")
    return str(value)


@dataclass(frozen=True, order=True)
class Rule:
    src: int          # the sender's group
    dst: int          # the receiving endpoint's group
    action: str       # one of ACTIONS

    def to_json(self) -> dict[str, object]:
        return {"from": self.src, "to": self.dst, "action": self.action}


@dataclass(frozen=True)
class Policy:
    """What a network's policy is: its default and its rules, one per pair."""

    default: str = DEFAULT_ACTION
    rules: tuple[Rule, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"default": self.default, "rules": [r.to_json() for r in self.rules]}

    def with_rule(self, rule: Rule) -> Policy:
        kept = [r for r in self.rules if (r.src, r.dst) != (rule.src, rule.dst)]
        return Policy(self.default, tuple(sorted([*kept, rule])))

    def without(self, src: int, dst: int) -> Policy:
        return Policy(self.default, tuple(r for r in self.rules if (r.src, r.dst) != (src, dst)))


@dataclass(frozen=True)
class GbpState:
    """A VNI's group policy as the fast path holds it, with its counts
    (uvxlan.native.Datapath.gbp_state)."""

    on: bool
    default: str
    default_allowed: int      # frames of pairs without a rule
    default_denied: int
    rules: dict[Rule, int]    # each rule, with the frames it decided


def rule_from(raw: object, where: str) -> Rule:
    """A rule as the config file and the store write it:
    ``{from = G1, to = G2, action = "allow"|"deny"}``."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {raw!r} is not {{from, to, action}}")
    extra = set(raw) - {"from", "to", "action"}
    if extra:
        raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
    for key in ("from", "to", "action"):
        if key not in raw:
            raise ConfigError(f"{where}: {key!r} is missing")
    return Rule(group(raw["from"], f"{where}: from"), group(raw["to"], f"{where}: to"),
                action(raw["action"], f"{where}: action"))


def policy_from(default: object, rules: Iterable[object], where: str) -> Policy:
    """A whole policy: each pair once, at most RULES_MAX rules."""
    out: dict[tuple[int, int], Rule] = {}
    for i, raw in enumerate(rules):
        r = rule_from(raw, f"{where} #{i + 1}")
        if (r.src, r.dst) in out:
            raise ConfigError(f"{where} #{i + 1}: from {r.src} to {r.dst} is given twice")
        out[(r.src, r.dst)] = r
    if len(out) > RULES_MAX:
        raise ConfigError(f"{where}: {len(out)} rules, at most {RULES_MAX}")
    return Policy(action(default, f"{where}: default"), tuple(sorted(out.values())))


# --- The control socket's "policy" request (uvxlan policy --agent) ----------


class PolicyNode(Protocol):
    """What the request needs of the agent's node (uvxlan.node.Node)."""

    static_vnis: set[int]

    def gbp(self, name: str) -> tuple[int, GbpState]: ...

    def set_gbp(self, vni: int, on: bool, policy: Policy) -> None: ...


def state_json(state: GbpState) -> dict[str, Any]:
    return {"gbp": state.on, "default": state.default,
            "default_allowed": state.default_allowed, "default_denied": state.default_denied,
            "rules": [{**r.to_json(), "hits": hits} for r, hits in state.rules.items()]}


def answer(node: PolicyNode, req: Mapping[str, Any], *, store: bool) -> dict[str, Any]:
    """The reply to {"cmd": "policy", "network": N, "op": "show" | "set" |
    "del" | "default", "from": G1, "to": G2, "action": A}.  A change is
    live, on this agent only: a network of the config file keeps it until
    the agent restarts (the file is its source); a store network's policy
    is the store's (store: the agent serves one), so it is refused here."""
    name = req.get("network")
    if not isinstance(name, str):
        raise ConfigError("policy: a network name is required")
    vni, state = node.gbp(name)
    op = req.get("op", "show")
    if op == "show":
        return {"network": name, "vni": vni, **state_json(state)}
    if op not in ("set", "del", "default"):
        raise ConfigError(f"policy: {op!r} is not show, set, del or default")
    if store and vni not in node.static_vnis:
        raise ConfigError(f"network {name!r} is the store's: its policy is set in its "
                          "record (uvxlan policy without --agent)")
    if not state.on:
        raise ConfigError(f"network {name!r} does not use GBP (gbp = true in its config)")
    current = Policy(state.default, tuple(state.rules))
    if op == "default":
        policy = Policy(action(req.get("action")), current.rules)
    elif op == "set":
        rule = Rule(group(req.get("from"), "from"), group(req.get("to"), "to"),
                    action(req.get("action")))
        policy = current.with_rule(rule)
        if len(policy.rules) > RULES_MAX:
            raise ConfigError(f"network {name!r} has {RULES_MAX} rules already")
    else:
        src, dst = group(req.get("from"), "from"), group(req.get("to"), "to")
        if not any((r.src, r.dst) == (src, dst) for r in current.rules):
            raise ConfigError(f"network {name!r} has no rule from {src} to {dst}")
        policy = current.without(src, dst)
    node.set_gbp(vni, True, policy)
    return {"network": name, "vni": vni, **state_json(node.gbp(name)[1])}
