"""The control socket's server side without root: the directory checks,
the one-agent-per-name lock, the socket's mode, and each connection limit
against a fake node (tests/system/test_control_socket.py runs real agents)."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import re
import socket
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from uvxlan import config, daemon
from uvxlan.config import HostConfig
from uvxlan.daemon import ControlClaim, Daemon, bind_control, claim_control, secure_dir
from uvxlan.errors import ConfigError, UvxlanError


def host(tmp_path: Path, **kw: Any) -> HostConfig:
    return HostConfig(**{"underlay": "192.0.2.1", "name": "h1",
                         "control_dir": str(tmp_path / "run"), **kw})


def my_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


def test_control_group_setting() -> None:
    cfg = config.parse({"host": {"underlay": "192.0.2.1", "control_group": my_group()}},
                       "test")
    assert cfg.host.control_group == my_group()
    assert config.parse({"host": {"underlay": "192.0.2.1"}}, "test").host.control_group == ""
    with pytest.raises(ConfigError) as err:
        config.parse({"host": {"underlay": "192.0.2.1",
                               "control_group": "uvx-no-such-group"}}, "test")
    assert str(err.value) == ("test: [host]: control_group: no group "
                              "'uvx-no-such-group' on this host")


def test_secure_dir_makes_the_directory_0755(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        real = secure_dir(str(tmp_path / "a" / "b"))
    finally:
        os.umask(old)
    assert real == str(tmp_path / "a" / "b")
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755


def test_secure_dir_refuses_what_others_can_change(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be an absolute path"):
        secure_dir("run/uvxlan")
    d = tmp_path / "run"
    d.mkdir()
    for mode in (0o775, 0o757, 0o1777):
        d.chmod(mode)
        with pytest.raises(ConfigError) as err:
            secure_dir(str(d))
        assert str(err.value) == (f"control_dir {d}: {d} can be changed by other users "
                                  f"(owner uid {os.geteuid()}, mode {mode:04o}): refused")
    # On the way, group-writable is refused too; sticky is not (it is /tmp).
    d.chmod(0o775)
    with pytest.raises(ConfigError, match=f"{d} can be changed"):
        secure_dir(str(d / "sub"))
    d.chmod(0o1777)
    assert secure_dir(str(d / "sub")) == str(d / "sub")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        secure_dir(str(tmp_path / "file" / "run"))


def test_secure_dir_follows_links_and_checks_where_they_lead(tmp_path: Path) -> None:
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    (tmp_path / "link").symlink_to("safe")
    assert secure_dir(str(tmp_path / "link")) == str(safe)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (tmp_path / "bad").symlink_to(open_dir / "x")
    with pytest.raises(ConfigError, match=f"{open_dir} can be changed"):
        secure_dir(str(tmp_path / "bad"))
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(ConfigError, match="too many symbolic links"):
        secure_dir(str(tmp_path / "loop"))


def test_one_claim_per_name(tmp_path: Path) -> None:
    h = host(tmp_path)
    first = claim_control(h)
    try:
        assert (tmp_path / "run" / "h1.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(UvxlanError) as err:
            claim_control(h)
        assert str(err.value) == (f"agent 'h1' already runs (pid {os.getpid()}, control "
                                  f"socket {tmp_path}/run/h1.sock): refused")
        other = claim_control(host(tmp_path, name="h2"))     # another name is free
        other.release()
    finally:
        first.release()
    again = claim_control(h)          # freed by the first one's end
    again.release()
    with pytest.raises(ConfigError, match="no group 'uvx-no-such-group'"):
        claim_control(host(tmp_path, control_group="uvx-no-such-group"))


def test_socket_mode_and_stale_socket_replaced(tmp_path: Path) -> None:
    claim = claim_control(host(tmp_path))
    try:
        # A stale socket: bound by an agent that died.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(claim.socket)
        stale.close()
        Path(f"{claim.socket}.999999.tmp").write_text("")     # died before its rename
        old = os.umask(0)
        try:
            s = bind_control(claim)
        finally:
            os.umask(old)
        with s:
            st = os.lstat(claim.socket)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
            assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
                "h1.lock", "h1.sock"]
        grouped = ControlClaim(socket=claim.socket, gid=os.getgid(), lock_fd=claim.lock_fd)
        with bind_control(grouped):
            st = os.lstat(claim.socket)
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (os.getgid(), 0o660)
    finally:
        claim.release()


class FakeNode:
    """What Daemon asks of a node to answer queries."""

    def __init__(self, cfg: Any, stats: dict[str, Any]) -> None:
        self.cfg = cfg
        self.features = SimpleNamespace(gso=False)
        self._stats = stats

    def stats(self) -> dict[str, Any]:
        return self._stats


def serving(tmp_path: Path, stats: dict[str, Any] | None = None) -> tuple[Daemon, str]:
    h = host(tmp_path)
    claim = claim_control(h)
    node = FakeNode(SimpleNamespace(host=h), stats or {"networks": []})
    return Daemon(node, claim), claim.socket  # type: ignore[arg-type]


def talk(path: str, send: bytes = b"", read: bool = True) -> bytes:
    """Connect, send, and read to EOF (in a thread: blocking is fine)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        if send:
            s.sendall(send)
        data = b""
        while read and (chunk := s.recv(65536)):
            data += chunk
        return data


def run(tmp_path: Path, body: Any, stats: dict[str, Any] | None = None) -> Daemon:
    d, path = serving(tmp_path, stats)

    async def main() -> None:
        await d._serve_control()
        try:
            await body(path)
        finally:
            await d._close_control()
            d.claim.release()

    asyncio.run(main())
    return d


def test_a_request_and_an_over_long_line(tmp_path: Path) -> None:
    async def body(path: str) -> None:
        assert await asyncio.to_thread(talk, path, b'{"cmd": "stats"}\n') == (
            b'{"networks": []}\n')
        long = b'{"cmd": "' + b"x" * daemon.REQUEST_MAX + b'"}\n'
        assert await asyncio.to_thread(talk, path, long) == (
            b'{"error": "request longer than %d bytes"}\n' % daemon.REQUEST_MAX)
        assert await asyncio.to_thread(talk, path, b"[1]\n") == b'{"error": "bad request"}\n'
        # Nested past the parser's depth, yet under the line limit: an
        # error reply, not an exception out of the handler.
        deep = b"[" * (daemon.REQUEST_MAX - 2) + b"\n"
        assert await asyncio.to_thread(talk, path, deep) == b'{"error": "bad request"}\n'
        assert await asyncio.to_thread(talk, path, b'{"cmd": "stats"}\n') == (
            b'{"networks": []}\n')

    d = run(tmp_path, body)
    assert d.refused == {"busy": 0, "too_long": 1, "idle": 0, "slow_reader": 0}
    assert not Path(d.claim.socket).exists()         # removed on close


def test_idle_client_is_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "IDLE_S", 0.2)

    async def body(path: str) -> None:
        # Bytes without a newline do not keep a connection alive either.
        assert await asyncio.to_thread(talk, path, b'{"cmd"') == (
            b'{"error": "no request within 0.2 s"}\n')

    assert run(tmp_path, body).refused["idle"] == 1


def test_connections_over_the_cap_are_refused_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "CONNECTIONS_MAX", 2)

    async def body(path: str) -> None:
        held = []
        for _ in range(2):
            r, w = await asyncio.open_unix_connection(path)
            held.append((r, w))
        await asyncio.sleep(0.1)                     # both accepted and waiting
        assert await asyncio.to_thread(talk, path) == (
            b'{"error": "busy: 2 connections at once; try again"}\n')
        for _, w in held:
            w.write(b'{"cmd": "stats"}\n')
        for r, _ in held:
            assert await r.read() == b'{"networks": []}\n'
        for _, w in held:
            w.close()
        assert await asyncio.to_thread(talk, path, b'{"cmd": "stats"}\n') == (
            b'{"networks": []}\n')

    assert run(tmp_path, body).refused["busy"] == 1


def test_a_slow_reader_loses_the_reply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "SEND_S", 0.3)
    big = {"fdb": ["02:42:0a:00:00:01"] * 400_000}        # 8 MB: more than socket buffers

    async def body(path: str) -> None:
        def slow() -> int:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(path)
                s.sendall(b'{"cmd": "stats"}\n')
                got = len(s.recv(1))                 # the reply has begun
                time.sleep(1.0)                      # reads nothing past SEND_S
                try:
                    while chunk := s.recv(65536):
                        got += len(chunk)
                except ConnectionResetError:
                    pass
                return got

        got = await asyncio.to_thread(slow)
        assert got < len(str(big))

    d = run(tmp_path, body, big)
    assert d.refused["slow_reader"] == 1


def test_status_reports_refusals(tmp_path: Path) -> None:
    async def body(path: str) -> None:
        reply = await asyncio.to_thread(talk, path, b'{"cmd": "status"}\n')
        assert re.search(rb'"control_refused": \{"busy": 0, "too_long": 0, "idle": 0, '
                         rb'"slow_reader": 0\}', reply), reply

    run(tmp_path, body)


def test_stop_with_a_client_connected_is_clean(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Connections still open when the agent stops are ended, not left for
    the loop to cancel (which Python 3.11 logs as an error)."""
    held: list[asyncio.StreamWriter] = []

    async def body(path: str) -> None:
        _, w = await asyncio.open_unix_connection(path)
        held.append(w)
        await asyncio.sleep(0.1)                     # accepted, waiting for a line

    run(tmp_path, body)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


NOBODY = 65534

def ask_as_another_user(path: str, request: bytes) -> bytes:
    """The reply to request from a peer that is neither root nor the
    agent's user (a control_group member's view of the socket)."""
    if os.geteuid() != 0:           # then this process is such a peer already
        return talk(path, request)
    os.chmod(path, 0o666)           # its mode or group let the peer connect
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                    # the child: syscalls only, then _exit
        code = 1
        try:
            os.close(r)
            # From inside the directory: its parents (pytest's) are closed
            # to that user.
            os.chdir(os.path.dirname(path))
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(w, talk(os.path.basename(path), request))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    return reply


def test_leave_is_for_root_alone(tmp_path: Path) -> None:
    """A member of control_group may watch the agent, not make it remove
    every container's eth0: leave is refused by the peer's uid (SO_PEERCRED)."""
    async def body(path: str) -> None:
        reply = await asyncio.to_thread(ask_as_another_user, path, b'{"cmd": "leave"}\n')
        assert reply == b'{"error": "leave: permission denied; run as root"}\n'
        assert not d.leaving and not d._stop.is_set()
        # Reading stays open to such a peer.
        reply = await asyncio.to_thread(ask_as_another_user, path, b'{"cmd": "stats"}\n')
        assert reply == b'{"networks": []}\n'
        if os.geteuid() == 0:
            reply = await asyncio.to_thread(talk, path, b'{"cmd": "leave"}\n')
            assert json.loads(reply)["leaving"] is True
            assert d.leaving and d._stop.is_set()

    d, path = serving(tmp_path)

    async def main() -> None:
        await d._serve_control()
        try:
            await body(path)
        finally:
            await d._close_control()
            d.claim.release()

    asyncio.run(main())


class RunningNode(FakeNode):
    """What Daemon.run asks of a node; its endpoint check fails (a bug)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg, {"networks": []})
        self.endpoints: list[object] = []
        self.networks: list[object] = []
        self.features = SimpleNamespace(describe=lambda: "none")
        self.checks = 0
        self.served = False

    def serve(self, loop: object) -> None:
        self.served = True

    def unserve(self) -> None:
        self.served = False

    def settle(self, wanted: object = None) -> None:
        pass

    def age(self) -> None:
        pass

    def check_endpoints(self) -> list[tuple[object, str | None]]:
        self.checks += 1
        raise RuntimeError("a bug in the endpoint check")


def test_a_failing_background_task_neither_ends_silently_nor_skips_the_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The endpoint checker keeps running past a failure (logged once), and
    the stop still unserves the node and removes the control socket (the
    task's exception used to end it there)."""
    monkeypatch.setattr(daemon, "ENDPOINT_CHECK_S", 0.02)
    h = host(tmp_path, threads=False)
    claim = claim_control(h)
    node = RunningNode(SimpleNamespace(host=h, networks=[]))
    d = Daemon(node, claim)  # type: ignore[arg-type]

    async def main() -> None:
        running = asyncio.create_task(d.run())
        async with asyncio.timeout(10):
            while node.checks < 3:
                await asyncio.sleep(0.02)
        assert Path(claim.socket).exists() and node.served
        d._stop.set()
        async with asyncio.timeout(10):
            await running            # no exception out of the stop

    try:
        asyncio.run(main())
    finally:
        claim.release()
    assert not node.served and not Path(claim.socket).exists()
    told = [r for r in caplog.records if "checking endpoints failed" in r.getMessage()]
    assert len(told) == 1


def test_fault_is_for_root_alone(tmp_path: Path) -> None:
    """Injecting faults changes what the agent forwards: refused to a
    control_group member by the peer's uid, as leave is; listing them
    (faults) is a read, open to such a peer."""
    async def body(path: str) -> None:
        ask = b'{"cmd": "fault", "set": {"peer": "10.0.0.2", "loss": 5}}\n'
        reply = await asyncio.to_thread(ask_as_another_user, path, ask)
        assert reply == b'{"error": "fault: permission denied; run as root"}\n'
        reply = await asyncio.to_thread(ask_as_another_user, path, b'{"cmd": "faults"}\n')
        assert b"permission denied" not in reply
        if os.geteuid() == 0:
            # The fake node has no datapath: the request got as far as that.
            reply = await asyncio.to_thread(talk, path, ask)
            assert json.loads(reply) == {"error": "fault: the datapath is not running"}

    d, path = serving(tmp_path)
    d.node.dp = None  # type: ignore[attr-defined]

    async def main() -> None:
        await d._serve_control()
        try:
            await body(path)
        finally:
            await d._close_control()
            d.claim.release()

    asyncio.run(main())
