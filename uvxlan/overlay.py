"""Overlays on a lab: write each host's agent config, start and stop agents.

The demo, the tests and the benchmarks describe an overlay as networks and
container placements; this module turns that into one config file per
host, runs ``uvxlan agent`` inside each host's namespace and waits until it
answers on its control socket.  Every flood list names the other hosts of
the overlay (static configuration, as for peers running Linux's vxlan).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvxlan.agent import query_agent
from uvxlan.errors import LabError, UvxlanError
from uvxlan.lab import Lab


@dataclass(frozen=True)
class Placement:
    container: str          # lab container name; its netns is uvx-LAB-NAME
    host: str               # lab host, "h1"
    network: str
    address: str            # "10.0.0.2/24"


@dataclass
class Overlay:
    lab: Lab
    workdir: Path
    networks: dict[str, int]                 # name -> VNI
    placements: list[Placement]
    port: int = 4789
    hosts: list[str] = field(default_factory=list)   # agents to run
    host_options: dict[str, Any] = field(default_factory=dict)
    extra_remotes: dict[str, list[str]] = field(default_factory=dict)  # net -> ["ip"]
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def control_socket(self, host: str) -> str:
        return str(self.workdir / f"{self.lab.name}-{host}.sock")

    def config_text(self, host: str) -> str:
        me = self.lab.host(host)
        peers = [h for h in self.hosts if h != host]
        lines = [
            "[host]",
            f'name = "{self.lab.name}-{host}"',
            f'underlay = "{me.underlay_ip}"',
            f"port = {self.port}",
            f'control_dir = "{self.workdir}"',
            f"mtu = {self.lab.mtu}",
        ]
        for key, value in self.host_options.items():
            lines.append(f"{key} = {_toml(value)}")
        for name, vni in self.networks.items():
            remotes = [self.lab.host(p).underlay_ip for p in peers]
            remotes += self.extra_remotes.get(name, [])
            lines += ["", "[[network]]", f'name = "{name}"', f"vni = {vni}",
                      f"remotes = {_toml(remotes)}"]
        for p in self.placements:
            if p.host != host:
                continue
            lines += ["", "[[endpoint]]", f'network = "{p.network}"',
                      f'netns = "{self.lab.container_netns(p.container)}"',
                      f'address = "{p.address}"']
        return "\n".join(lines) + "\n"

    def start(self, host: str, timeout: float = 15.0) -> subprocess.Popen[bytes]:
        """Start the agent of host and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{self.lab.name}-{host}.toml"
        path.write_text(self.config_text(host))
        log = open(self.workdir / f"{self.lab.name}-{host}.log", "ab")  # noqa: SIM115
        proc = self.lab.spawn(
            self.lab.host(host).netns,
            [sys.executable, "-m", "uvxlan", "agent", "--config", str(path)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self._procs[host] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"agent of {host} exited with {proc.returncode}: "
                               f"{self.log_tail(host)}")
            try:
                query_agent(self.control_socket(host), "status", timeout=1.0)
                return proc
            except (UvxlanError, OSError):
                time.sleep(0.05)
        raise LabError(f"agent of {host} did not answer within {timeout:.0f} s")

    def start_all(self) -> None:
        for h in self.hosts:
            self.start(h)

    def log_tail(self, host: str, lines: int = 5) -> str:
        path = self.workdir / f"{self.lab.name}-{host}.log"
        try:
            return " | ".join(path.read_text().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def query(self, host: str, cmd: str) -> dict[str, Any]:
        return query_agent(self.control_socket(host), cmd)

    def stop(self, host: str, timeout: float = 10.0) -> int:
        """SIGTERM the agent, wait, and return its exit code."""
        proc = self._procs.pop(host, None)
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> dict[str, int]:
        return {h: self.stop(h) for h in list(self._procs)}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
