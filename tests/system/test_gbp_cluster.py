"""VXLAN-GBP in a cluster store (root only): two agents, a network made with
``--gbp``, endpoints attached with ``--group``, and the policy changed in
the store with ``uvxlan policy``; every agent serving the network applies
it, the receiving one drops what it denies (counted), and the same
command with --agent shows the counts but refuses to change a store
network's policy.

Traffic goes only to addresses inside namespaces this test made.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs, root
from tests.support.capture import ping_run
from uvxlan.control import query_agent
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay

pytestmark = [root, needs("ip", "ping")]

WEB_IP, DB_IP = "10.0.0.10", "10.0.0.20"
WEB, DB = 10, 20


@pytest.fixture
def cluster(lab: Lab, tmp_path: Path) -> Iterator[ClusterOverlay]:
    lab.up(2)
    cov = ClusterOverlay(lab, tmp_path / "agents", f"sqlite://{tmp_path}/state/state.db")
    try:
        for h in ("h1", "h2"):
            cov.start(h)
        yield cov
    finally:
        codes = cov.stop_all()
        assert all(c == 0 for c in codes.values()), f"agents did not exit cleanly: {codes}"


def agent_policy(cov: ClusterOverlay, host: str, **req: Any) -> dict[str, Any]:
    return query_agent(cov.control_socket(host), "policy", args={"network": "net1", **req})


def wait_for(what: str, ok: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.1)


def test_the_stores_policy_reaches_every_agent_and_is_enforced(
        lab: Lab, cluster: ClusterOverlay) -> None:
    cov = cluster
    cov.cli("network", "create", "net1", "--vni", "5151", "--subnet", "10.0.0.0/24", "--gbp")
    web, db = lab.add_container("web"), lab.add_container("db")
    cov.cli("attach", "net1", "--host", "h1", "--netns", web, "--name", "web",
            "--ip", WEB_IP, "--group", str(WEB))
    cov.cli("attach", "net1", "--host", "h2", "--netns", db, "--name", "db",
            "--ip", DB_IP, "--group", str(DB))
    assert ping_run(lab, web, DB_IP).returncode == 0     # default: allow

    cov.cli("policy", "--network", "net1", "--from", str(WEB), "--to", str(DB), "deny")
    rule = {"from": WEB, "to": DB, "action": "deny"}
    for h in ("h1", "h2"):
        wait_for(f"{h} applies the rule", lambda h=h: [
            {k: r[k] for k in rule} for r in agent_policy(cov, h)["rules"]] == [rule])
    assert ping_run(lab, web, DB_IP).returncode != 0
    # Denied where db lives, at its port, counted there.
    stats = cov.query("h2", "stats")
    assert stats["drops"].get("gbp_denied", 0) >= 3, stats["drops"]
    (port,) = [p for p in stats["ports"] if p["netns"] == db]
    assert port["drops"].get("gbp_denied", 0) >= 3
    assert agent_policy(cov, "h2")["rules"][0]["hits"] >= 3
    # The reverse pair has no rule: db's pings reach web, whose replies do not reach db.
    assert ping_run(lab, db, WEB_IP).returncode != 0
    assert agent_policy(cov, "h1")["default_allowed"] >= 3

    # An agent does not change a store network's policy: the store does.
    done = cov.cli("policy", "--agent", cov.control_socket("h2"), "--network", "net1",
                   "--default", "deny", store=False, check=False)
    assert done.returncode != 0 and "is the store's" in done.stderr, done.stderr
    shown = cov.cli("policy", "--network", "net1").stdout
    assert f"{WEB:>6} {DB:>6} deny" in shown, shown

    cov.cli("policy", "--network", "net1", "--from", str(WEB), "--to", str(DB), "--delete")
    wait_for("h2 drops the rule", lambda: agent_policy(cov, "h2")["rules"] == [])
    assert ping_run(lab, web, DB_IP).returncode == 0
