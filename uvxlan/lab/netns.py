"""Simulated hosts on one machine, built from network namespaces.

A lab named LAB is an underlay namespace ``uvx-LAB-ul`` holding a bridge
``br0``, host namespaces ``uvx-LAB-h1..hN`` each joined to br0 by a veth pair
(the host end is ``ul0``, addressed from the lab subnet: host i gets the
subnet's i-th address), and container namespaces ``uvx-LAB-NAME`` made on
request. Only namespaces are made: the root netns is never touched beyond the
/run/netns entries.

What a lab made is recorded in ``/run/uvxlan/lab-LAB.json``. ``down`` removes
every namespace named ``uvx-LAB-*`` whether or not that file survived, the
lab hosts' dockerds (:mod:`uvxlan.lab.dockerd`), and kills only the
processes recorded there with :meth:`Lab.record_pid`.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from uvxlan import netlink
from uvxlan.errors import LabError, UvxlanError
from uvxlan.lab import dockerd
from uvxlan.validate import MTU

__all__ = [
    "Lab",
    "LabHost",
    "cli_container_add",
    "cli_down",
    "cli_status",
    "cli_up",
]

STATE_DIR = "/run/uvxlan"
BRIDGE = "br0"
UNDERLAY_IFNAME = "ul0"
MAX_HOSTS = 250
DEFAULT_NAME = "lab"
DEFAULT_SUBNET = "10.77.0.0/24"
DEFAULT_MTU = 1500

_NAME_RE = re.compile(r"^[a-z0-9]{1,12}$")
_CONTAINER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
# container names that would collide with the lab's own namespaces
_RESERVED_RE = re.compile(r"^(ul|h[0-9]+)$")
_STATE_VERSION = 1
_TERM_GRACE = 2.0  # seconds a recorded process gets between SIGTERM and SIGKILL


@dataclass(frozen=True)
class LabHost:
    name: str
    netns: str
    underlay_ip: str


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0,
              sig: int = signal.SIGTERM) -> int:
    """Ask a process we started to end (SIGTERM), SIGKILL it if it lingers
    past timeout; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _proc_starttime(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if gone or a zombie.

    pid plus start time names one process for the whole boot, so a recycled
    pid is never mistaken for the recorded one.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class Lab:
    """A lab of simulated hosts; a handle on the state file, cheap to make."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        subnet: str = DEFAULT_SUBNET,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise LabError(f"invalid lab name {name!r}: use 1-12 of a-z and 0-9")
        try:
            network = ipaddress.IPv4Network(subnet)
        except ValueError as exc:  # also for host bits set, like 10.77.0.1/24
            raise LabError(f"invalid subnet {subnet!r}: {_one_line(str(exc))}") from None
        if mtu not in MTU:
            raise LabError(f"invalid MTU {mtu!r}: must be {MTU}")
        self.name = name
        self.subnet = str(network)
        self.mtu = mtu
        self._network = network
        self._children: dict[int, subprocess.Popen[Any]] = {}

    # --- names and state ------------------------------------------------------

    @property
    def prefix(self) -> str:
        """Every namespace of this lab starts with this."""
        return f"uvx-{self.name}-"

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}ul"

    @property
    def state_path(self) -> str:
        return os.path.join(STATE_DIR, f"lab-{self.name}.json")

    def namespaces(self) -> list[str]:
        """Namespaces that exist now and belong to this lab by name."""
        return [ns for ns in netlink.netns_list() if ns.startswith(self.prefix)]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # one lock for all labs: serialises up/down/record_pid across processes
        os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)
        fd = os.open(os.path.join(STATE_DIR, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read {self.state_path}: {exc}") from None
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise LabError(f"{self.state_path} is not a uvxlan lab state file")
        return state

    def _state(self) -> dict[str, Any]:
        state = self._read_state()
        if state is None:
            raise LabError(f"lab '{self.name}' is not up (no {self.state_path})")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)
        tmp = f"{self.state_path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.state_path)  # readers never see half a file

    @classmethod
    def load(cls, name: str) -> Lab:
        """The lab recorded in its state file; LabError if it is not up."""
        lab = cls(name)
        state = lab._state()
        try:
            return cls(name, subnet=state["subnet"], mtu=state["mtu"])
        except KeyError as exc:
            raise LabError(f"{lab.state_path} lacks {exc}") from None

    # --- lifecycle ------------------------------------------------------------

    def up(self, hosts: int) -> list[LabHost]:
        """Build the underlay and ``hosts`` hosts; LabError if the lab exists."""
        usable = self._network.num_addresses - 2  # minus network and broadcast
        if isinstance(hosts, bool) or not isinstance(hosts, int):
            raise LabError(f"invalid host count {hosts!r}")
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"invalid host count {hosts}: must be 1..{MAX_HOSTS}")
        if hosts > usable:
            raise LabError(
                f"subnet {self.subnet} has {max(usable, 0)} host addresses,"
                f" not enough for {hosts} hosts"
            )
        with self._locked():
            if self._read_state() is not None or self.namespaces():
                raise LabError(f"lab '{self.name}' already exists; run down first")
            try:
                made = self._build(hosts)
            except BaseException as exc:
                # leave nothing half-built behind
                with suppress(UvxlanError, OSError):
                    self._teardown(state=None)
                if isinstance(exc, UvxlanError):
                    raise LabError(f"lab '{self.name}' up failed: {exc}") from exc
                raise
        return made

    def _build(self, count: int) -> list[LabHost]:
        ul = self.underlay_netns
        netlink.netns_create(ul)
        # snooping off: with no querier the bridge would drop multicast after
        # group memberships age out; a lab underlay should behave like a hub
        netlink.bridge_create(BRIDGE, ul, multicast_snooping=False)
        netlink.link_configure(BRIDGE, ul, up=True)
        prefixlen = self._network.prefixlen
        hosts = []
        for i in range(1, count + 1):
            host = LabHost(
                name=f"h{i}",
                netns=f"{self.prefix}h{i}",
                underlay_ip=str(self._network.network_address + i),
            )
            bridge_end, host_end = f"veth-h{i}", f"tmp-h{i}"
            netlink.netns_create(host.netns)
            netlink.veth_create(bridge_end, host_end, ul)
            netlink.link_set_master(bridge_end, BRIDGE, ul)
            # both ends get the MTU: the bridge forwards only what the port takes
            netlink.link_configure(bridge_end, ul, mtu=self.mtu, up=True)
            netlink.link_move(host_end, host.netns, UNDERLAY_IFNAME, netns=ul)
            netlink.link_configure(
                UNDERLAY_IFNAME,
                host.netns,
                mtu=self.mtu,
                addresses=[f"{host.underlay_ip}/{prefixlen}"],
                up=True,
            )
            hosts.append(host)
        self._write_state(
            {
                "version": _STATE_VERSION,
                "name": self.name,
                "subnet": self.subnet,
                "mtu": self.mtu,
                "underlay_netns": ul,
                "bridge": BRIDGE,
                "hosts": [vars(h) for h in hosts],
                "containers": {},
                "pids": [],
            }
        )
        return hosts

    def down(self) -> None:
        """Remove every ``uvx-LAB-*`` namespace and the state file.

        Safe to repeat and works without the state file. Kills only the
        processes recorded with record_pid (matched by pid and start time).
        """
        with self._locked():
            try:
                state = self._read_state()
            except LabError:
                state = None  # unreadable: still remove what the names say
            self._teardown(state)

    def _teardown(self, state: dict[str, Any] | None) -> None:
        # first: a dockerd's containers go through its API while it answers
        dockerd.remove_lab(self.name)
        if state is not None:
            self._kill_recorded(state.get("pids", []))
        failed = []
        for ns in self.namespaces():
            try:
                netlink.netns_remove(ns)
            except UvxlanError as exc:
                failed.append(str(exc))
        with suppress(FileNotFoundError):
            os.unlink(self.state_path)
        if failed:
            raise LabError(f"lab '{self.name}' down incomplete: {'; '.join(failed)}")

    def _kill_recorded(self, records: list[dict[str, Any]]) -> None:
        alive = []
        for rec in records:
            try:
                pid, start = int(rec["pid"]), int(rec["starttime"])
            except (KeyError, TypeError, ValueError):
                continue
            if _proc_starttime(pid) == start:
                alive.append((pid, start))
        for sig, grace in ((signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, 1.0)):
            for pid, _ in alive:
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                self._reap_children()
                alive = [(p, s) for p, s in alive if _proc_starttime(p) == s]
                if alive:
                    time.sleep(0.02)
            if not alive:
                break
        self._reap_children()

    def _reap_children(self) -> None:
        # our own spawns stay zombies (and look alive) until waited for
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    # --- hosts and containers -------------------------------------------------

    def hosts(self) -> list[LabHost]:
        return [LabHost(**h) for h in self._state()["hosts"]]

    def host(self, name: str) -> LabHost:
        """A host by name, like "h1"."""
        for h in self.hosts():
            if h.name == name:
                return h
        raise LabError(f"lab '{self.name}' has no host {name!r}")

    def containers(self) -> dict[str, str]:
        """Container name -> netns name."""
        return dict(self._state()["containers"])

    def add_container(self, name: str) -> str:
        """Make an empty container netns (lo up) and return its name."""
        if not isinstance(name, str) or not _CONTAINER_RE.match(name):
            raise LabError(f"invalid container name {name!r}: use 1-32 of a-z, 0-9 and '-'")
        if _RESERVED_RE.match(name):
            raise LabError(f"container name {name!r} is reserved for the lab itself")
        ns = f"{self.prefix}{name}"
        with self._locked():
            state = self._state()
            if name in state["containers"] or netlink.netns_exists(ns):
                raise LabError(f"container {name!r} already exists in lab '{self.name}'")
            netlink.netns_create(ns)
            try:
                netlink.link_configure("lo", ns, up=True)
                state["containers"][name] = ns
                self._write_state(state)
            except BaseException:
                with suppress(UvxlanError):
                    netlink.netns_remove(ns)
                raise
        return ns

    def remove_container(self, name: str) -> None:
        """Delete a container's netns (and whatever is in it); the name is
        free for add_container again."""
        with self._locked():
            state = self._state()
            ns = state["containers"].pop(name, None)
            if ns is None:
                raise LabError(f"lab '{self.name}' has no container {name!r}")
            if netlink.netns_exists(ns):
                netlink.netns_remove(ns)
            self._write_state(state)

    def container_netns(self, name: str) -> str:
        try:
            return self.containers()[name]
        except KeyError:
            raise LabError(f"lab '{self.name}' has no container {name!r}") from None

    # --- processes ------------------------------------------------------------

    def _check_netns(self, netns: str) -> None:
        if not isinstance(netns, str) or not netns.startswith(self.prefix):
            raise LabError(f"netns {netns!r} is not part of lab '{self.name}'")
        if not netlink.netns_exists(netns):
            raise LabError(f"netns '{netns}' does not exist")

    def record_pid(self, netns: str, pid: int) -> None:
        """Record ``pid`` so that down() kills it; nothing else is ever killed."""
        self._check_netns(netns)
        start = _proc_starttime(pid)
        if start is None:
            raise LabError(f"process {pid} is not running")
        with self._locked():
            state = self._state()
            state["pids"].append({"pid": pid, "starttime": start, "netns": netns})
            self._write_state(state)

    def spawn(self, netns: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``netns`` (a namespace of this lab), recorded."""
        self._check_netns(netns)
        if not argv:
            raise LabError("spawn needs a command")
        # ip netns exec execs in place, so the pid is the command's own
        child: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv], **popen_kwargs
        )
        try:
            self.record_pid(netns, child.pid)
        except BaseException:
            child.kill()
            child.wait()
            raise
        self._children[child.pid] = child
        return child

    def run(
        self,
        netns: str,
        argv: list[str],
        timeout: float = 30,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``netns`` to completion, capturing its output."""
        self._check_netns(netns)
        if not argv:
            raise LabError("run needs a command")
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", netns, *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{argv[0]} in netns '{netns}' timed out after {timeout}s") from None
        if check and done.returncode != 0:
            detail = _one_line(done.stderr)[:200]
            raise LabError(
                f"{argv[0]} in netns '{netns}' exited with {done.returncode}"
                + (f": {detail}" if detail else "")
            )
        return done

    # --- context manager ------------------------------------------------------

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


# --- CLI entry points ---------------------------------------------------------


def _error(exc: BaseException) -> int:
    message = str(exc) if isinstance(exc, UvxlanError) else f"{type(exc).__name__}: {exc}"
    print(f"uvxlan: error: {_one_line(message)}", file=sys.stderr)
    return 1


def cli_up(
    name: str = DEFAULT_NAME,
    hosts: int = 2,
    subnet: str = DEFAULT_SUBNET,
    mtu: int = DEFAULT_MTU,
) -> int:
    try:
        lab = Lab(name, subnet=subnet, mtu=mtu)
        made = lab.up(hosts)
    except Exception as exc:
        return _error(exc)
    print(f"lab '{name}' is up: underlay {lab.underlay_netns} ({subnet}, MTU {mtu})")
    for h in made:
        print(f"  {h.name}  {h.netns}  {h.underlay_ip}")
    return 0


def cli_down(name: str = DEFAULT_NAME) -> int:
    try:
        lab = Lab(name)
        removed = lab.namespaces()
        lab.down()
    except Exception as exc:
        return _error(exc)
    print(f"lab '{name}' is down: removed {len(removed)} namespaces")
    return 0


def cli_status(name: str = DEFAULT_NAME) -> int:
    try:
        lab = Lab.load(name)
        hosts = lab.hosts()
        containers = lab.containers()
        present = set(lab.namespaces())
    except Exception as exc:
        return _error(exc)
    print(f"lab '{name}': underlay {lab.underlay_netns} ({lab.subnet}, MTU {lab.mtu})")
    print("hosts:")
    for h in hosts:
        print(f"  {h.name}  {h.netns}  {h.underlay_ip}")
    print("containers:" if containers else "containers: none")
    for cname, ns in sorted(containers.items()):
        print(f"  {cname}  {ns}")
    expected = [lab.underlay_netns, *(h.netns for h in hosts), *containers.values()]
    missing = [ns for ns in expected if ns not in present]
    if missing:
        print(f"uvxlan: error: namespaces missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def cli_container_add(name: str, container: str) -> int:
    try:
        ns = Lab.load(name).add_container(container)
    except Exception as exc:
        return _error(exc)
    print(f"container '{container}' added to lab '{name}': netns {ns}")
    return 0
