"""Overlays on a lab: write each host's agent config, start and stop agents.

The demo, the tests and the benchmarks describe an overlay as networks and
container placements; this module turns that into one config file per
host, runs ``uvxlan agent`` inside each host's namespace and waits until it
answers on its control socket.  Every flood list names the other hosts of
the overlay (static configuration, as for peers running Linux's vxlan).

A prefix (``agent_prefix``, else ``$UVXLAN_AGENT_PREFIX`` split as a shell
would) goes in front of each agent's command line: the tests run agents
under the Linux 3.10 jail (``tests/support/jail``) this way.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvxlan.control import query_agent
from uvxlan.errors import LabError, UvxlanError
from uvxlan.lab.netns import Lab, terminate
from uvxlan.proto import PORT_IANA

# A command prefix for every agent a lab overlay starts (shell syntax).
AGENT_PREFIX_ENV = "UVXLAN_AGENT_PREFIX"


class AgentProcs:
    """The agents an overlay runs on lab hosts, one process each: start,
    wait until ready, ask, stop.  Subclasses say where files go."""

    lab: Lab
    workdir: Path
    agent_prefix: list[str]
    _procs: dict[str, subprocess.Popen[bytes]]

    def control_socket(self, host: str) -> str:
        raise NotImplementedError

    def file(self, host: str, suffix: str) -> Path:
        """The host's config (.toml) or log (.log) in the workdir."""
        raise NotImplementedError

    def prefix(self) -> list[str]:
        """What goes in front of each agent's command line: agent_prefix,
        else $UVXLAN_AGENT_PREFIX, else nothing."""
        return list(self.agent_prefix) or shlex.split(os.environ.get(AGENT_PREFIX_ENV, ""))

    def _spawn(self, host: str, argv: list[str], timeout: float,
               ready: Callable[[dict[str, Any]], bool]) -> subprocess.Popen[bytes]:
        """Run ``uvxlan agent ARGV`` (after the prefix) in the host's netns,
        logging to its log file, and wait until its status satisfies ready()."""
        log = open(self.file(host, ".log"), "ab")  # noqa: SIM115
        proc = self.lab.spawn(self.lab.host(host).netns,
                              [*self.prefix(), sys.executable, "-m", "uvxlan", "agent", *argv],
                              stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._procs[host] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"agent of {host} exited with {proc.returncode}: "
                               f"{self.log_tail(host)}")
            try:
                if ready(query_agent(self.control_socket(host), "status", timeout=1.0)):
                    return proc
            except (UvxlanError, OSError):
                pass
            time.sleep(0.05)
        raise LabError(f"agent of {host} not ready within {timeout:.0f} s: "
                       f"{self.log_tail(host)}")

    def log_tail(self, host: str, lines: int = 5) -> str:
        try:
            text = self.file(host, ".log").read_text()
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def query(self, host: str, cmd: str) -> dict[str, Any]:
        return query_agent(self.control_socket(host), cmd)

    def proc(self, host: str) -> subprocess.Popen[bytes] | None:
        return self._procs.get(host)

    def kill(self, host: str) -> None:
        """SIGKILL: the agent dies without cleaning up (or leaving a cluster)."""
        proc = self._procs.pop(host, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, host: str, timeout: float = 10.0) -> int:
        """SIGTERM the agent, wait, and return its exit code."""
        proc = self._procs.pop(host, None)
        return 0 if proc is None else terminate(proc, timeout)

    def stop_all(self) -> dict[str, int]:
        return {h: self.stop(h) for h in list(self._procs)}


@dataclass(frozen=True)
class Placement:
    container: str          # lab container name; its netns is uvx-LAB-NAME
    host: str               # lab host, "h1"
    network: str
    address: str            # "10.0.0.2/24"


@dataclass
class Overlay(AgentProcs):
    lab: Lab
    workdir: Path
    networks: dict[str, int]                 # name -> VNI
    placements: list[Placement]
    port: int = PORT_IANA
    hosts: list[str] = field(default_factory=list)   # agents to run
    host_options: dict[str, Any] = field(default_factory=dict)
    extra_remotes: dict[str, list[str]] = field(default_factory=dict)  # net -> ["ip"]
    # [[network]] keys beyond name, vni and remotes: net -> {"admit": "any"}
    network_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    agent_prefix: list[str] = field(default_factory=list)   # e.g. jailed([])
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
            lines += [f"{k} = {_toml(v)}" for k, v in self.network_options.get(name, {}).items()]
        for p in self.placements:
            if p.host != host:
                continue
            lines += ["", "[[endpoint]]", f'network = "{p.network}"',
                      f'netns = "{self.lab.container_netns(p.container)}"',
                      f'address = "{p.address}"']
        return "\n".join(lines) + "\n"

    def file(self, host: str, suffix: str) -> Path:
        return self.workdir / f"{self.lab.name}-{host}{suffix}"

    def start(self, host: str, timeout: float = 15.0) -> subprocess.Popen[bytes]:
        """Start the agent of host and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.file(host, ".toml")
        path.write_text(self.config_text(host))
        return self._spawn(host, ["--config", str(path)], timeout, lambda st: True)

    def start_all(self) -> None:
        for h in self.hosts:
            self.start(h)


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


ETCD = "/usr/bin/etcd"


def etcd_argv(name: str, data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    """A one-member etcd cluster's command line.  Short heartbeat and
    election times make its minimum lease TTL 1 s, so tests can use short
    leases."""
    return [ETCD, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}", "--initial-cluster-token", name,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500"]


class LabEtcd:
    """One etcd member in lab host ``host``'s netns, on its underlay IP:
    every lab host reaches it over the underlay, as hosts would reach an
    etcd on another machine.  Restartable on the same data."""

    def __init__(self, lab: Lab, host: str, data: Path) -> None:
        self.lab = lab
        self.netns = lab.host(host).netns
        self.ip = lab.host(host).underlay_ip
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"etcd://{self.ip}:2379?timeout=2"

    def start(self) -> None:
        client, peer = f"http://{self.ip}:2379", f"http://{self.ip}:2380"
        log = open(self.data.parent / "etcd.log", "ab")  # noqa: SIM115
        self.proc = self.lab.spawn(self.netns, etcd_argv("lab", self.data, client, peer),
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        probe = ("import json,sys,urllib.request as u;"
                 f"sys.exit(json.load(u.urlopen('{client}/health',timeout=1))['health']!='true')")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"etcd exited with {self.proc.returncode}")
            if self.lab.run(self.netns, [sys.executable, "-c", probe], timeout=5).returncode == 0:
                return
            time.sleep(0.1)
        raise LabError(f"etcd in {self.netns} did not become healthy: "
                       f"{(self.data.parent / 'etcd.log').read_text()[-500:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, 10)


@dataclass
class ClusterOverlay(AgentProcs):
    """Agents on a lab that take everything from a cluster store: each
    host runs ``uvxlan agent --store URL --name H --advertise IP``; networks
    and endpoints are made with the CLI (``cli()``), as a user would."""

    lab: Lab
    workdir: Path
    store_url: str
    port: int = PORT_IANA
    host_options: dict[str, Any] = field(default_factory=dict)
    agent_prefix: list[str] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def control_socket(self, host: str) -> str:
        return str(self.workdir / f"{host}.sock")

    def file(self, host: str, suffix: str) -> Path:
        return self.workdir / f"{host}{suffix}"

    def start(self, host: str, timeout: float = 20.0, *, wait_synced: bool = True,
              extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start the agent of lab host ``host`` (its cluster name too) and
        wait until it answers and has applied the store's state.
        ``extra_args`` go after the agent's own (``--docker-plugin PATH``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.file(host, ".toml")
        opts = {"control_dir": str(self.workdir), "mtu": self.lab.mtu, **self.host_options}
        path.write_text("[host]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in opts.items()))
        argv = ["--config", str(path), "--store", self.store_url, "--name", host,
                "--advertise", self.lab.host(host).underlay_ip, "--port", str(self.port),
                *extra_args]
        return self._spawn(host, argv, timeout,
                           lambda st: bool(st.get("synced")) or not wait_synced)

    def cli(self, *args: str, host: str = "h1", check: bool = True,
            timeout: float = 60.0, store: bool = True) -> subprocess.CompletedProcess[str]:
        """``uvxlan ARGS --store URL`` run in lab host ``host``'s netns
        (store=False: without --store, for commands that ask an agent)."""
        extra = ["--store", self.store_url] if store else []
        done = self.lab.run(self.lab.host(host).netns,
                            [sys.executable, "-m", "uvxlan", *args, *extra],
                            timeout=timeout)
        if check and done.returncode != 0:
            raise LabError(f"uvxlan {' '.join(args)}: {done.stderr.strip()}")
        return done
