"""The control plane end to end: agents on lab hosts take networks and
endpoints from a cluster store — the embedded SQLite file, and a real etcd
running on a lab host of its own — and users drive it with the CLI.

Every test runs once per backend.  Namespaces, TAPs, agents and etcd are
real; nothing is mocked."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import TOOLS, needs, ping, root
from tests.support.cluster import TTL, Cluster, eventually, ip_of
from uvxlan.lab.netns import UNDERLAY_IFNAME

pytestmark = root

# --- Reachability and isolation ----------------------------------------------

def test_three_hosts_every_pair_reaches_within_a_network_never_across(
        cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    c.cli("network", "create", "net1")
    c.cli("network", "create", "net2")
    eps: dict[str, list[dict[str, Any]]] = {"net1": [], "net2": []}
    for net in eps:
        for h in c.names:
            eps[net].append(c.attach(net, h, f"{net}{h}"))

    for members in eps.values():
        for a in members:
            for b in members:
                if a is not b:
                    assert ping(c.lab, c.lab.container_netns(a["name"]), ip_of(b), 2, 0.1) == 2, \
                        f"{a['name']} -> {b['name']}"

    # Across networks: give each net1 container an on-link route to
    # net2's subnet, so it really asks on its own segment (VNI) for the
    # net2 addresses; nothing may answer.
    net2 = c.cli_json("network", "inspect", "net2")
    subnet2 = net2["subnet"]
    for a in eps["net1"]:
        ns = c.lab.container_netns(a["name"])
        c.lab.run(ns, ["ip", "route", "add", subnet2, "dev", "eth0"], check=True)
        for b in eps["net2"]:
            assert ping(c.lab, ns, ip_of(b), 2, 0.1) == 0, f"{a['name']} reached {b['name']}"

    # What the agents hold came from the store.
    fdb = c.fdb("h1")
    remote_macs = {e["mac"] for e in fdb if e["source"] == "store"}
    others = {e["mac"] for m in eps.values() for e in m if e["host"] != "h1"}
    assert remote_macs == others
    assert not [e for e in fdb if e["source"] == "learned"]


def test_concurrent_creates_and_attaches_from_three_hosts(
        cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    script = TOOLS / "cluster_burst.py"
    procs = [
        c.lab.spawn(c.lab.host(h).netns,
                    [sys.executable, str(script), c.ov.store_url, h, "4", "6",
                     c.lab.host(h).netns],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for h in c.names
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    nets = c.cli_json("network", "ls")
    assert len(nets) == 3 * 4 + 1          # + the shared network the burst attaches to
    assert len({n["vni"] for n in nets}) == len(nets)
    eps = c.cli_json("endpoint", "ls", "--network", "shared")
    assert len(eps) == 3 * 6
    assert len({e["ip"] for e in eps}) == len(eps)
    assert len({e["mac"] for e in eps}) == len(eps)
    assert sorted(e["name"] for e in eps) == sorted(n for o in outs for n in o["endpoints"])


# --- Liveness -----------------------------------------------------------------

def test_killed_agent_vanishes_then_rebuilds_without_leaks(
        cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    c.cli("network", "create", "net1")
    a = c.attach("net1", "h1", "a")
    b = c.attach("net1", "h3", "b")
    ns_a, ns_b = c.lab.container_netns("a"), c.lab.container_netns("b")
    assert ping(c.lab, ns_a, ip_of(b)) == 3

    def h1_knows_b() -> bool:
        return any(e["mac"] == b["mac"] for e in c.fdb("h1"))

    assert h1_knows_b()
    c.ov.kill("h3")
    took = eventually(lambda: not h1_knows_b(), TTL + 5, "h3's entries gone from h1")
    assert took <= TTL + 5
    # h2 sees the same expiry at its next poll of the store (not at once).
    eventually(lambda: all(e["mac"] != b["mac"] for e in c.fdb("h2")), 5,
               "h3's entries gone from h2")
    hosts = {h["name"] for h in c.cli_json("host", "ls")}
    assert hosts == {"h1", "h2"}

    c.ov.start("h3")
    eventually(h1_knows_b, 10, "h3's entries back on h1")
    assert ping(c.lab, ns_a, ip_of(b)) == 3
    # The container has its one eth0 again, and h3 holds no stray TAP.
    links = c.lab.run(ns_b, ["ip", "-o", "link"]).stdout
    assert len(re.findall(r": eth0:", links)) == 1
    h3_links = c.lab.run(c.lab.host("h3").netns, ["ip", "-o", "link"]).stdout
    assert "uvx" not in h3_links.replace(c.lab.prefix, "")
    stats = c.ov.query("h3", "stats")
    assert len(stats["ports"]) == 1
    assert a["host"] == "h1"


def test_store_outage_while_traffic_flows(cluster: Callable[[int], Cluster],
                                          tmp_path: Path) -> None:
    """etcd: the server stops for longer than the leases, then starts
    again.  Embedded store: another process holds the database's write lock
    past every agent's busy timeout (5 s), so their writes fail as they
    would with the store gone."""
    c = cluster(2)
    c.cli("network", "create", "net1")
    c.attach("net1", "h1", "a")
    b = c.attach("net1", "h2", "b")
    ns_a = c.lab.container_netns("a")
    pinger = c.lab.spawn(ns_a, ["ping", "-i", "0.05", "-c", "240", "-W", "1", ip_of(b)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        if c.etcd is not None:
            c.etcd.stop()
            time.sleep(TTL + 2)            # longer than the leases
            c.etcd.start()
        else:
            holder = sqlite3.connect(tmp_path / "state" / "state.db", isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                time.sleep(7)
            finally:
                holder.close()
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
    received = int(re.search(r"(\d+) received", out).group(1))  # type: ignore[union-attr]
    assert received >= 228, out            # forwarding went on (>= 95 %)
    # The agents come back: both hosts registered again, and a new
    # endpoint on h2 is reachable from h1.
    eventually(lambda: {h["name"] for h in c.cli_json("host", "ls")} == {"h1", "h2"},
               30, "hosts registered again")
    d = c.attach("net1", "h2", "d")
    assert ping(c.lab, ns_a, ip_of(d)) == 3
    assert "store unreachable" in c.ov.file("h1", ".log").read_text()


# --- Moves ----------------------------------------------------------------------

def test_an_address_moved_100_times_reaches_only_its_new_host(
        cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    c.cli("network", "create", "net1", "--subnet", "10.9.0.0/24")
    c.attach("net1", "h1", "src")
    for h in ("h2", "h3"):
        c.container(f"mv{h}")
    done = c.lab.run(c.lab.host("h1").netns, [
        sys.executable, str(TOOLS / "mover.py"), c.ov.store_url, str(c.ov.workdir),
        c.lab.container_netns("src"), c.lab.container_netns("mvh2"),
        c.lab.container_netns("mvh3"), "100"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["moves"] == 100
    assert report["failures"] == [], report["failures"][:5]


# --- ARP suppression -----------------------------------------------------------------

@needs("tshark")
def test_known_addresses_never_arp_over_the_wire(cluster: Callable[[int], Cluster],
                                                 tmp_path: Path) -> None:
    c = cluster(2)
    c.cli("network", "create", "net1", "--subnet", "10.8.0.0/24")
    c.attach("net1", "h1", "a")
    b = c.attach("net1", "h2", "b")
    ns_a = c.lab.container_netns("a")
    pcap = tmp_path / "ul.pcap"
    h1 = c.lab.host("h1")
    cap = c.lab.spawn(h1.netns, ["tcpdump", "-i", UNDERLAY_IFNAME, "-w", str(pcap), "-U",
                                 "udp port 4789"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        c.lab.run(ns_a, ["ip", "neigh", "flush", "all"])
        assert ping(c.lab, ns_a, ip_of(b)) == 3          # needs ARP: answered locally
        assert ping(c.lab, ns_a, "10.8.0.200", 1) == 0   # unknown: must flood
        time.sleep(0.5)
    finally:
        cap.terminate()
        cap.wait(10)
    dump = subprocess.run(["tshark", "-r", str(pcap), "-d", "udp.port==4789,vxlan",
                           "-Y", "arp", "-T", "fields", "-e", "arp.dst.proto_ipv4"],
                          capture_output=True, text=True, timeout=60)
    asked = set(dump.stdout.split())
    assert "10.8.0.200" in asked, dump          # the capture does see ARP...
    assert ip_of(b) not in asked                 # ...but never for a known address
    stats = c.ov.query("h1", "stats")
    assert next(n for n in stats["networks"] if n["name"] == "net1")["arp_replies"] >= 1


def test_records_that_do_not_decode_are_refused_not_fatal(
        cluster: Callable[[int], Cluster]) -> None:
    """Keys written by hand or by a newer uvxlan must not stop any agent."""
    c = cluster(2)
    c.cli("network", "create", "net1")
    junk = {
        "/uvxlan/endpoints/net1/v6": json.dumps({
            "name": "v6", "network": "net1", "host": "h2", "netns": "x", "ifname": "eth0",
            "mac": "02:00:00:00:00:99", "ip": "fd00::2/64"}),
        "/uvxlan/networks/bad": json.dumps({"name": "bad", "vni": "300", "subnet": "x",
                                            "gateway": "x", "mtu": 1450}),
        "/uvxlan/hosts/h9": "not json",
    }
    script = ("import asyncio, json, sys\n"
              f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
              "from uvxlan.store import open_store\n"
              "async def main():\n"
              f"    s = open_store({c.ov.store_url!r})\n"
              f"    for k, v in json.loads({json.dumps(json.dumps(junk))}).items():\n"
              "        await s.put(k, v.encode())\n"
              "    await s.close()\n"
              "asyncio.run(main())\n")
    done = c.lab.run(c.lab.host("h1").netns, [sys.executable, "-c", script], timeout=30)
    assert done.returncode == 0, done.stderr
    a = c.attach("net1", "h1", "a")
    b = c.attach("net1", "h2", "b")
    assert ping(c.lab, c.lab.container_netns("a"), ip_of(b)) == 3
    for h in c.names:
        proc = c.ov.proc(h)
        assert proc is not None and proc.poll() is None, c.ov.log_tail(h)
        assert c.ov.query(h, "status")["synced"] is True
    log = (c.ov.workdir / "h1.log").read_text()
    assert "/uvxlan/endpoints/net1/v6: refused" in log
    assert "Traceback" not in log
    assert a["ip"] != b["ip"]
