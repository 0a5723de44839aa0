"""Hostile records end to end: real agents on lab hosts, a real store
(the SQLite file, and etcd on a lab host of its own), every hostile
record written straight to the store (tests/support/tools/store_put.py,
no CLI checks).  The agents keep running and forwarding between the good
endpoints, the refused keys show in ``uvxlan check`` and on each agent's
control socket, and a remote endpoint claiming a local container's IP or
MAC never takes its traffic."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from tests.conftest import TOOLS, ping, root
from tests.support.cluster import Cluster, eventually, ip_of
from uvxlan import cluster as keys

pytestmark = root


def endpoint(name: str, host: str, ip: str, mac: str, netns: str) -> dict[str, Any]:
    return {"name": name, "network": "net1", "host": host, "netns": netns,
            "ifname": "eth0", "mac": mac, "ip": ip}


def test_hostile_records_are_refused_and_the_good_endpoints_keep_talking(
        cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    c.cli("network", "create", "net1")
    a = c.attach("net1", "h1", "a")
    b = c.attach("net1", "h2", "b")
    ns_a, ns_b = c.lab.container_netns("a"), c.lab.container_netns("b")
    assert ping(c.lab, ns_a, ip_of(b)) == 3
    net = c.cli_json("network", "inspect", "net1")
    prefix = net["subnet"].split("/")[1]
    h1_ip = c.lab.host("h1").underlay_ip
    spoof_ip_ns, spoof_mac_ns = c.container("spoof-ip"), c.container("spoof-mac")
    spare_ip = f"{ip_of(b).rsplit('.', 1)[0]}.200/{prefix}"

    host = {"port": 4789, "mtu": 1500}
    hostile: dict[str, Any] = {
        keys.host_key("named-a"): {"name": "named-b", "underlay": "10.77.0.200", **host},
        keys.host_key("mcast"): {"name": "mcast", "underlay": "224.0.0.1", **host},
        keys.host_key("bcast"): {"name": "bcast", "underlay": "255.255.255.255", **host},
        keys.host_key("thief"): {"name": "thief", "underlay": h1_ip, **host},
        keys.network_key("jumbo"): {"name": "jumbo", "vni": 999, "subnet": "10.99.0.0/24",
                                    "gateway": "10.99.0.1", "mtu": 9000},
        keys.endpoint_key("net1", "outside"): endpoint("outside", "h2", "10.5.0.9/24",
                                                       "02:00:00:00:05:09", "x"),
        keys.endpoint_key("net1", "gw"): endpoint("gw", "h2", f"{net['gateway']}/{prefix}",
                                                  "02:00:00:00:05:01", "x"),
        # On h3, realised there (its own endpoint wins on its host), never
        # on h1 (a is local there) nor h2 (a was created first).
        keys.endpoint_key("net1", "spoof-ip"): endpoint("spoof-ip", "h3", a["ip"],
                                                        "02:00:00:00:05:0a", spoof_ip_ns),
        keys.endpoint_key("net1", "spoof-mac"): endpoint("spoof-mac", "h3", spare_ip,
                                                         a["mac"], spoof_mac_ns),
        keys.endpoint_key("net1", "deep"): "[" * 3000,
    }
    c.lab.run(c.lab.host("h1").netns,
              [sys.executable, str(TOOLS / "store_put.py"), c.ov.store_url,
               json.dumps(hostile)], check=True)

    def refused_by(h: str) -> set[str]:
        return set(c.ov.query(h, "refused")["refused"])

    for h in ("h1", "h2"):
        eventually(lambda h=h: refused_by(h) >= set(hostile), 15,
                   f"{h} refuses every hostile record")
    # h3 keeps its own two and refuses a instead (its own endpoint wins there).
    eventually(lambda: keys.endpoint_key("net1", "a") in refused_by("h3"), 15,
               "h3 refuses a, whose IP and MAC its own endpoints claim")
    for h in c.names:
        proc = c.ov.proc(h)
        assert proc is not None and proc.poll() is None, f"agent of {h} stopped"
        assert c.ov.query(h, "status")["refused"] >= 1
    assert ping(c.lab, ns_a, ip_of(b)) == 3
    assert ping(c.lab, ns_b, ip_of(a)) == 3

    # uvxlan check: every hostile key, with its reason; exit status 1.
    done = c.cli("check", check=False)
    assert done.returncode == 1, done.stderr
    lines = {line.split(": ", 1)[0]: line for line in done.stdout.splitlines()}
    assert set(hostile) <= set(lines), done.stdout
    assert "not its own" in lines[keys.host_key("named-a")]
    assert "multicast" in lines[keys.host_key("mcast")]
    assert "reserved" in lines[keys.host_key("bcast")]
    assert f"{h1_ip} is host h1's" in lines[keys.host_key("thief")]
    assert "MTU 9000 needs an underlay MTU of 9050" in lines[keys.network_key("jumbo")]
    assert "not in network net1's subnet" in lines[keys.endpoint_key("net1", "outside")]
    assert "net1's gateway" in lines[keys.endpoint_key("net1", "gw")]
    assert "(on h1, h2)" in lines[keys.endpoint_key("net1", "spoof-ip")]
    assert "nested too deep" in lines[keys.endpoint_key("net1", "deep")]
    rows = {e["name"]: e for e in c.cli_json("endpoint", "ls")}
    assert rows["a"]["refused"] is not None and "(on h3)" in rows["a"]["refused"]
    assert rows["b"]["refused"] is None and rows["b"]["status"]["state"] == "ready"

    # Nothing hostile in h1's or h2's tables from the store: no path to h1
    # itself, no refused endpoint's MAC (learning, on by default, may see
    # the spoofs' frames: that is the datapath's business, not the
    # store's); a's MAC stays at a's port on h1, behind h1 on h2.
    def entry(h: str, mac: str) -> dict[str, Any] | None:
        return next((e for e in c.fdb(h) if e["mac"] == mac), None)

    assert all(e["remote"] != h1_ip for e in c.fdb("h1"))
    for h in ("h1", "h2"):
        from_store = {e["mac"] for e in c.fdb(h) if e["source"] == "store"}
        assert not from_store & {"02:00:00:00:05:0a", "02:00:00:00:05:09",
                                 "02:00:00:00:05:01"}, from_store
    ea = entry("h1", a["mac"])
    assert ea is not None and ea["source"] == "local" and not ea["remote"]

    # The spoofs are real containers on h3 and send: a's traffic stays a's.
    spoof = entry("h3", "02:00:00:00:05:0a")
    assert spoof is not None and spoof["source"] == "local", "spoof-ip not realised on h3"
    assert ping(c.lab, spoof_ip_ns, ip_of(b), 3, 0.2) == 0     # b answers a, not the spoof
    ping(c.lab, spoof_mac_ns, ip_of(b), 3, 0.2)                  # frames from a's MAC, via h3
    eb = entry("h2", a["mac"])
    assert eb is not None and eb["remote"] == h1_ip and eb["source"] == "store"
    assert ping(c.lab, ns_b, ip_of(a)) == 3
    assert ping(c.lab, ns_a, ip_of(b)) == 3
