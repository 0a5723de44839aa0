"""Store faults never stop the data plane: for each failure a real store
can give, two agents (h1, h2) keep forwarding a ping between their
containers while the fault lasts, log one line for it, and converge once
the store is back.  etcd runs in lab host h3's netns on its underlay
address (every agent reaches it over the underlay, as it would a store
on another machine); the embedded store is a file in the test's tmp dir.

Each test prints a ``store-faults:`` line with the ping's figures (run
with ``-s`` to see them; docs/operations.md's table quotes them).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import root
from tests.support import etcdserver
from tests.support.cluster import TTL, eventually, ip_of
from uvxlan import netlink
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay

pytestmark = root

# An episode's first line, whatever the fault (uvxlan.controller.StoreHealth).
EPISODE = "forwarding goes on with the last known state, retrying with backoff"
BACK = "store back after"


@dataclass
class Ping:
    """ping -i 0.05 from a netns until stopped (SIGINT: it prints its
    figures)."""

    proc: subprocess.Popen[str]
    sent: int = 0
    received: int = 0

    @classmethod
    def start(cls, lab: Lab, netns: str, ip: str) -> Ping:
        return cls(lab.spawn(netns, ["ping", "-i", "0.05", "-W", "1", ip],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def stop(self) -> Ping:
        time.sleep(1.1)                   # the last requests' replies (-W 1)
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        self.sent, self.received = int(m.group(1)), int(m.group(2))
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Rig:
    """Agents h1 and h2 on one store, net1, container a on h1 and b on h2."""

    lab: Lab
    ov: ClusterOverlay
    etcd: list[etcdserver.EtcdServer] = field(default_factory=list)
    b_ip: str = ""
    pings: list[Ping] = field(default_factory=list)

    def start(self) -> None:
        for h in ("h1", "h2"):
            self.ov.start(h)
        self.ov.cli("network", "create", "net1", "--subnet", "10.0.0.0/24")
        self.attach("a", "h1")
        self.b_ip = ip_of(self.attach("b", "h2"))

    def attach(self, name: str, host: str) -> dict[str, Any]:
        netns = self.lab.add_container(name)
        self.ov.cli("attach", "net1", "--host", host, "--netns", netns, "--name", name)
        return self.endpoint(name)

    def endpoint(self, name: str) -> dict[str, Any]:
        done = self.ov.cli("endpoint", "ls", "--network", "net1", "--json")
        return next(e for e in json.loads(done.stdout) if e["name"] == name)

    def state(self, name: str) -> str | None:
        """The endpoint's status as its agent wrote it (None: none yet)."""
        status = self.endpoint(name)["status"]
        return None if status is None else str(status["state"])

    def ping(self) -> Ping:
        p = Ping.start(self.lab, self.lab.container_netns("a"), self.b_ip)
        self.pings.append(p)
        time.sleep(1)
        return p

    def log(self, host: str) -> str:
        return self.ov.file(host, ".log").read_text(errors="replace")

    def mark(self) -> dict[str, int]:
        """Where each agent's log is now: what follows is this fault's."""
        return {h: len(self.log(h)) for h in ("h1", "h2")}

    def since(self, mark: dict[str, int], host: str) -> str:
        return self.log(host)[mark[host]:]

    def hosts(self) -> set[str]:
        return {h["name"] for h in json.loads(self.ov.cli("host", "ls", "--json").stdout)}

    def reaches(self, ip: str) -> bool:
        done = self.lab.run(self.lab.container_netns("a"),
                            ["ping", "-c", "2", "-i", "0.2", "-W", "1", ip], timeout=10)
        return done.returncode == 0

    def alive(self) -> None:
        for h in ("h1", "h2"):
            proc = self.ov.proc(h)
            assert proc is not None and proc.poll() is None, \
                f"agent {h} ended: {self.ov.log_tail(h)}"


def assert_forwarded(p: Ping) -> None:
    """Forwarding went on: at most 3 % lost (a loaded 2-CPU machine loses
    a few; an agent that stopped forwarding loses them all)."""
    assert p.sent - p.received <= max(2, p.sent * 3 // 100), (p.sent, p.received)


def report(fault: str, p: Ping, **more: object) -> None:
    extra = "".join(f" {k}={v}" for k, v in more.items())
    print(f"\nstore-faults: {fault}: ping sent={p.sent} received={p.received}{extra}")


def assert_one_episode(rig: Rig, mark: dict[str, int], host: str, *words: str) -> str:
    """host logged this fault once (one line per kind of failure at most:
    never one per retry), with words in it, and that the store came back."""
    text = rig.since(mark, host)
    lines = [ln for ln in text.splitlines() if EPISODE in ln]
    assert 1 <= len(lines) <= 2, text
    for w in words:
        assert w in lines[0], lines
    print(f"\nstore-faults: log: {lines}")
    eventually(lambda: BACK in rig.since(mark, host), 30, f"{host}: the store back")
    return lines[0]


@pytest.fixture
def rig_factory(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(url: str | None = None, *, etcd: list[etcdserver.EtcdServer] | None = None,
             ttl: float = TTL) -> Rig:
        if url is None:
            lab.up(2)
            url = f"sqlite://{tmp_path}/state/state.db"
        ov = ClusterOverlay(lab, tmp_path / "agents", url,
                            host_options={"lease_ttl": ttl, "resync": 5})
        rig = Rig(lab, ov, etcd or [])
        made.append(rig)
        rig.start()
        return rig

    try:
        yield make
    finally:
        codes: dict[str, int] = {}
        for rig in made:
            for p in rig.pings:
                p.kill()
            codes.update(rig.ov.stop_all())
            for server in rig.etcd:
                server.stop()
        bad = {h: rc for h, rc in codes.items() if rc != 0}
        assert not bad, f"agents did not exit cleanly: {bad}"


def lab_etcd(lab: Lab, tmp_path: Path, **kw: Any) -> etcdserver.EtcdServer:
    """One etcd in h3's netns on its underlay address (lab.up(3) first)."""
    h3 = lab.host("h3")
    if "pki" in kw:
        kw["pki"] = etcdserver.Pki(tmp_path / "pki", ip=h3.underlay_ip)
    server = etcdserver.EtcdServer(tmp_path / "etcd", lab=lab, netns=h3.netns,
                                   ip=h3.underlay_ip, **kw)
    server.start()
    return server


# --- etcd ---------------------------------------------------------------------------------

@etcdserver.needs_etcd
def test_etcd_stopped_then_started(lab: Lab, tmp_path: Path,
                                   rig_factory: Callable[..., Rig]) -> None:
    """Unreachable: the only etcd stops (SIGTERM) for longer than the
    leases, then starts on the same data."""
    lab.up(3)
    server = lab_etcd(lab, tmp_path)
    rig = rig_factory(server.store_url, etcd=[server])
    p, mark = rig.ping(), rig.mark()
    server.stop()
    time.sleep(TTL * 3)
    rig.alive()
    server.start()
    for h in ("h1", "h2"):
        assert_one_episode(rig, mark, h, "store unreachable")
    d = rig.attach("d", "h2")
    assert rig.reaches(ip_of(d))
    report("etcd stopped", p.stop(), outage_s=TTL * 3)
    assert_forwarded(p)


@etcdserver.needs_etcd
def test_etcd_nospace_alarm(lab: Lab, tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    """etcd's space quota (1 MiB) filled until it raises the NOSPACE alarm:
    it then refuses every write.  h1 must write one (c's netns goes, its
    status says so): refused, logged once, retried; forwarding goes on.
    Compact, defrag, disarm: the status is written."""
    lab.up(3)
    server = lab_etcd(lab, tmp_path, args=("--quota-backend-bytes", str(1 << 20)))
    rig = rig_factory(server.store_url, etcd=[server])
    rig.attach("c", "h1")
    p, mark = rig.ping(), rig.mark()
    value = "x" * 100_000
    for i in range(200):
        done = server.etcdctl("put", f"/fill/{i}", value)
        if done.returncode != 0:
            assert "database space exceeded" in done.stderr, done.stderr
            break
    else:
        pytest.fail("etcd never ran out of space")
    assert "NOSPACE" in server.etcdctl("alarm", "list").stdout
    netlink.netns_remove(rig.lab.container_netns("c"))
    # A write of ours refused: the CLI says so in one line.
    refused = rig.ov.cli("network", "create", "net2", check=False)
    assert refused.returncode == 1 and "database space exceeded" in refused.stderr
    eventually(lambda: EPISODE in rig.since(mark, "h1"), 15, "h1: the write refused, logged")
    time.sleep(3)                                    # several retries
    rig.alive()
    assert rig.state("c") == "ready"     # the error status not written yet
    # What etcd's docs say to do: free space, compact, defrag, disarm.
    assert server.etcdctl("del", "--prefix", "/fill/").returncode == 0
    status = server.etcdctl("endpoint", "status", "-w", "json").stdout
    rev = re.search(r'"revision":(\d+)', status)
    assert rev, status
    for step in (["compact", rev.group(1)], ["defrag"], ["alarm", "disarm"]):
        done = server.etcdctl(*step)
        assert done.returncode == 0, (step, done.stderr)
    assert_one_episode(rig, mark, "h1", "store failing", "database space exceeded")
    eventually(lambda: rig.state("c") == "error", 10, "c's error status written")
    d = rig.attach("d", "h2")
    assert rig.reaches(ip_of(d))
    report("etcd NOSPACE", p.stop())
    assert_forwarded(p)


@etcdserver.needs_etcd
def test_etcd_permission_revoked_then_granted(lab: Lab, tmp_path: Path,
                                              rig_factory: Callable[..., Rig]) -> None:
    """RBAC: etcd over TLS with users; the agents' user loses its role
    mid-run (every call refused: StoreDenied), then gets it back."""
    lab.up(3)
    server = lab_etcd(lab, tmp_path, pki=True)
    server.enable_auth()
    assert server.pki is not None
    pw = server.password_file("uvxlan")
    url = (f"{server.store_url}&ca={server.pki.ca}&cert={server.pki.client_cert}"
           f"&key={server.pki.client_key}&user=uvxlan&password_file={pw}")
    rig = rig_factory(url, etcd=[server])
    p, mark = rig.ping(), rig.mark()
    server.role("uvxlan", grant=False)
    for h in ("h1", "h2"):
        eventually(lambda h=h: EPISODE in rig.since(mark, h), 20,   # type: ignore[misc]
                   f"{h}: the refusal logged")
    refused = rig.ov.cli("network", "create", "net2", check=False)
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    time.sleep(3)
    rig.alive()
    server.role("uvxlan", grant=True)
    for h in ("h1", "h2"):
        assert_one_episode(rig, mark, h, "store refused us", "permission denied")
    d = rig.attach("d", "h2")
    assert rig.reaches(ip_of(d))
    report("etcd permission revoked", p.stop())
    assert_forwarded(p)


@etcdserver.needs_etcd
def test_etcd_lease_revoked_by_hand(lab: Lab, tmp_path: Path,
                                    rig_factory: Callable[..., Rig]) -> None:
    """A lost lease: h1's revoked with etcdctl (its host key and statuses
    go, and h2 drops h1's endpoints): h1 takes a new one and writes them
    again, and h2 takes h1's endpoints back."""
    lab.up(3)
    server = lab_etcd(lab, tmp_path)
    rig = rig_factory(server.store_url, etcd=[server])
    lease = rig.ov.query("h1", "status")["lease"]
    p, mark = rig.ping(), rig.mark()
    t0 = time.monotonic()
    done = server.etcdctl("lease", "revoke", f"{lease:x}")
    assert done.returncode == 0, done.stderr
    back = eventually(lambda: rig.ov.query("h1", "status")["lease"] not in (0, lease)
                      and "h1" in rig.hosts(), 10, "h1 registered under a new lease")
    eventually(lambda: rig.state("a") == "ready", 10, "a's status written again")
    assert "expired or was revoked; registering again" in rig.since(mark, "h1")
    eventually(lambda: rig.reaches(rig.b_ip), 10, "a reaches b again")
    report("etcd lease revoked", p.stop(), registered_again_s=f"{back:.1f}",
           since_revoke_s=f"{time.monotonic() - t0:.1f}")
    rig.alive()


@etcdserver.needs_etcd
def test_etcd_three_members_one_killed(lab: Lab, tmp_path: Path,
                                       rig_factory: Callable[..., Rig]) -> None:
    """A 3-member etcd; the member every agent is connected to (the first
    endpoint) is killed (SIGKILL) mid-run while a ping runs and an attach
    and a detach are made; then started again.  Forwarding goes on (at
    most the odd ping lost, as in the same run without the kill), and the
    attach made while the member is down is ready and reached (each within
    10 s; the times are reported)."""
    lab.up(3)
    h3 = lab.host("h3")
    members = etcdserver.etcd_cluster(tmp_path / "etcd", 3, lab=lab, netns=h3.netns,
                                      ip=h3.underlay_ip)
    url = "etcd://" + ",".join(m.endpoint for m in members) + "?timeout=2"
    # The default lease (10 s): a request to the killed member times out
    # (2 s) before the client moves on, which a 2 s test lease cannot ride
    # out (it ended, and the hosts rightly dropped each other: 34 pings).
    rig = rig_factory(url, etcd=members, ttl=10)
    rig.attach("c", "h1")

    def run(kill: bool) -> tuple[Ping, float]:
        name = f"k{int(kill)}"
        p = rig.ping()
        if kill:
            members[0].kill()
        t0 = time.monotonic()
        d = rig.attach(name, "h2")                  # on a surviving member
        ready = eventually(lambda: rig.state(name) == "ready", 10,
                           "the attach made meanwhile ready")
        deadline = time.monotonic() + 10
        while not rig.reaches(ip_of(d)):
            assert time.monotonic() < deadline, (
                f"{name} ({d['ip']} {d['mac']}) not reached from h1 in 10 s; h1's FDB: "
                f"{rig.ov.query('h1', 'fdb')['fdb']}")
        reached = time.monotonic() - t0
        rig.ov.cli("detach", "net1", "c" if kill else name)
        time.sleep(2)
        return p.stop(), max(ready, reached)

    base, base_s = run(kill=False)
    mark = rig.mark()
    killed, killed_s = run(kill=True)
    rig.alive()
    members[0].launch()
    members[0].wait_ready(30)
    report("etcd 3 members, one killed", killed, attach_reached_s=f"{killed_s:.1f}",
           without_kill=f"{base.received}/{base.sent}", without_kill_s=f"{base_s:.1f}")
    # Forwarding rode it out as it does without a kill (both runs lose
    # the odd ping on a loaded machine; a dropped peer would lose seconds'
    # worth); the attach's own deadlines are the loops' above.
    assert_forwarded(base)
    assert_forwarded(killed)
    print(f"store-faults: h1 log during the kill: "
          f"{[ln for ln in rig.since(mark, 'h1').splitlines() if 'store' in ln]}")


# --- The embedded store ---------------------------------------------------------------------

def test_sqlite_locked(tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    """Another process holds the database's exclusive lock (BEGIN
    EXCLUSIVE) past every agent's busy timeout (5 s)."""
    rig = rig_factory()
    p, mark = rig.ping(), rig.mark()
    holder = sqlite3.connect(tmp_path / "state" / "state.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        time.sleep(12)
        rig.alive()
    finally:
        holder.close()
    for h in ("h1", "h2"):
        assert_one_episode(rig, mark, h, "store unreachable", "database is locked")
    d = rig.attach("d", "h2")
    assert rig.reaches(ip_of(d))
    report("SQLite locked", p.stop(), locked_s=12)
    assert_forwarded(p)


def corrupt(db: Path) -> None:
    """The file's every byte overwritten with garbage (its pages written
    back from the WAL first, so none of them survive there)."""
    c = sqlite3.connect(db, isolation_level=None)
    try:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        c.close()
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.write(bytes(range(256)) * (size // 256 + 1))


def test_sqlite_corrupt_then_restored(tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    """The file overwritten with garbage, then restored from a copy (cp
    over it, as a restore from backup does)."""
    rig = rig_factory()
    db = tmp_path / "state" / "state.db"
    p, mark = rig.ping(), rig.mark()
    backup = tmp_path / "backup.db"
    c = sqlite3.connect(db)
    try:
        c.execute(f"VACUUM INTO '{backup}'")
    finally:
        c.close()
    corrupt(db)
    time.sleep(6)
    rig.alive()
    report("SQLite corrupt (before the restore)", p.stop(), corrupt_s=6)
    assert_forwarded(p)
    # The copy's leases ended while the file was bad (SQLite's expire by
    # the clock): both hosts vanish at the restore and register again.
    after = rig.ping()
    shutil.copyfile(backup, db)
    for h in ("h1", "h2"):
        assert_one_episode(rig, mark, h, "store failing", "restore the file")
    eventually(lambda: rig.hosts() == {"h1", "h2"}, 15, "both registered again")
    d = rig.attach("d", "h2")
    assert rig.reaches(ip_of(d))
    report("SQLite restored (its leases expired: hosts register again)", after.stop())


def test_sqlite_corrupt_then_made_anew(tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    """The file overwritten with garbage, then removed with its -wal and
    -shm; the next command makes an empty store.  The agents register
    again and follow it: what it does not hold (net1, a, b) goes."""
    rig = rig_factory()
    db = tmp_path / "state" / "state.db"
    p, mark = rig.ping(), rig.mark()
    corrupt(db)
    time.sleep(6)
    rig.alive()
    report("SQLite corrupt (before it is made anew)", p.stop(), corrupt_s=6)
    assert_forwarded(p)
    for f in (db, db.with_name("state.db-wal"), db.with_name("state.db-shm")):
        f.unlink(missing_ok=True)
    time.sleep(1)
    assert not db.exists()                       # the agents do not make it anew
    rig.ov.cli("network", "create", "net1", "--subnet", "10.0.0.0/24")
    eventually(lambda: rig.hosts() == {"h1", "h2"}, 15, "both agents registered again")
    eventually(lambda: not rig.ov.query("h1", "stats")["ports"], 15,
               "h1 follows the new store: a goes")
    for h in ("h1", "h2"):
        assert_one_episode(rig, mark, h, "store failing", "restore the file")
    e = rig.attach("e", "h1")
    f = rig.attach("f", "h2")
    done = rig.lab.run(rig.lab.container_netns("e"),
                       ["ping", "-c", "2", "-i", "0.2", "-W", "1", ip_of(f)], timeout=10)
    assert done.returncode == 0, done.stdout
    assert ip_of(e) != ip_of(f)
