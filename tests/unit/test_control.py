"""The control socket's client (uvxlan.control) and the commands that use
it, against a fake agent: one thread answering on a Unix socket in a tmp
dir.  No root; and no C fast path loaded, which these commands never need.
"""

from __future__ import annotations

import grp
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uvxlan.control import query_agent
from uvxlan.errors import UvxlanError

ROOT = Path(__file__).resolve().parents[2]

STATS: dict[str, Any] = {
    "drops": {"truncated": 0, "unknown_vni": 3, "tap_full": 0},
    "networks": [{"name": "net1", "vni": 42, "arp_replies": 1, "rx_packets": 10,
                  "rx_bytes": 1000, "tx_packets": 20, "tx_bytes": 2000,
                  "drops": {"no_destination": 2},
                  "limits": {"learn_limit": 5, "fdb_full": 0, "flood_full": 0,
                             "arp_full": 0}},
                 {"name": "net2", "vni": 43, "arp_replies": 0, "rx_packets": 0,
                  "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0, "drops": {}}],
    "ports": [{"port": 0, "network": "net1", "netns": "c1", "ifname": "eth0",
               "mac": "02:00:00:00:00:01", "rx_packets": 5, "rx_bytes": 500,
               "tx_packets": 6, "tx_bytes": 600, "drops": {"tap_full": 4}}],
}
FDB: dict[str, Any] = {"fdb": [
    {"vni": 42, "mac": "02:00:00:00:00:02", "static": True, "port": None,
     "remote": "192.0.2.2", "remote_port": 4789, "age_s": 1.5, "idle_s": 0.5,
     "network": "net1", "source": "store"},
    {"vni": 43, "mac": "02:00:00:00:00:01", "static": True, "port": 0, "remote": None,
     "remote_port": None, "age_s": 2.0, "idle_s": 0.0, "network": "net2",
     "source": "local"},
]}


class FakeAgent:
    """Answers each connection's one request line as the agent does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline()
                self.requests.append(line)
                cmd = json.loads(line).get("cmd")
                reply = {"stats": STATS, "fdb": FDB}.get(
                    cmd, {"error": f"unknown command {cmd!r}"})
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(tmp_path / "h1.sock")
    try:
        yield fake
    finally:
        fake.close()


# What the child process runs: the command, then a check that neither the C
# fast path nor its wrapper (nor the agent's modules) were imported.
CHILD = """\
import sys
from uvxlan.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in ("uvxlan._native", "uvxlan.native", "uvxlan.node",
                            "uvxlan.daemon", "cffi") if m in sys.modules)
print("LOADED", loaded, file=sys.stderr)
sys.exit(rc)
"""


def uvxlan(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_stats_reads_the_socket_without_loading_the_fast_path(agent: FakeAgent) -> None:
    done = uvxlan("stats", "--agent", agent.path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "LOADED []"
    assert agent.requests == [b'{"cmd": "stats"}\n']
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["network", "vni", "rx", "pkts", "rx", "bytes", "tx", "pkts",
                                "tx", "bytes", "drops"]
    assert lines[1].split() == ["net1", "42", "10", "1000", "20", "2000",
                                "no_destination=2"]
    assert lines[2].split() == ["net2", "43", "0", "0", "0", "0", "none"]
    assert lines[4].split() == ["port", "endpoint", "from", "ctr", "to", "ctr", "drops"]
    assert lines[5].split() == ["0", "c1/eth0", "(net1)", "5", "6", "tap_full=4"]
    assert lines[-2] == "drops: unknown_vni=3"
    # Limits reached, per network (an agent from before issue 10 has none).
    assert lines[-1] == "limits reached: net1: learn_limit=5"


def test_stats_json_is_the_agents_answer(agent: FakeAgent) -> None:
    done = uvxlan("stats", "--agent", agent.path, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == STATS


def test_fdb_show_reads_the_socket_without_loading_the_fast_path(agent: FakeAgent) -> None:
    done = uvxlan("fdb", "show", "--agent", agent.path, "--network", "net1")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "LOADED []"
    assert agent.requests == [b'{"cmd": "fdb"}\n']
    rows = [ln.split() for ln in done.stdout.splitlines()]
    assert rows[1:] == [["net1", "42", "02:00:00:00:00:02", "static", "store",
                         "192.0.2.2:4789", "1.5"]]


def test_no_agent_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "h9.sock"
    done = uvxlan("stats", "--agent", str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == f"uvxlan: error: no agent answers at {path}"
    with pytest.raises(UvxlanError, match="no agent answers at"):
        query_agent(str(path), "stats")


def test_an_agents_refusal_is_an_error(agent: FakeAgent) -> None:
    with pytest.raises(UvxlanError, match=r"^agent: unknown command 'frob'$"):
        query_agent(agent.path, "frob")
    assert query_agent(agent.path, "stats") == STATS


def test_an_agent_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen(1)                     # accepts, never answers
        with pytest.raises(UvxlanError, match=r"no answer within 0.2 s"):
            query_agent(str(path), "stats", timeout=0.2)


def test_who_may_connect_names_the_sockets_group(tmp_path: Path) -> None:
    from uvxlan.control import who_may_connect

    path = tmp_path / "h1.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    path.chmod(0o600)
    assert who_may_connect(str(path)) == "run as root"
    # A group of the socket's: one this user may give it (root: any).
    gid = 65534 if os.geteuid() == 0 else os.getgid()
    os.chown(path, -1, gid)
    assert who_may_connect(str(path)) == "run as root"          # 0600: not for the group
    path.chmod(0o660)
    try:
        name = grp.getgrgid(gid).gr_name
    except KeyError:
        name = str(gid)
    assert who_may_connect(str(path)) == f"run as root or as a member of group {name}"
    assert who_may_connect(str(tmp_path / "missing.sock")) == "run as root"


def test_an_answer_cut_off_is_one_line(tmp_path: Path) -> None:
    """The agent ends a slow reader's connection mid-reply: the client says
    so instead of calling the rest garbage."""
    path = tmp_path / "cut.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(1)

        def answer_half() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.makefile("rb").readline()
                conn.sendall(b'{"fdb": [1, 2')

        t = threading.Thread(target=answer_half)
        t.start()
        with pytest.raises(UvxlanError) as err:
            query_agent(str(path), "fdb")
        t.join()
    assert str(err.value) == (f"agent at {path}: the answer was cut off after 13 bytes "
                              "(too slow to read it)")
