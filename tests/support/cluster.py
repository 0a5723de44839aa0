"""Agents on lab hosts sharing one store, driven through the CLI: what the
control-plane system tests build on (the ``cluster`` fixture of
tests/system/conftest.py makes them, once per backend)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay, LabEtcd

TTL = 2                     # agents' lease TTL in these tests (seconds)


class Cluster:
    """A lab of agent hosts h1..hN on one store, driven through the CLI."""

    def __init__(self, lab: Lab, tmp: Path, backend: str, hosts: int) -> None:
        self.lab = lab
        self.names = [f"h{i + 1}" for i in range(hosts)]
        lab.up(hosts + (backend == "etcd"))
        self.etcd: LabEtcd | None = None
        if backend == "etcd":
            self.etcd = LabEtcd(lab, f"h{hosts + 1}", tmp / "etcd-data")
            self.etcd.start()
            url = self.etcd.url
        else:
            url = f"sqlite://{tmp}/state/state.db"
        self.ov = ClusterOverlay(lab, tmp / "agents", url,
                                 host_options={"lease_ttl": TTL, "resync": 5})

    def start(self) -> None:
        for h in self.names:
            self.ov.start(h)

    def cli(self, *args: str, host: str = "h1", check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return self.ov.cli(*args, host=host, check=check)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def container(self, name: str) -> str:
        return self.lab.add_container(name)

    def attach(self, network: str, host: str, name: str, *extra: str) -> dict[str, Any]:
        netns = self.container(name)
        self.cli("attach", network, "--host", host, "--netns", netns, "--name", name, *extra)
        eps = self.cli_json("endpoint", "ls", "--network", network)
        return next(e for e in eps if e["name"] == name)

    def fdb(self, host: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.ov.query(host, "fdb")["fdb"]
        return entries

    def close(self) -> dict[str, int]:
        codes = self.ov.stop_all()
        if self.etcd is not None:
            self.etcd.stop()
        return codes


def ip_of(ep: dict[str, Any]) -> str:
    return str(ep["ip"]).split("/")[0]


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until check() held; fails after timeout."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start
