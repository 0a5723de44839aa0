"""Shared fixtures.  Tests that need namespaces, TAPs or raw sockets are
marked ``root`` and skip cleanly without it; every lab they make has a
unique name and is removed even when the test fails."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Overlay, Placement

IS_ROOT = os.geteuid() == 0

root = pytest.mark.skipif(not IS_ROOT, reason="needs root (namespaces, TAP, raw sockets)")


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


def unique_name() -> str:
    """A lab name no other test (or run) uses."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A lab with a unique name; the test calls lab.up(n).  Always removed."""
    if not IS_ROOT:
        pytest.skip("needs root")
    the_lab = Lab(unique_name())
    try:
        yield the_lab
    finally:
        the_lab.down()
        assert not the_lab.namespaces(), "lab left namespaces behind"
        assert not os.path.exists(the_lab.state_path), "lab left its state file behind"


OverlayFactory = Callable[..., Overlay]


@pytest.fixture
def overlay(lab: Lab, tmp_path: Path) -> Iterator[OverlayFactory]:
    """Build an overlay on the lab: hosts, containers, agents.  The agents
    are stopped (SIGTERM) at the end and must exit cleanly."""
    made: list[Overlay] = []

    def make(networks: dict[str, int], placements: list[Placement], *,
             hosts: int = 2, run: list[str] | None = None, **kw: object) -> Overlay:
        lab.up(hosts)
        for p in placements:
            lab.add_container(p.container)
        names = [f"h{i + 1}" for i in range(hosts)]
        ov = Overlay(lab, tmp_path, networks, placements,
                     hosts=names if run is None else run, **kw)  # type: ignore[arg-type]
        made.append(ov)
        ov.start_all()
        return ov

    try:
        yield make
    finally:
        codes: dict[str, int] = {}
        for ov in made:
            codes.update(ov.stop_all())
        bad = {h: c for h, c in codes.items() if c != 0}
        assert not bad, f"agents did not exit cleanly: {bad}"


TOOLS = Path(__file__).resolve().parent / "support" / "tools"


def ping(lab: Lab, netns: str, ip: str, count: int = 3, interval: float = 0.2) -> int:
    """Replies received for `count` pings from netns to ip."""
    import re

    done = lab.run(netns, ["ping", "-c", str(count), "-i", str(interval), "-W", "1", ip],
                   timeout=count * interval + 10)
    m = re.search(r"(\d+) received", done.stdout)
    return int(m.group(1)) if m else 0


def checked_transfer(lab: Lab, client_ns: str, server_ns: str, server_ip: str,
                     nbytes: int, port: int = 5201, timeout: float = 120.0) -> None:
    """Send nbytes over TCP and assert the server got exactly them (sha256)."""
    import json
    import subprocess
    import sys

    server = lab.spawn(server_ns, [sys.executable, str(TOOLS / "tcpcheck.py"), "server",
                                   server_ip, str(port), str(timeout)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        assert server.stderr.readline().strip() == "listening"
        client = lab.run(client_ns, [sys.executable, str(TOOLS / "tcpcheck.py"), "client",
                                     server_ip, str(port), str(nbytes), "7", str(timeout)],
                         timeout=timeout + 10)
        assert client.returncode == 0, client.stderr
        out, err = server.communicate(timeout=timeout)
        assert server.returncode == 0, err
        sent, got = json.loads(client.stdout), json.loads(out)
        assert got == sent and sent["bytes"] == nbytes
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)
