"""A real etcd for tests: one member on 127.0.0.1 with free ports and its
own data dir, stopped by pid.  Test modules reuse the fixture with

    from tests.support import etcdserver
    etcd_server = etcdserver.etcd_server      # module-scoped: one per module

and skip with ``etcdserver.needs_etcd`` where /usr/bin/etcd is missing.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from uvxlan.lab.netns import terminate
from uvxlan.lab.overlay import ETCD as ETCD_PATH
from uvxlan.lab.overlay import etcd_argv

ETCD = Path(ETCD_PATH)

needs_etcd = pytest.mark.skipif(not ETCD.exists(),
                                reason=f"needs {ETCD} (Debian package etcd-server)")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdServer:
    """One etcd member on 127.0.0.1, free ports, its own data dir.  Short
    heartbeat and election times make its minimum lease TTL 1 s."""

    def __init__(self, base: Path) -> None:
        self.name = "uvx" + secrets.token_hex(4)
        self.data_dir = base / "etcd-data"
        self.logfile = base / "etcd.log"
        self.client_port, self.peer_port = free_ports(2)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def store_url(self) -> str:
        """The uvxlan store URL of this server."""
        return f"etcd://127.0.0.1:{self.client_port}?timeout=2"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = etcd_argv(self.name, self.data_dir, self.client_url, peer)
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_ready(20.0)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"etcd did not answer on {self.client_url} in {timeout} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; by pid."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, 5)


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd server for the module using it; stopped at its end."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
