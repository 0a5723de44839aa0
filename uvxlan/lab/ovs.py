"""Open vSwitch's userspace datapath on a lab host: a VXLAN peer that is
neither Linux's vxlan device nor uvxlan.

Each OVS host gets a private ``ovsdb-server`` and ``ovs-vswitchd``, run in
the foreground inside the host's namespace (started with ``lab.spawn``, so
``lab.down`` kills them too), with database, sockets, pid and log files in
a temp directory of its own: the machine's openvswitch service is never
used, and any number of labs can run side by side.

OVS tunnels in userspace (``datapath_type=netdev``) only through its own
IP stack: the tunnel's underlay address must be on an OVS bridge, from
which OVS takes its tunnel routes (cached from the kernel's) and ARP
entries (snooped).  So the host gets, as OVS's documentation prescribes:

- ``br-phy`` (netdev) with the host's underlay NIC ``ul0`` as its port; the
  underlay address moves from ``ul0`` to ``br-phy`` (a tap device);
- ``br-int`` (netdev) with one vxlan port per peer VTEP (``vxN``:
  ``remote_ip``, ``key`` = VNI, ``dst_port``) and ``veth-c``, a veth whose
  other end is the container's ``eth0`` (address, MTU 1450).

br-int's flows are the default NORMAL: a learning switch that floods to
every tunnel port, like Linux's vxlan with all-zero FDB entries.

``stop`` puts everything back: daemons ended by their process, bridges and
veth gone, the underlay address back on ``ul0``, the temp directory removed.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from uvxlan.errors import LabError
from uvxlan.lab.netns import UNDERLAY_IFNAME, Lab, terminate

__all__ = ["OVS_TOOLS", "OvsHost", "ovs_missing", "ovs_vxlan_host"]

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVS_TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl")
PHYS_BRIDGE = "br-phy"
INT_BRIDGE = "br-int"
VETH = "veth-c"
DATAPATH_TAP = "ovs-netdev"     # the netdev datapath's own tap device
_START_TIMEOUT = 15.0


def ovs_missing() -> str | None:
    """Why OVS cannot run here (one line), or None if it can."""
    missing = [t for t in OVS_TOOLS if shutil.which(t) is None]
    if missing or not os.path.exists(SCHEMA):
        return "openvswitch-switch is not installed (apt-get install openvswitch-switch)"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class OvsHost:
    """OVS's userspace datapath as the VXLAN peer on one lab host."""

    def __init__(self, lab: Lab, host: str, *, vni: int, port: int, peers: list[str],
                 container: str, address: str, mtu: int = 1450,
                 other_config: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.host = lab.host(host)
        self.netns = self.host.netns
        self.container_netns = lab.container_netns(container)
        self.vni = vni
        self.port = port
        self.peers = list(peers)
        self.address = address
        self.mtu = mtu
        self.other_config = dict(other_config or {})
        self.prefixlen = ipaddress.IPv4Network(lab.subnet).prefixlen
        self.dir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._moved_address = False

    # --- files and commands ---------------------------------------------------

    def path(self, name: str) -> str:
        assert self.dir is not None, "OVS host not started"
        return str(self.dir / name)

    def _env(self) -> dict[str, str]:
        # every default path of the OVS tools under our directory (bridge
        # management sockets included), never /var/run/openvswitch
        d = str(self.dir)
        return {"OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}

    def _run(self, argv: list[str], netns: str | None = None,
             timeout: float = 15.0) -> str:
        """Run argv in the host's netns (or netns) with our OVS environment;
        it must succeed.  Its stdout."""
        env = [f"{k}={v}" for k, v in self._env().items()]
        done = self.lab.run(netns or self.netns, ["env", *env, *argv], timeout=timeout)
        if done.returncode != 0:
            detail = _one_line(done.stderr or done.stdout)[:200]
            raise LabError(f"OVS on {self.host.name}: {' '.join(argv[:4])} exited with"
                           f" {done.returncode}" + (f": {detail}" if detail else ""))
        return done.stdout

    def vsctl(self, *args: str) -> str:
        return self._run(["ovs-vsctl", f"--db=unix:{self.path('db.sock')}",
                          "--timeout=10", *args])

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "-t", self.path("ovs-vswitchd.ctl"),
                          "--timeout=10", *args])

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = Path(self.path("ovs-vswitchd.log")).read_text()
        except (OSError, AssertionError):
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _daemon(self, argv: list[str], name: str, ready: str) -> None:
        """Start an OVS daemon in the foreground in the host's netns and
        wait until its socket ``ready`` exists."""
        log = open(self.path(f"{name}.out"), "ab")  # noqa: SIM115
        try:
            proc = self.lab.spawn(self.netns, argv, env={**os.environ, **self._env()},
                                  stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._procs.append(proc)
        deadline = time.monotonic() + _START_TIMEOUT
        while not os.path.exists(self.path(ready)):
            if proc.poll() is not None:
                out = Path(self.path(f"{name}.out")).read_text()
                raise LabError(f"{name} on {self.host.name} exited with {proc.returncode}:"
                               f" {_one_line(out)[-200:]}")
            if time.monotonic() > deadline:
                raise LabError(f"{name} on {self.host.name} not ready within"
                               f" {_START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> OvsHost:
        reason = ovs_missing()
        if reason:
            raise LabError(reason)
        self.dir = Path(tempfile.mkdtemp(prefix=f"uvx-ovs-{self.lab.name}-{self.host.name}-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        d = self.path
        self._run(["ovsdb-tool", "create", d("conf.db"), SCHEMA])
        self._daemon(["ovsdb-server", d("conf.db"), f"--remote=punix:{d('db.sock')}",
                      f"--unixctl={d('ovsdb-server.ctl')}", f"--pidfile={d('ovsdb-server.pid')}",
                      f"--log-file={d('ovsdb-server.log')}", "--no-chdir"],
                     "ovsdb-server", "db.sock")
        # other_config before ovs-vswitchd starts: some keys are read only then
        settings = [f"other_config:{k}={v}" for k, v in self.other_config.items()]
        self._run(["ovs-vsctl", f"--db=unix:{d('db.sock')}", "--no-wait", "init",
                   *(["--", "set", "open_vswitch", ".", *settings] if settings else [])])
        # --disable-system: the netdev datapath only, no kernel module
        self._daemon(["ovs-vswitchd", f"unix:{d('db.sock')}", "--disable-system",
                      f"--unixctl={d('ovs-vswitchd.ctl')}", f"--pidfile={d('ovs-vswitchd.pid')}",
                      f"--log-file={d('ovs-vswitchd.log')}", "--no-chdir"],
                     "ovs-vswitchd", "ovs-vswitchd.ctl")

        # the underlay: ul0 becomes a port of br-phy, which takes its address
        me = f"{self.host.underlay_ip}/{self.prefixlen}"
        self.vsctl("add-br", PHYS_BRIDGE, "--", "set", "bridge", PHYS_BRIDGE,
                   "datapath_type=netdev", "--", "set", "interface", PHYS_BRIDGE,
                   f"mtu_request={self.lab.mtu}")
        self.vsctl("add-port", PHYS_BRIDGE, UNDERLAY_IFNAME)
        ip = ["ip"]
        self._run([*ip, "addr", "del", me, "dev", UNDERLAY_IFNAME])
        self._moved_address = True
        self._run([*ip, "addr", "add", me, "dev", PHYS_BRIDGE])
        self._run([*ip, "link", "set", PHYS_BRIDGE, "up"])

        # the overlay: a vxlan port per peer VTEP and the container's veth
        self.vsctl("add-br", INT_BRIDGE, "--", "set", "bridge", INT_BRIDGE,
                   "datapath_type=netdev")
        for i, peer in enumerate(self.peers):
            self.vsctl("add-port", INT_BRIDGE, f"vx{i}", "--", "set", "interface", f"vx{i}",
                       "type=vxlan", f"options:remote_ip={peer}", f"options:key={self.vni}",
                       f"options:dst_port={self.port}")
        ns = self.container_netns
        mtu = str(self.mtu)
        self._run([*ip, "link", "add", VETH, "mtu", mtu, "type", "veth",
                   "peer", "name", "eth0", "mtu", mtu, "netns", ns])
        self._run([*ip, "link", "set", VETH, "up"])
        self.vsctl("add-port", INT_BRIDGE, VETH)
        self._run([*ip, "addr", "add", self.address, "dev", "eth0"], netns=ns)
        self._run([*ip, "link", "set", "eth0", "up"], netns=ns)
        self._wait_underlay()

    def _wait_underlay(self) -> None:
        """Wait until OVS routes the underlay through br-phy and has an ARP
        entry for every peer: until then the first frames to a peer are
        dropped while OVS resolves it.  Pinging each peer's underlay address
        from this host lets OVS snoop the reply, as any host traffic would."""
        deadline = time.monotonic() + _START_TIMEOUT
        subnet = str(ipaddress.IPv4Network(self.lab.subnet))
        while True:
            routes = self.appctl("ovs/route/show")
            arp = self.appctl("tnl/arp/show")
            known = {line.split()[0] for line in arp.splitlines()[2:] if line.strip()}
            missing = [p for p in self.peers if p not in known]
            if f"{subnet} dev {PHYS_BRIDGE}" in routes and not missing:
                return
            if time.monotonic() > deadline:
                raise LabError(f"OVS on {self.host.name}: no tunnel route or ARP entry for"
                               f" {', '.join(missing) or subnet} within {_START_TIMEOUT:.0f} s")
            for peer in missing:
                self.lab.run(self.netns, ["ping", "-c", "1", "-W", "1", peer], timeout=5)
            time.sleep(0.1)

    def stop(self) -> None:
        """End the daemons and remove everything start made; safe to repeat,
        and after the lab's namespaces are gone."""
        errors = []
        for proc in reversed(self._procs):   # vswitchd first, then the database
            terminate(proc, 10)
        self._procs = []

        def quiet(netns: str, argv: list[str]) -> subprocess.CompletedProcess[str] | None:
            try:
                return self.lab.run(netns, argv, timeout=10)
            except LabError:     # the namespace is gone, and all in it
                return None

        # the taps of the netdev datapath and its bridges outlive ovs-vswitchd
        for ifname in (VETH, PHYS_BRIDGE, INT_BRIDGE, DATAPATH_TAP):
            shown = quiet(self.netns, ["ip", "link", "show", ifname])
            if shown is not None and shown.returncode == 0:
                done = quiet(self.netns, ["ip", "link", "del", ifname])
                if done is not None and done.returncode != 0:
                    errors.append(_one_line(done.stderr))
        if self._moved_address:
            me = f"{self.host.underlay_ip}/{self.prefixlen}"
            done = quiet(self.netns, ["ip", "addr", "replace", me, "dev", UNDERLAY_IFNAME])
            if done is not None and done.returncode != 0:
                errors.append(_one_line(done.stderr))
            self._moved_address = False
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if errors:
            raise LabError(f"OVS on {self.host.name}: cleanup incomplete: {'; '.join(errors)}")

    def __enter__(self) -> OvsHost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def drops(self) -> dict[str, int]:
        """OVS's nonzero drop counters (coverage/show), name -> total."""
        counts = {}
        for line in self.appctl("coverage/show").splitlines():
            words = line.split()
            if words and "drop" in words[0] and words[-2:-1] == ["total:"]:
                counts[words[0]] = int(words[-1])
        return counts

    def info(self) -> dict[str, Any]:
        """What OVS says about its bridges, routes and neighbours (for failures)."""
        return {"show": self.vsctl("show"), "routes": self.appctl("ovs/route/show"),
                "arp": self.appctl("tnl/arp/show"),
                "flows": self.appctl("dpctl/dump-flows")}


def ovs_vxlan_host(lab: Lab, host: str, *, vni: int, port: int, peers: list[str],
                   container: str, address: str, mtu: int = 1450,
                   other_config: dict[str, str] | None = None) -> OvsHost:
    """Start OVS's userspace datapath on ``host`` as a VXLAN VTEP for VNI on
    UDP ``port``, flooding to ``peers``, bridged to container ``container``
    (eth0: ``address``, ``mtu``); ``other_config``: keys of OVS's
    Open_vSwitch other_config, set before ovs-vswitchd starts.  Stop it with
    ``.stop()`` or ``with``."""
    return OvsHost(lab, host, vni=vni, port=port, peers=peers, container=container,
                   address=address, mtu=mtu, other_config=other_config).start()
