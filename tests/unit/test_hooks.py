"""The hook client (uvxlan.hooks) against a fake agent: a Unix socket
served by a thread that speaks the session's wire format, so the API's
verdicts, rewrites, injections and failures are checked byte for byte
without root.  The real agent is tests/system/test_hooks.py's."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uvxlan import hooks
from uvxlan.errors import ConfigError, UvxlanError
from uvxlan.hooks import DROP, PASS, Frame, Verdict, rewrite

ETH = bytes.fromhex("ffffffffffff" "020000000001" "0806") + b"a" * 28


class FakeAgent:
    """Accepts one session, sends `frames` (direction, port, data), reads
    until the client closes, and keeps what it got."""

    def __init__(self, path: Path, frames: list[tuple[int, int, bytes]],
                 hello: dict[str, Any] | None = None) -> None:
        self.path = str(path)
        self.frames = frames
        self.hello = hello or {"hook": 1, "network": "net1", "vni": 100, "ports": []}
        self.request: dict[str, Any] = {}
        self.got: list[tuple[int, int, int, int, bytes]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rb") as rd:
            self.request = json.loads(rd.readline())
            conn.sendall(json.dumps(self.hello).encode() + b"\n")
            if "error" in self.hello:
                return
            for seq, (direction, port, data) in enumerate(self.frames, 1):
                conn.sendall(hooks.HEADER.pack(hooks.MSG_FRAME, direction, seq, port,
                                               0x0A4D0002 if direction == hooks.FROM_WIRE
                                               else 0, len(data)) + data)
            conn.shutdown(socket.SHUT_WR)
            while head := rd.read(hooks.HEADER.size):
                kind, code, seq, port, _, length = hooks.HEADER.unpack(head)
                self.got.append((kind, code, seq, port, rd.read(length)))

    def close(self) -> None:
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def agent_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "h1.sock"


def test_verdicts_rewrites_and_injections_go_back_in_order(agent_path: Path) -> None:
    agent = FakeAgent(agent_path, [(hooks.FROM_PORT, 3, ETH), (hooks.FROM_WIRE, -1, ETH),
                                   (hooks.FROM_PORT, 3, ETH)])
    seen: list[Frame] = []

    def hook(frame: Frame) -> Verdict | None:
        seen.append(frame)
        if len(seen) == 1:
            frame.inject(ETH[::-1], to="container")    # to its own port, 3
            return None                               # taken as PASS
        if len(seen) == 2:
            frame.inject(ETH, port=5)
            return DROP
        return rewrite(ETH + b"z")

    stats = hooks.attach(hook, agent=str(agent_path), network="net1", ethertype=0x0806)
    agent.close()
    assert agent.request == {"cmd": "hook", "network": "net1", "ethertype": 0x0806,
                             "mac": None, "direction": "both", "timeout": 0.25,
                             "fail": "drop"}
    assert [(f.direction, f.port, f.remote) for f in seen] == [
        ("from-port", 3, None), ("from-wire", None, "10.77.0.2"), ("from-port", 3, None)]
    assert seen[0].ethertype == 0x0806 and seen[0].src == "02:00:00:00:00:01"
    assert agent.got == [
        (hooks.MSG_VERDICT, hooks.VERDICT_PASS, 1, 0, b""),
        (hooks.MSG_INJECT, hooks.INJECT_CONTAINER, 0, 3, ETH[::-1]),
        (hooks.MSG_VERDICT, hooks.VERDICT_DROP, 2, 0, b""),
        (hooks.MSG_INJECT, hooks.INJECT_NETWORK, 0, 5, ETH),
        (hooks.MSG_VERDICT, hooks.VERDICT_REWRITE, 3, 0, ETH + b"z"),
    ]
    assert (stats.frames, stats.passed, stats.dropped, stats.rewritten, stats.injected) == \
        (3, 1, 1, 1, 2)


def test_a_hook_that_raises_gets_the_fail_verdict(agent_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    agent = FakeAgent(agent_path, [(hooks.FROM_PORT, 1, ETH)] * 2)

    def hook(frame: Frame) -> Verdict:
        raise RuntimeError("bug in the hook")

    stats = hooks.attach(hook, agent=str(agent_path), network="net1", fail="pass")
    agent.close()
    assert [g[1] for g in agent.got] == [hooks.VERDICT_PASS] * 2
    assert stats.errors == 2
    err = capsys.readouterr().err
    assert err.count("RuntimeError: bug in the hook") == 1   # told once, not per frame


def test_the_agents_refusal_is_one_line(agent_path: Path) -> None:
    agent = FakeAgent(agent_path, [], hello={"error": "hook: no network 'x' on this agent"})
    with pytest.raises(UvxlanError, match="^agent: hook: no network 'x'"):
        hooks.attach(lambda f: PASS, agent=str(agent_path), network="x")
    agent.close()


def test_no_agent_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UvxlanError, match="no agent answers at"):
        hooks.attach(lambda f: PASS, agent=str(tmp_path / "none.sock"), network="n")


@pytest.mark.parametrize(("kw", "message"), [
    ({"direction": "sideways"}, "direction 'sideways'"),
    ({"fail": "maybe"}, "fail 'maybe'"),
    ({"timeout": 0}, "timeout 0"),
    ({"ethertype": "0x10000"}, "ethertype '0x10000'"),
    ({"ethertype": "arp"}, "ethertype 'arp'"),
    ({"mac": "02:00:00:00:00"}, "mac '02:00:00:00:00'"),
])
def test_requests_are_checked_before_sending(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        hooks.hook_request("net1", **kw)


def test_ethertypes_and_macs_as_given() -> None:
    assert hooks.parse_ethertype("0x0806") == hooks.parse_ethertype(2054) == 0x0806
    assert hooks.parse_mac("FF-FF-FF-FF-FF-FF") == "ff:ff:ff:ff:ff:ff"   # broadcast is fine


def test_frames_and_verdicts_refuse_what_c_would() -> None:
    f = Frame(data=ETH, network="n", direction="from-wire", port=None, remote="10.0.0.1")
    with pytest.raises(ValueError, match="name a port"):
        f.inject(ETH)
    with pytest.raises(ValueError, match="13 bytes"):
        rewrite(ETH[:13])
    with pytest.raises(ValueError, match="expected 'network' or 'container'"):
        f.inject(ETH, port=1, to="wire")  # type: ignore[arg-type]


def test_load_hook_from_a_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "h.py"
    path.write_text("from uvxlan.hooks import PASS\ndef hook(frame):\n    return PASS\n")
    assert hooks.load_hook(f"{path}:hook")(None) is PASS  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has no function 'nothere'"):
        hooks.load_hook(f"{path}:nothere")
    with pytest.raises(ConfigError, match="expected module:function"):
        hooks.load_hook("justamodule")
    with pytest.raises(ConfigError, match="No module named"):
        hooks.load_hook("uvxlan_no_such_module:f")
