"""Running as a service, with real agents on lab hosts: systemd's notify
protocol as systemd speaks it (a datagram socket, by path and by abstract
name), the unit's capabilities as the only ones, and Prometheus metrics
scraped from an agent carrying traffic, parsed with prometheus_client."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OverlayFactory, needs, ping
from tests.support.cluster import Cluster, eventually
from tests.unit.test_service import unit_settings
from uvxlan.control import query_agent
from uvxlan.errors import LabError
from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import ETCD, Overlay, Placement
from uvxlan.metrics import CACHE_S
from uvxlan.netlink import run_in_netns

METRICS = "127.0.0.1:9478"     # inside each lab host's own netns: no clash


def two_hosts() -> tuple[dict[str, int], list[Placement]]:
    return {"net": 42}, [Placement("c1", "h1", "net", "10.0.0.1/24"),
                         Placement("c2", "h2", "net", "10.0.0.2/24")]


# systemd's notify protocol -------------------------------------------------------


def _recv(sock: socket.socket, timeout: float) -> str | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        return None


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_once_stats_answers_and_stopping_on_sigterm(
        lab: Lab, tmp_path: Path, kind: str) -> None:
    lab.up(2)
    lab.add_container("c1")
    networks, placements = two_hosts()
    ov = Overlay(lab, tmp_path, networks, placements[:1], hosts=["h1", "h2"])
    netns = lab.host("h1").netns
    if kind == "path":
        address = value = str(tmp_path / "notify")
    else:
        # An abstract name belongs to a netns: systemd's and the agent's
        # are the same one, here the lab host's.
        name = "uvxlan-test-" + secrets.token_hex(6)
        address, value = "\0" + name, "@" + name

    def bind() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        s.bind(address)
        return s

    listener = run_in_netns(netns, bind)
    conf = ov.file("h1", ".toml")
    conf.write_text(ov.config_text("h1"))
    with listener, open(ov.file("h1", ".log"), "wb") as log:
        agent = lab.spawn(netns, [sys.executable, "-m", "uvxlan", "agent", "--config",
                                  str(conf)],
                          env={**os.environ, "NOTIFY_SOCKET": value},
                          stdout=log, stderr=subprocess.STDOUT)
        try:
            first = _recv(listener, 20)
            assert first == "STATUS=starting\n", ov.log_tail("h1")
            ready = _recv(listener, 20)
            # At once, before anything else: the control socket answers.
            stats = query_agent(ov.control_socket("h1"), "stats", timeout=5)
            assert ready is not None and ready.startswith("READY=1\n"), ov.log_tail("h1")
            assert f"STATUS={lab.name}-h1 on " in ready and "1 endpoint(s)" in ready
            assert [p["netns"] for p in stats["ports"]] == [lab.container_netns("c1")]
            assert _recv(listener, 0.5) is None      # nothing more while it runs
            agent.send_signal(signal.SIGTERM)
            stopping = _recv(listener, 10)
            assert stopping == "STOPPING=1\nSTATUS=stopping: endpoints kept\n"
            assert agent.wait(20) == 0
        finally:
            terminate(agent)
    if kind == "path":
        os.unlink(address)


def test_an_unreachable_notify_socket_never_stops_the_agent(
        overlay: OverlayFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-dir" / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", missing)
    networks, placements = two_hosts()
    ov = overlay(networks, placements)
    assert ping(ov.lab, ov.lab.container_netns("c1"), "10.0.0.2") == 3
    assert ov.stop("h1") == 0
    text = ov.file("h1", ".log").read_text()
    assert text.count(f"NOTIFY_SOCKET {missing}: No such file or directory") == 1, text
    assert "stopped; endpoints kept" in text


@needs("setpriv")
def test_the_units_capabilities_are_all_the_agent_needs(overlay: OverlayFactory) -> None:
    """Agents run with only the unit's CapabilityBoundingSet (and no new
    privileges) make their TAPs in the containers' netns and forward."""
    caps = unit_settings()["CapabilityBoundingSet"][0].split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    prefix = ["setpriv", "--bounding-set", bounding, "--inh-caps=-all", "--no-new-privs"]
    networks, placements = two_hosts()
    ov = overlay(networks, placements, agent_prefix=prefix)
    assert ping(ov.lab, ov.lab.container_netns("c1"), "10.0.0.2") == 3
    agent = ov.proc("h1")
    assert agent is not None
    status = Path(f"/proc/{agent.pid}/status").read_text()
    bnd = int(next(line for line in status.splitlines()
                   if line.startswith("CapBnd:")).split()[1], 16)
    assert bin(bnd).count("1") == len(caps)      # the agent ran with those alone


@needs("setpriv")
def test_without_sys_admin_the_agent_fails_in_one_line(lab: Lab, tmp_path: Path) -> None:
    """The set above is not loose: without CAP_SYS_ADMIN, setns() into the
    container's netns is refused, and the agent says so in one line."""
    lab.up(1)
    lab.add_container("c1")
    networks, placements = two_hosts()
    ov = Overlay(lab, tmp_path, networks, placements[:1], hosts=["h1"],
                 agent_prefix=["setpriv", "--bounding-set", "-all,+net_admin,+net_raw,+chown",
                               "--inh-caps=-all", "--no-new-privs"])
    try:
        with pytest.raises(LabError, match="exited with 1"):
            ov.start("h1")
    finally:
        assert ov.stop_all() == {"h1": 1}
    log = ov.file("h1", ".log").read_text()
    assert log.startswith("uvxlan: error: ") and log.count("\n") == 1, log
    assert "in netns" in log and "operation not permitted" in log.lower(), log


# Prometheus metrics --------------------------------------------------------------


def http(netns: str, request: bytes, listen: str = METRICS) -> bytes:
    """One request to the agent's metrics address in netns; the response."""
    host, _, port = listen.rpartition(":")

    def connect() -> socket.socket:
        return socket.create_connection((host, int(port)), timeout=15)

    with run_in_netns(netns, connect) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return (int(lines[0].split(" ")[1]),
            dict(line.split(": ", 1) for line in lines[1:]), body)


def stats_json(ov: Overlay, host: str) -> dict[str, object]:
    """`uvxlan stats --json` of the host's agent, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "uvxlan", "stats", "--json", "--agent",
                           ov.control_socket(host)], capture_output=True, text=True,
                          timeout=30, check=True)
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


def test_metrics_of_an_agent_carrying_traffic_match_uvxlan_stats(
        overlay: OverlayFactory) -> None:
    networks, placements = two_hosts()
    ov = overlay(networks, placements, host_options={"metrics": METRICS})
    lab = ov.lab
    # Traffic to count (a reply lost on a loaded machine is not the point).
    assert ping(lab, lab.container_netns("c1"), "10.0.0.2", count=20, interval=0.05) >= 10
    netns = lab.host("h1").netns
    # A scrape between two equal `uvxlan stats` saw the same counters
    # (a stray IPv6 packet from a container would move them).  Each try
    # waits out the rendering's cache, so every scrape renders afresh.
    for _ in range(20):
        before = stats_json(ov, "h1")
        code, headers, body = status_of(http(netns, b"GET /metrics HTTP/1.1\r\nHost: h1\r\n\r\n"))
        if stats_json(ov, "h1") == before:
            break
        time.sleep(CACHE_S + 0.2)
    else:
        pytest.fail("the counters never stood still")
    assert code == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)

    samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        assert fam.name.startswith("uvxlan_")
        for s in fam.samples:
            key = frozenset(s.labels.items())
            assert key not in samples.get(s.name, {}), f"{s.name} {s.labels} twice"
            samples.setdefault(s.name, {})[key] = s.value

    st = before
    assert isinstance(st, dict)
    drops = st["drops"]
    assert isinstance(drops, dict) and len(drops) >= 19
    assert samples["uvxlan_drops_total"] == {frozenset({("reason", r)}): v
                                            for r, v in drops.items()}
    (net,) = st["networks"]   # type: ignore[misc]
    where = {("network", "net"), ("vni", "42")}
    for d in ("rx", "tx"):
        assert net[f"{d}_packets"] > 0
        assert samples["uvxlan_network_packets_total"][
            frozenset(where | {("direction", d)})] == net[f"{d}_packets"]
        assert samples["uvxlan_network_bytes_total"][
            frozenset(where | {("direction", d)})] == net[f"{d}_bytes"]
    assert samples["uvxlan_network_arp_replies_total"][frozenset(where)] == net["arp_replies"]
    for r in drops:
        assert samples["uvxlan_network_drops_total"][
            frozenset(where | {("reason", r)})] == net["drops"].get(r, 0)
    (port,) = st["ports"]   # type: ignore[misc]
    at = where | {("netns", lab.container_netns("c1")), ("ifname", "eth0")}
    for d in ("rx", "tx"):
        assert port[f"{d}_packets"] >= 20
        assert samples["uvxlan_port_packets_total"][
            frozenset(at | {("direction", d)})] == port[f"{d}_packets"]
        assert samples["uvxlan_port_bytes_total"][
            frozenset(at | {("direction", d)})] == port[f"{d}_bytes"]
    assert len(samples["uvxlan_port_drops_total"]) == len(drops)
    assert samples["uvxlan_build_info"] == {frozenset({("version", "0.1.0")}): 1}
    assert samples["uvxlan_ready"] == {frozenset(): 1}
    assert samples["uvxlan_endpoints"][frozenset({("state", "up")})] == 1
    fdb = st["fdb"]
    assert isinstance(fdb, dict) and fdb["entries"] >= 2    # c1's own and c2's, learned
    for key, value in fdb.items():
        assert samples[f"uvxlan_fdb_{key}"] == {frozenset(): value}
    assert net["sizes"]["flood"] == net["sizes"]["admitted"] == 1      # h2
    for key, name in (("learned", "fdb_learned"), ("flood", "flood_vteps"),
                      ("admitted", "admitted_vteps"), ("arp", "arp_entries")):
        assert samples[f"uvxlan_network_{name}"] == {frozenset(where): net["sizes"][key]}

    # HEAD: the same head, no body.
    code, headers, rest = status_of(http(netns, b"HEAD /metrics HTTP/1.1\r\n\r\n"))
    assert code == 200 and rest == b"" and int(headers["Content-Length"]) > 0


def _accept_queue(netns: str, port: str) -> int:
    """Connections waiting for the listener on port in netns to accept them."""
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", "sport", "=",
                          f":{port}"], capture_output=True, text=True, timeout=10,
                         check=True).stdout.split()
    return int(out[1])


def test_bad_requests_get_clean_http_errors(overlay: OverlayFactory) -> None:
    networks, placements = two_hosts()
    ov = overlay(networks, placements[:1], hosts=1, run=["h1"],
                 host_options={"metrics": METRICS})
    netns = ov.lab.host("h1").netns
    for request, code in [(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
                          (b"GET / HTTP/1.1\r\n\r\n", 404),
                          (b"GET /metrics/../x HTTP/1.1\r\n\r\n", 404),
                          (b"BREW\r\n\r\n", 400),
                          (b"GET /metrics HTTP/3\r\n\r\n", 505),
                          (b"GET /metrics HTTP/1.1\r\n", 400),       # ended early
                          (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431)]:
        got, headers, body = status_of(http(netns, request))
        assert got == code, (request[:40], body)
        assert headers["Connection"] == "close"
        assert body.count(b"\n") == 1
    # 16 clients that send nothing hold every slot: the next is turned
    # away at once (503), and they are answered 408 and let go.
    host, _, port = METRICS.rpartition(":")
    idle = [run_in_netns(netns, lambda: socket.create_connection((host, int(port)), 15))
            for _ in range(16)]
    try:
        # Until the agent has taken all 16 (its accept queue, the
        # listener's Recv-Q, empty): else the next could take a slot.
        deadline = time.monotonic() + 15
        time.sleep(0.2)
        while _accept_queue(netns, port) != 0:
            assert time.monotonic() < deadline, "the agent did not accept 16 connections"
            time.sleep(0.05)
        started = time.monotonic()
        # (It sends nothing: the answer comes before any request is read.)
        with run_in_netns(netns, lambda: socket.create_connection((host, int(port)), 5)) as s:
            got, headers, _ = status_of(s.recv(4096))
        assert got == 503 and headers["Retry-After"] == "1"
        assert time.monotonic() - started < 4             # not the 408 after 5 s idle
        for s in idle:
            response = b""
            while chunk := s.recv(4096):
                response += chunk
            assert status_of(response)[0] == 408
        assert time.monotonic() - started < 10
    finally:
        for s in idle:
            s.close()
    # After all that, a scrape still works and the agent still answers.
    assert status_of(http(netns, b"GET /metrics HTTP/1.0\r\n\r\n"))[0] == 200
    status = ov.query("h1", "status")
    assert status["ready"] is True and status["metrics"] == METRICS
    assert status["metrics_refused"] == {"busy": 1, "too_long": 1, "idle": 16,
                                         "slow_reader": 0}


def test_a_metrics_port_in_use_is_one_line_at_start(lab: Lab, tmp_path: Path) -> None:
    lab.up(1)
    lab.add_container("c1")
    netns = lab.host("h1").netns
    networks, placements = two_hosts()
    ov = Overlay(lab, tmp_path, networks, placements[:1], hosts=["h1"],
                 host_options={"metrics": METRICS})

    def occupy() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 9478))
        s.listen()
        return s

    try:
        with run_in_netns(netns, occupy), pytest.raises(LabError) as err:
            ov.start("h1")
    finally:
        codes = ov.stop_all()
    assert codes == {"h1": 1}
    log = ov.file("h1", ".log").read_text()
    assert log == "uvxlan: error: metrics 127.0.0.1:9478: Address already in use\n", log
    assert "exited with 1" in str(err.value)
    # Refused before anything was made: no eth0 in the container.
    links = lab.run(lab.container_netns("c1"), ["ip", "-o", "link", "show"]).stdout
    assert "eth0" not in links


def scrape(netns: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    code, _, body = status_of(http(netns, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert code == 200
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


@needs(ETCD)
def test_store_metrics_and_status_follow_an_etcd_outage(
        lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(lab, tmp_path, "etcd", 1)
    c.ov.host_options["metrics"] = METRICS
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    notify.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    codes: dict[str, int] = {}

    def statuses(until: str) -> list[str]:
        seen: list[str] = []
        while not any(until in m for m in seen):
            message = _recv(notify, 15)
            assert message is not None, seen
            seen.append(message)
        return seen

    try:
        c.start()
        told = statuses("synced with the store")
        assert told[0] == "STATUS=starting\n" and told[1].startswith("READY=1\n")
        netns = lab.host("h1").netns

        def store_says() -> tuple[float, float, float]:
            m = scrape(netns)
            return (m["uvxlan_store_connected"][frozenset()],
                    m["uvxlan_store_synced"][frozenset()],
                    m["uvxlan_store_registered"][frozenset()])

        assert store_says() == (1, 1, 1)
        assert c.etcd is not None
        c.etcd.stop()
        # A keepalive every TTL/3 finds it gone; forwarding state stays.
        eventually(lambda: store_says()[0] == 0, 15, "store_connected 0")
        assert store_says()[1] == 1
        assert "; forwarding goes on" in statuses("store unreachable since")[-1]
        c.etcd.start()
        eventually(lambda: store_says() == (1, 1, 1), 30, "store_connected 1 again")
        assert statuses("synced with the store")[-1].startswith("STATUS=h1 on ")
    finally:
        codes = c.close()
        notify.close()
    assert codes == {"h1": 0}


def test_public_metrics_are_served_beyond_loopback_with_a_warning(
        overlay: OverlayFactory) -> None:
    networks, placements = two_hosts()
    ov = overlay(networks, placements, host_options={"metrics": "0.0.0.0:9478",
                                                     "metrics_public": True})
    h1 = ov.lab.host("h1")
    # From the other host, over the underlay, as a Prometheus elsewhere would.
    code, _, body = status_of(http(ov.lab.host("h2").netns, b"GET /metrics HTTP/1.1\r\n\r\n",
                                   f"{h1.underlay_ip}:9478"))
    assert code == 200 and b"uvxlan_ready 1" in body
    log = ov.file("h1", ".log").read_text()
    assert log.count("metrics on 0.0.0.0:9478, beyond loopback (metrics_public)") == 1, log
