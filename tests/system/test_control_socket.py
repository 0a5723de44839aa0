"""The control socket against local users: real agents in a lab.

The socket is root's (0600) or one group's (0660) in a directory only root
can change; a second agent of a live name is refused and the first goes on
forwarding; a SIGKILLed agent's socket is taken over; over-long lines,
idle clients and more connections than the cap are each ended and the
agent answers afterwards; a user without access gets one line.  Clients
that are not root run in a forked child that really drops to uid 65534
(the venv's interpreter lives under /root, which that user cannot read).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ping, root
from uvxlan import cli, netlink
from uvxlan.control import query_agent
from uvxlan.daemon import CONNECTIONS_MAX, IDLE_S, LOOP_NICE, REQUEST_MAX
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import AgentProcs

pytestmark = root

NOBODY = 65534          # uid and gid of nobody/nogroup on Debian
OTHER_GID = 65533       # a gid that is not nogroup's


@dataclass
class Agents(AgentProcs):
    """Agents of one lab host each, their control sockets in control_dir."""

    lab: Lab
    workdir: Path
    control_dir: Path
    agent_prefix: list[str] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def control_socket(self, host: str) -> str:
        return str(self.control_dir / f"{self.lab.name}-{host}.sock")

    def file(self, host: str, suffix: str) -> Path:
        return self.workdir / f"{host}{suffix}"

    def config(self, host: str, peer: str, container: str, address: str) -> Path:
        """host's config: network n (VNI 42) flooding to peer, one endpoint."""
        path = self.file(host, ".toml")
        path.write_text(
            f'[host]\nname = "{self.lab.name}-{host}"\n'
            f'underlay = "{self.lab.host(host).underlay_ip}"\n'
            f'control_dir = "{self.control_dir}"\n\n'
            f'[[network]]\nname = "n"\nvni = 42\n'
            f'remotes = ["{self.lab.host(peer).underlay_ip}"]\n\n'
            f'[[endpoint]]\nnetwork = "n"\nnetns = "{self.lab.container_netns(container)}"\n'
            f'address = "{address}"\n')
        return path

    def start(self, host: str, *flags: str) -> subprocess.Popen[bytes]:
        return self._spawn(host, ["--config", str(self.file(host, ".toml")), *flags],
                           15.0, lambda st: True)

    def run_again(self, host: str, *flags: str) -> subprocess.CompletedProcess[str]:
        """A second agent with host's config, to completion."""
        return self.lab.run(self.lab.host(host).netns,
                            [sys.executable, "-m", "uvxlan", "agent",
                             "--config", str(self.file(host, ".toml")), *flags], timeout=20)


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """A control directory that does not exist yet, under a root-owned 0755
    directory in /tmp: the agent must make it, and uid 65534 can reach it."""
    base = Path(tempfile.mkdtemp(prefix="uvx-ctl-"))
    try:
        base.chmod(0o755)
        yield base / "run"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def agents(lab: Lab, tmp_path: Path, control_dir: Path) -> Iterator[Agents]:
    """Two lab hosts, c1 on h1 (10.0.0.1) and c2 on h2 (10.0.0.2), configs
    written; the test starts the agents.  Stopped at the end, cleanly."""
    lab.up(2)
    lab.add_container("c1")
    lab.add_container("c2")
    ag = Agents(lab, tmp_path, control_dir)
    ag.config("h1", "h2", "c1", "10.0.0.1/24")
    ag.config("h2", "h1", "c2", "10.0.0.2/24")
    try:
        yield ag
    finally:
        codes = ag.stop_all()
        assert all(c == 0 for c in codes.values()), codes


def one_line_error(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvxlan: error: "), stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def as_user(uid: int, gid: int, argv: list[str]) -> tuple[int, str, str]:
    """Run ``uvxlan ARGV`` (cli.main, already imported) in a forked child
    that dropped to uid/gid with no supplementary groups: exit code,
    stdout, stderr."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # the child
        rc = 99
        try:
            # pytest's capture replaced sys.stdout/err: write to the pipes.
            sys.stdout = os.fdopen(out_w, "w")
            sys.stderr = os.fdopen(err_w, "w")
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            rc = cli.main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


def connect(path: str, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The agent's descriptors once connections just ended are closed."""
    n = open_fds(pid)
    while True:
        time.sleep(0.2)
        m, n = n, open_fds(pid)
        if m == n:
            return n


def test_socket_and_directory_modes(agents: Agents, control_dir: Path) -> None:
    """Root only by default: the directory is made 0755 root's, the socket
    is 0600 root's, the lock holds the agent's pid; a non-root user is
    refused with one line that says what to do."""
    assert not control_dir.exists()
    proc = agents.start("h1")
    d = control_dir.stat()
    assert (d.st_uid, stat.S_IMODE(d.st_mode)) == (0, 0o755)
    path = agents.control_socket("h1")
    s = os.lstat(path)
    assert stat.S_ISSOCK(s.st_mode)
    assert (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) == (0, 0, 0o600)
    lock = control_dir / f"{agents.lab.name}-h1.lock"
    assert lock.read_text().strip() == str(proc.pid)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    # Nothing else in the directory but the state file (root's, 0600, once
    # the agent has something to keep): no temporary name left behind.
    state = control_dir / f"{agents.lab.name}-h1.state"
    assert {p.name for p in control_dir.iterdir()} - {state.name} == {Path(path).name,
                                                                       lock.name}
    if state.exists():
        st = state.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)

    rc, out, err = as_user(NOBODY, NOBODY, ["stats", "--agent", path])
    assert rc == 1 and out == ""
    assert one_line_error(err) == (f"uvxlan: error: permission denied: {path}; "
                                   "run as root")
    assert query_agent(path, "status")["pid"] == proc.pid


def test_control_group(agents: Agents) -> None:
    """--control-group: the socket is 0660 with that group; its members may
    ask, other users are refused with one line naming the group."""
    agents.start("h1", "--control-group", "nogroup")
    path = agents.control_socket("h1")
    s = os.lstat(path)
    assert (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) == (0, NOBODY, 0o660)

    rc, out, err = as_user(NOBODY, NOBODY, ["stats", "--agent", path, "--json"])
    assert rc == 0, err
    assert '"networks"' in out
    rc, out, err = as_user(NOBODY, OTHER_GID, ["stats", "--agent", path])
    assert rc == 1 and out == ""
    assert one_line_error(err) == (f"uvxlan: error: permission denied: {path}; "
                                   "run as root or as a member of group nogroup")


def test_unknown_group_is_one_line(agents: Agents) -> None:
    done = agents.run_again("h1", "--control-group", "uvx-no-such-group")
    assert done.returncode == 1
    one_line_error(done.stderr, "control_group", "no group 'uvx-no-such-group'")
    assert not netlink.link_index("eth0", netns=agents.lab.container_netns("c1"))


def test_directory_others_can_change_is_refused(agents: Agents, control_dir: Path) -> None:
    """A control directory group or others may write, one another user
    owns, or one reached through a directory another user owns: refused
    with one line, before anything is made."""
    netns = agents.lab.container_netns("c1")
    control_dir.mkdir(mode=0o700)
    control_dir.chmod(0o777)
    done = agents.run_again("h1")
    assert done.returncode == 1
    one_line_error(done.stderr, f"{control_dir} can be changed by other users",
                   "mode 0777")
    control_dir.chmod(0o755)
    os.chown(control_dir, NOBODY, NOBODY)
    one_line_error(agents.run_again("h1").stderr, "owner uid 65534")
    # A symbolic link in a directory a user owns: the user could point it
    # anywhere, later.
    os.chown(control_dir, 0, 0)
    user_dir = control_dir.parent / "user"
    user_dir.mkdir()
    os.chown(user_dir, NOBODY, NOBODY)
    (user_dir / "link").symlink_to(control_dir)
    cfg = agents.file("h1", ".toml")
    cfg.write_text(cfg.read_text().replace(f'"{control_dir}"', f'"{user_dir}/link"'))
    one_line_error(agents.run_again("h1").stderr, f"{user_dir} can be changed")
    assert not netlink.link_index("eth0", netns=netns)
    assert not list(control_dir.iterdir())


def test_second_agent_of_a_live_name_is_refused(agents: Agents) -> None:
    """The same config again: the second agent stops at the lock, before
    TAP or bind, with one line naming the live agent's pid; the first keeps
    its socket (same inode) and goes on forwarding."""
    first = agents.start("h1")
    agents.start("h2")
    c1 = agents.lab.container_netns("c1")
    assert ping(agents.lab, c1, "10.0.0.2") == 3
    path = agents.control_socket("h1")
    inode = os.lstat(path).st_ino
    eth0 = netlink.link_index("eth0", netns=c1)

    done = agents.run_again("h1")
    assert done.returncode == 1
    line = one_line_error(done.stderr, f"agent '{agents.lab.name}-h1' already runs",
                          f"pid {first.pid}", path)
    assert "in use" not in line and "exists" not in line     # stopped before bind, TAP

    assert first.poll() is None
    assert os.lstat(path).st_ino == inode
    assert query_agent(path, "status")["pid"] == first.pid
    assert netlink.link_index("eth0", netns=c1) == eth0
    assert ping(agents.lab, c1, "10.0.0.2") == 3


def test_killed_agents_socket_is_replaced(agents: Agents) -> None:
    """SIGKILL leaves the socket and the lock file behind; the next agent
    of that name takes both over silently and answers there."""
    first = agents.start("h1")
    path = agents.control_socket("h1")
    agents.kill("h1")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)           # stale, nobody listens
    second = agents.start("h1")
    assert second.pid != first.pid
    assert query_agent(path, "status")["pid"] == second.pid
    assert "already runs" not in agents.log_tail("h1", 50)
    agents.start("h2")
    assert ping(agents.lab, agents.lab.container_netns("c1"), "10.0.0.2") == 3


def test_limits_end_connections_and_the_agent_answers_after(agents: Agents) -> None:
    """An over-long line gets an error line and the end; an idle client is
    ended after IDLE_S; with CONNECTIONS_MAX clients connected, the next is
    refused at once; a flood of connections costs no more descriptors than
    the cap.  The agent answers after each."""
    proc = agents.start("h1")
    path = agents.control_socket("h1")

    with connect(path) as s:
        s.sendall(b"x" * (REQUEST_MAX + 1))
        assert read_to_eof(s) == (b'{"error": "request longer than %d bytes"}\n'
                                  % REQUEST_MAX)
    assert query_agent(path, "status")["pid"] == proc.pid

    with connect(path, timeout=IDLE_S + 10) as s:
        start = time.monotonic()
        assert read_to_eof(s) == b'{"error": "no request within %g s"}\n' % IDLE_S
        idle = time.monotonic() - start
    assert IDLE_S - 0.5 <= idle <= IDLE_S + 5, idle
    assert query_agent(path, "status")["pid"] == proc.pid

    base = settled_fds(proc.pid)
    held = [connect(path) for _ in range(CONNECTIONS_MAX)]
    try:
        # The agent has taken them all (one fd each) before the next comes.
        deadline = time.monotonic() + 15
        while open_fds(proc.pid) < base + CONNECTIONS_MAX and time.monotonic() < deadline:
            time.sleep(0.02)
        assert open_fds(proc.pid) >= base + CONNECTIONS_MAX
        with connect(path, timeout=5) as s:
            assert read_to_eof(s) == (b'{"error": "busy: %d connections at once; '
                                      b'try again"}\n' % CONNECTIONS_MAX)
        # A flood: 300 clients that connect and hold on.  Those the
        # listen backlog has no room for, the kernel refuses (EAGAIN).
        flood = []
        for _ in range(300):
            f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            flood.append(f)
            with suppress(BlockingIOError):
                f.connect(path)
        try:
            time.sleep(0.5)
            peak = open_fds(proc.pid)
        finally:
            for f in flood:
                f.close()
        assert peak <= base + CONNECTIONS_MAX + 4, (base, peak)
        status = None
        for f in held:
            f.close()
        deadline = time.monotonic() + 5
        while status is None and time.monotonic() < deadline:
            try:
                status = query_agent(path, "status")
            except Exception:   # noqa: BLE001 - still busy: the held ones are ending
                time.sleep(0.05)
    finally:
        for f in held:
            f.close()
    assert status is not None and status["pid"] == proc.pid
    refused = status["control_refused"]
    assert refused["too_long"] == 1 and refused["idle"] >= 1
    assert refused["busy"] >= 1
    deadline = time.monotonic() + 5
    while open_fds(proc.pid) > base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds(proc.pid) <= base


def nice_of(pid: int, tid: int) -> int:
    stat_line = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat_line.rsplit(")", 1)[1].split()[16])    # field 19: nice


def test_datapath_threads_outrank_the_loop(agents: Agents) -> None:
    """The loop thread (control socket, controller) runs at LOOP_NICE; the
    datapath threads, started before, keep the agent's priority, so a flood
    of queries yields the CPU to them (benchmarks/control_load.py)."""
    proc = agents.start("h1")
    tids = sorted(int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir())
    nices = {tid: nice_of(proc.pid, tid) for tid in tids}
    assert nices[proc.pid] == LOOP_NICE
    assert sum(1 for n in nices.values() if n == 0) >= 2, nices     # the TX and RX threads
