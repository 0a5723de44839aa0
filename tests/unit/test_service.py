"""Running as a service, without root: the systemd unit as shipped, the
notify protocol on real datagram sockets, and the metrics' rendering and
HTTP answers (parsed with prometheus_client's own parser)."""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from uvxlan import config, validate
from uvxlan.control import CONTROL_DIR
from uvxlan.errors import ConfigError
from uvxlan.metrics import (
    CONTENT_TYPE,
    AgentFacts,
    Cached,
    answer,
    bind_metrics,
    exposition,
    families,
)
from uvxlan.notify import Notifier
from uvxlan.store import DEFAULT_SQLITE_PATH

UNIT = Path(__file__).resolve().parents[2] / "dist" / "systemd" / "uvxlan-agent@.service"


def unit_settings() -> dict[str, list[str]]:
    """The unit's [Service] and [Unit] keys, each with every value given."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# The unit ----------------------------------------------------------------------


def test_unit_matches_what_the_agent_does() -> None:
    u = unit_settings()
    assert u["Type"] == ["notify"]
    # The runtime directory is the control directory the commands look in,
    # kept over a stop: NAME.state there holds what the next agent adopts.
    assert "/run/" + u["RuntimeDirectory"][0] == CONTROL_DIR
    assert u["RuntimeDirectoryPreserve"] == ["yes"]
    assert Path(DEFAULT_SQLITE_PATH).parent == Path("/var/lib") / u["StateDirectory"][0]
    assert u["KillMode"] == ["process"]
    assert "docker.service" in u["Before"][0].split()
    assert u["Wants"] == u["After"] == ["network-online.target"]
    caps = set(u["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_CHOWN"}
    assert u["ExecStart"][0].split()[1:4] == ["agent", "--name", "%i"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """As shipped, but for where uvxlan is installed (verify checks that the
    command exists): no warning, no error."""
    text = UNIT.read_text()
    assert "/usr/local/bin/uvxlan " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/usr/local/bin/uvxlan ", f"{sys.executable} -m uvxlan "))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # verify exits 0 on a key it ignores: any word about our file fails.
    assert UNIT.name.split("@")[0] not in done.stderr + done.stdout, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_catches_a_bad_key(tmp_path: Path) -> None:
    """The check above can fail: a unit with a bad KillMode is reported."""
    text = UNIT.read_text().replace("/usr/local/bin/uvxlan ", f"{sys.executable} -m uvxlan ")
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("KillMode=process", "KillMode=agent-only"))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert "agent-only" in done.stderr


# The notify protocol -----------------------------------------------------------


def _listener(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notifier_writes_ready_status_and_stopping(tmp_path: Path, kind: str) -> None:
    if kind == "path":
        address = value = str(tmp_path / "notify")
    else:
        name = "uvxlan-test-" + secrets.token_hex(6)
        address, value = "\0" + name, "@" + name
    with _listener(address) as s:
        n = Notifier(value)
        assert n.active
        assert n.status("starting")
        assert n.ready("h1: 1 network(s)")
        assert n.stopping()
        got = [s.recv(4096).decode() for _ in range(3)]
        n.close()
    assert got == ["STATUS=starting\n", "READY=1\nSTATUS=h1: 1 network(s)\n",
                   "STOPPING=1\nSTATUS=stopping\n"]


def test_notifier_without_a_socket_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="uvxlan.notify"):
        n = Notifier("")
        assert not n.active
        assert not n.ready("x") and not n.stopping()
    assert caplog.records == []


def test_a_full_notify_queue_loses_messages_not_the_manager(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A manager that reads slowly fills the socket's queue (EAGAIN): the
    messages sent meanwhile are lost and that is logged once; once it
    reads again, the next message is sent."""
    address = str(tmp_path / "notify")
    with _listener(address) as s, caplog.at_level(logging.WARNING, logger="uvxlan.notify"):
        n = Notifier(address)
        sent = 0
        while n.status(f"{sent}"):
            sent += 1
            assert sent < 100_000, "the queue never filled"
        assert n.active and not n.status("lost too")
        for _ in range(sent):
            s.recv(4096)
        assert n.status("after")
        assert s.recv(4096) == b"STATUS=after\n"
        n.close()
    assert len(caplog.records) == 1
    assert "was lost" in caplog.records[0].getMessage()


@pytest.mark.parametrize("value", ["/nonexistent/uvxlan-notify", "relative/path", "@"])
def test_an_unusable_notify_socket_is_logged_once(
        caplog: pytest.LogCaptureFixture, value: str) -> None:
    with caplog.at_level(logging.WARNING, logger="uvxlan.notify"):
        n = Notifier(value)
        for _ in range(3):
            assert not n.ready("x")
            assert not n.stopping()
    assert len(caplog.records) == 1
    assert "NOTIFY_SOCKET" in caplog.records[0].getMessage()


# Metrics: the settings -----------------------------------------------------------


@pytest.mark.parametrize("given,normal", [
    ("127.0.0.1:9478", "127.0.0.1:9478"), ("[::1]:9478", "[::1]:9478"),
    ("[0:0::1]:09478", "[::1]:9478"), ("", "")])
def test_listen_addresses(given: str, normal: str) -> None:
    assert validate.listen(given) == normal


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":9478",
                                 "localhost:9478", "::1:9478", "[127.0.0.1]:9478", 9478])
def test_bad_listen_addresses(bad: object) -> None:
    with pytest.raises(ConfigError, match="is not IP:PORT"):
        validate.listen(bad)


def test_a_second_agent_on_the_metrics_port_fails_at_bind() -> None:
    """The socket listens as it is bound: a second one on the port (with
    SO_REUSEADDR both could bind while neither listened) is refused there,
    one line, before the agent makes anything."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = bind_metrics(f"127.0.0.1:{port}")
    try:
        with pytest.raises(ConfigError, match=f"metrics 127.0.0.1:{port}: "
                                              "Address already in use"):
            bind_metrics(f"127.0.0.1:{port}").close()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass                                  # accepted by the backlog already
    finally:
        first.close()


def test_one_rendering_serves_scrapes_for_a_second() -> None:
    now = [100.0]
    rendered: list[str] = []

    def render() -> str:
        rendered.append(f"a {len(rendered)}\n")
        if len(rendered) == 3:
            raise RuntimeError("a bug")
        return rendered[-1]

    cached = Cached(render, ttl=1.0, clock=lambda: now[0])
    assert [cached(), cached()] == ["a 0\n", "a 0\n"] and len(rendered) == 1
    now[0] += 0.99
    assert cached() == "a 0\n"
    now[0] += 0.01
    assert cached() == "a 1\n" and len(rendered) == 2
    now[0] += 1.0
    with pytest.raises(RuntimeError):
        cached()
    assert cached() == "a 3\n"                   # a failure is not kept


def test_a_slow_rendering_is_kept_longer() -> None:
    """A rendering that took 0.5 s serves for 5 s (RENDER_SHARE): a tight
    scrape loop costs the event loop a tenth of its time, not all of it."""
    now = [0.0]

    def render() -> str:
        now[0] += 0.5
        return f"a {now[0]}\n"

    cached = Cached(render, ttl=1.0, clock=lambda: now[0])
    assert cached() == "a 0.5\n"
    now[0] += 4.9
    assert cached() == "a 0.5\n"
    now[0] += 0.1
    assert cached() == "a 6.0\n"


def test_metrics_beyond_loopback_need_metrics_public() -> None:
    with pytest.raises(ConfigError, match=r"\[host\]: metrics: 0.0.0.0:9478 is not a "
                                          r"loopback address.*metrics_public = true"):
        config.parse({"host": {"underlay": "192.0.2.1", "metrics": "0.0.0.0:9478"}})
    cfg = config.parse({"host": {"underlay": "192.0.2.1", "metrics": "0.0.0.0:9478",
                                 "metrics_public": True}})
    assert cfg.host.metrics == "0.0.0.0:9478"
    assert config.parse({"host": {"underlay": "192.0.2.1"}}).host.metrics == ""
    assert config.parse({"host": {"underlay": "192.0.2.1",
                                  "metrics": "[::1]:1"}}).host.metrics == "[::1]:1"


# Metrics: the exposition ---------------------------------------------------------

REASONS = ["arp_unknown", "hairpin", "unknown_vtep"]


def fake_stats() -> dict[str, Any]:
    """Node.stats()'s shape (the system test checks it against a real one)."""
    return {
        "drops": {"arp_unknown": 0, "hairpin": 2, "unknown_vtep": 7},
        "fdb": {"entries": 4, "learned": 1, "learn_max": 65536, "capacity": 65539},
        "networks": [{"name": "net1", "vni": 256, "arp_replies": 3, "rx_packets": 10,
                      "rx_bytes": 1000, "tx_packets": 20, "tx_bytes": 2000,
                      "drops": {"unknown_vtep": 7},
                      "limits": {"learn_limit": 0, "fdb_full": 0, "flood_full": 1,
                                 "arp_full": 0},
                      "sizes": {"learned": 1, "flood": 2, "admitted": 3, "arp": 4,
                                "ports": 1}}],
        "ports": [{"port": 0, "network": "net1", "netns": 'odd"ns\\', "ifname": "eth0",
                   "mac": "02:42:0a:00:00:02", "rx_packets": 5, "rx_bytes": 500,
                   "tx_packets": 6, "tx_bytes": 600, "drops": {"hairpin": 2}}],
        "lost": [{"network": "net1", "netns": "gone", "ifname": "eth0",
                  "mac": "02:42:0a:00:00:03", "error": "netns gone"}],
    }


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}, through prometheus_client."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_exposition_parses_and_says_what_stats_says() -> None:
    facts = AgentFacts(version="9.9.9", ready=True, store=True, store_synced=True)
    m = parse(exposition(families(fake_stats(), facts)))
    assert m["uvxlan_build_info"] == {(("version", "9.9.9"),): 1}
    assert m["uvxlan_ready"] == {(): 1}
    assert m["uvxlan_store_synced"] == {(): 1} and m["uvxlan_store_registered"] == {(): 0}
    assert m["uvxlan_store_connected"] == {(): 0}
    assert m["uvxlan_drops_total"] == {(("reason", r),): v for r, v in
                                       fake_stats()["drops"].items()}
    net = (("network", "net1"), ("vni", "256"))
    assert m["uvxlan_network_packets_total"] == {
        tuple(sorted((*net, ("direction", "rx")))): 10,
        tuple(sorted((*net, ("direction", "tx")))): 20}
    assert m["uvxlan_network_bytes_total"][tuple(sorted((*net, ("direction", "tx"))))] == 2000
    # Every reason, zero included.
    assert m["uvxlan_network_drops_total"] == {
        tuple(sorted((*net, ("reason", r)))): (7 if r == "unknown_vtep" else 0)
        for r in REASONS}
    assert m["uvxlan_network_arp_replies_total"] == {net: 3}
    assert m["uvxlan_network_limit_reached_total"][
        tuple(sorted((*net, ("limit", "flood_full"))))] == 1
    port = (("ifname", "eth0"), ("netns", 'odd"ns\\'), *net)
    assert m["uvxlan_port_packets_total"] == {
        tuple(sorted((*port, ("direction", "rx")))): 5,
        tuple(sorted((*port, ("direction", "tx")))): 6}
    assert m["uvxlan_port_drops_total"][tuple(sorted((*port, ("reason", "hairpin"))))] == 2
    assert len(m["uvxlan_port_drops_total"]) == len(REASONS)
    assert m["uvxlan_endpoints"] == {(("state", "up"),): 1, (("state", "lost"),): 1}
    assert (m["uvxlan_fdb_entries"], m["uvxlan_fdb_learned"], m["uvxlan_fdb_learn_max"],
            m["uvxlan_fdb_capacity"]) == ({(): 4}, {(): 1}, {(): 65536}, {(): 65539})
    assert (m["uvxlan_network_fdb_learned"], m["uvxlan_network_flood_vteps"],
            m["uvxlan_network_admitted_vteps"], m["uvxlan_network_arp_entries"]) == (
        {net: 1}, {net: 2}, {net: 3}, {net: 4})


def test_exposition_without_a_store_says_nothing_of_one() -> None:
    m = parse(exposition(families(fake_stats(), AgentFacts(version="1", ready=False,
                                                           store=False))))
    assert m["uvxlan_ready"] == {(): 0}
    assert "uvxlan_store_synced" not in m and "uvxlan_store_registered" not in m


# Metrics: HTTP answers -----------------------------------------------------------


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body) or body == b""
    return status, headers, body


def test_get_and_head_metrics() -> None:
    status, headers, body = split(answer(b"GET /metrics HTTP/1.1\r\nHost: x", lambda: "a 1\n"))
    assert (status, headers["Content-Type"], body) == (200, CONTENT_TYPE, b"a 1\n")
    status, headers, body = split(answer(b"HEAD /metrics?x=1 HTTP/1.0", lambda: "a 1\n"))
    assert (status, headers["Content-Length"], body) == (200, "4", b"")


@pytest.mark.parametrize("head,code", [
    (b"POST /metrics HTTP/1.1", 405), (b"DELETE /metrics HTTP/1.1", 405),
    (b"GET / HTTP/1.1", 404), (b"GET /metricsx HTTP/1.1", 404),
    (b"GET /metrics", 400), (b"", 400), (b"\xff\xfe /metrics HTTP/1.1", 400),
    (b"GET /metrics HTTP/2.0", 505), (b"GET  /metrics HTTP/1.1", 400)])
def test_bad_requests_get_clean_errors(head: bytes, code: int) -> None:
    status, headers, body = split(answer(head, lambda: "a 1\n"))
    assert status == code
    assert body.endswith(b"\n") and b"\n" not in body[:-1]      # one line
    if code == 405:
        assert headers["Allow"] == "GET, HEAD"


def test_a_failing_render_is_a_500_not_a_dead_agent() -> None:
    def broken() -> str:
        raise KeyError("drops")
    status, _, _ = split(answer(b"GET /metrics HTTP/1.1", broken))
    assert status == 500


# The sizes the metrics show, from a real datapath ---------------------------------


def test_table_sizes_follow_the_datapath() -> None:
    from uvxlan import native
    from uvxlan.config import DatapathConfig

    dp = native.Datapath(DatapathConfig(local_ip="127.0.0.1", learn_limit=8,
                                        fdb_capacity=16))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        dp.add_vni(256)
        dp.add_vni(257)
        empty = native.VniSizes(learned=0, flood=0, admitted=0, arp=0, ports=0)
        assert dp.vni_sizes(256) == empty
        assert dp.fdb_sizes() == native.FdbSizes(entries=0, learned=0, learn_max=16,
                                                 capacity=16)
        port = dp.add_port(a.fileno(), 256)
        dp.add_remote(256, "192.0.2.2")
        dp.add_remote(256, "192.0.2.3")
        dp.peer_add(256, "192.0.2.2")
        dp.arp_add(256, "10.0.0.2", "02:42:0a:00:00:02")
        dp.fdb_add(256, "02:42:0a:00:00:02", port=port)
        for i in range(3):
            dp.fdb_learn(256, f"02:00:00:00:00:0{i}", remote="192.0.2.2", now_ms=1)
        assert dp.vni_sizes(256) == native.VniSizes(learned=3, flood=2, admitted=1, arp=1,
                                                    ports=1)
        assert dp.vni_sizes(257) == empty
        assert dp.fdb_sizes().entries == 4 and dp.fdb_sizes().learned == 3
        assert dp.fdb_age(10**9) == 3                  # learned entries age out
        assert dp.vni_sizes(256).learned == 0 and dp.fdb_sizes().entries == 1
    finally:
        dp.close()
        a.close()
        b.close()


# Whether the store answers -----------------------------------------------------------


def test_contact_store_follows_the_answers(tmp_path: Path) -> None:
    """Over the real SQLite store, and a store that cannot be reached."""
    import asyncio

    from uvxlan.errors import LeaseExpired, StoreUnavailable
    from uvxlan.store import open_store
    from uvxlan.store.contact import ContactStore

    class Unreachable:
        async def lease_keepalive(self, lease: int) -> None:
            raise StoreUnavailable("no route to the store")

        async def watch(self, prefix: str, *, start_revision: int) -> Any:
            raise StoreUnavailable("no route to the store")
            yield

    async def run() -> None:
        store = ContactStore(open_store(f"sqlite://{tmp_path}/s.db"))
        assert store.connected is None
        lease = await store.lease_grant(5)
        assert store.connected is True
        await store.put("/uvxlan/x", b"1", lease=lease)
        await store.lease_revoke(lease)
        with pytest.raises(LeaseExpired):          # an answer: still connected
            await store.lease_keepalive(lease)
        assert store.connected is True
        events = store.watch("/uvxlan/", start_revision=1)
        assert (await anext(events)).key == "/uvxlan/x"
        await events.aclose()                       # type: ignore[attr-defined]
        await store.close()

        down = ContactStore(Unreachable())  # type: ignore[arg-type]
        with pytest.raises(StoreUnavailable):
            await down.lease_keepalive(1)
        assert down.connected is False
        with pytest.raises(StoreUnavailable):
            await anext(down.watch("/uvxlan/", start_revision=1))
        assert down.connected is False

    asyncio.run(run())
