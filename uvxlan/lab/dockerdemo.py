"""``uvxlan demo --docker``: the experiment uvxlan comes from, with real
Docker, run the way a user would on two hosts.

Two lab hosts h1 and h2 each run an agent (one embedded store, the Docker
plugin served on the host's plugin directory) and a dockerd of their own
(:mod:`uvxlan.lab.dockerd`), with a busybox image imported from
busybox-static.  On each host, ``docker network create -d uvxlan`` makes
net1 and net2 (one store network each, whatever host asks); ``docker run
--network`` starts net1c1 and net2c1 on h1, net1c2 and net2c2 on h2.  The
demo checks that ``docker network ls`` is the same on both hosts, that each
container's eth0 has MTU 1450 and the address Docker reports, that net1c1
reaches net1c2 across hosts and no net2 container (even with a route that
makes net1c1 ask for them on its own segment), and measures the time from
``docker run`` to the first ping reply across hosts; then it removes the
containers, the networks (Docker's and the store's), the dockerds, the
agents and the lab.  Each docker command is printed as ``h1$ docker …``
with its output.  Any expectation not met makes it exit 1.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from uvxlan.errors import UvxlanError
from uvxlan.lab.demo import PLACEMENTS, Checks
from uvxlan.lab.dockerd import BUSYBOX_IMAGE, LabDockerd, owned_pids
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay

LAB = "demo"
HOSTS = ("h1", "h2")
NETWORKS = ("net1", "net2")
PLUGIN_SOCKET = "uvxlan.sock"     # dockerd finds the plugin "uvxlan" by this name
MTU = 1450                        # the lab's 1500 minus VXLAN over IPv4's 50


def network_create_args(name: str) -> list[str]:
    """What a user types on every host to put Docker's network ``name`` on
    the store network of the same name (docs/docker.md)."""
    return ["network", "create", "--driver", "uvxlan", "--ipam-driver", "uvxlan",
            "--opt", f"uvxlan.network={name}", "--ipam-opt", f"uvxlan.network={name}", name]


class DockerDemo(Checks):
    def __init__(self, lab_name: str = LAB) -> None:
        super().__init__(lab_name)
        self.dockerds: dict[str, LabDockerd] = {}
        # what was made, so that clean-up removes just that
        self.containers: list[tuple[str, str]] = []      # (host, name)
        self.networks: dict[str, list[str]] = {}         # host -> Docker networks

    def docker(self, host: str, *args: str, show: bool = True, check: bool = True,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """docker ARGS against host's dockerd, echoed as ``h1$ docker ARGS``."""
        if show:
            print(f"  {host}$ docker {shlex.join(args)}")
        done = self.dockerds[host].docker(*args, check=check, timeout=timeout)
        if show:
            for line in (done.stdout + done.stderr).rstrip().splitlines():
                print(f"    {line}")
        return done

    def uvxlan(self, *args: str, show: bool = True) -> str:
        assert self.ov is not None
        if show:
            print(f"  h1$ uvxlan {shlex.join(args)}")
        out = self.ov.cli(*args).stdout
        if show:
            for line in out.rstrip().splitlines():
                print(f"    {line}")
        return out

    def ping(self, host: str, src: str, ip: str, count: int) -> bool:
        done = self.docker(host, "exec", src, "ping", "-c", str(count), "-W", "1", ip,
                           check=False, timeout=count + 15)
        received = re.search(r"(\d+) packets received", done.stdout)
        return bool(received and int(received.group(1)) > 0)

    def first_reply_after(self, t0: float, host: str, src: str, ip: str) -> float | None:
        """Seconds from t0 to the first reply to pings every 50 ms from
        container src's netns (the machine's ping in Docker's sandbox)."""
        key = self.docker(host, "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", src,
                          show=False).stdout.strip()
        done = subprocess.run(["nsenter", f"--net={key}", "--", "ping", "-n", "-q", "-c", "1",
                               "-i", "0.05", "-w", "10", ip],
                              capture_output=True, text=True, timeout=20, check=False)
        return time.monotonic() - t0 if done.returncode == 0 else None

    def container_ip(self, host: str, name: str) -> str:
        return self.docker(host, "inspect", "--format",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name,
                           show=False).stdout.strip()

    def run(self, keep: bool) -> int:
        lab = Lab(self.lab_name)
        lab.down()   # a previous demo that crashed leaves nothing in the way
        workdir = Path(tempfile.mkdtemp(prefix="uvxlan-demo-docker-"))
        store = f"sqlite://{workdir}/state.db"
        self.ov = ov = ClusterOverlay(lab, workdir, store)
        started: list[str] = []
        try:
            print("== Building two hosts on a shared underlay")
            for h in lab.up(len(HOSTS)):
                print(f"  {h.name}: netns {h.netns}, underlay {h.underlay_ip}")

            print("== On each host: a dockerd of its own, and an agent serving the Docker plugin")
            for host in HOSTS:
                d = self.dockerds[host] = LabDockerd(lab, host)
                d.start()
                started.append(host)
                print(f"  {host}$ dockerd --data-root {d.root}/data --exec-root {d.root}/exec"
                      f" -H {d.host_url} --bridge=none --iptables=false"
                      "   (own mount namespace: its /run/docker/plugins is"
                      f" {d.plugin_dir})")
                sock = d.plugin_dir / PLUGIN_SOCKET
                ov.start(host, extra_args=["--docker-plugin", str(sock)])
                print(f"  {host}$ uvxlan agent --store {store} --name {host}"
                      f" --advertise {lab.host(host).underlay_ip} --docker-plugin {sock}")
                print(f"  {host}$ docker import - {BUSYBOX_IMAGE}   (/bin/busybox and its"
                      " applet links, no registry)")
                print(f"    {d.import_busybox()}")

            print("== Creating the networks on each host, as a user would")
            for net in NETWORKS:
                for host in HOSTS:
                    self.docker(host, *network_create_args(net))
                    self.networks.setdefault(host, []).append(net)
            listings = {}
            for host in HOSTS:
                self.docker(host, "network", "ls", "--filter", "driver=uvxlan")
                listings[host] = sorted(self.docker(
                    host, "network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}",
                    show=False).stdout.split("\n"))
            self.check(listings["h1"] == listings["h2"],
                       "docker network ls is the same on h1 and h2 (names, drivers, scopes;"
                       " the IDs are each dockerd's own)")
            nets = {n["name"]: n for n in json.loads(self.uvxlan("network", "ls", "--json",
                                                                   show=False))}
            self.uvxlan("network", "ls")
            self.check(set(NETWORKS) <= set(nets) and nets["net1"]["vni"] != nets["net2"]["vni"],
                       "one store network each for net1 and net2, with their own VNIs")

            print("== Running the containers")
            ips: dict[str, str] = {}
            rtt_first: float | None = None
            run_took = 0.0
            for name, host, net in PLACEMENTS:
                t0 = time.monotonic()
                self.containers.append((host, name))
                self.docker(host, "run", "--detach", "--network", net, "--name", name,
                            BUSYBOX_IMAGE, "sleep", "3600")
                if name == "net1c2":
                    run_took = time.monotonic() - t0
                ips[name] = self.container_ip(host, name)
                if name == "net1c2":
                    rtt_first = self.first_reply_after(t0, "h1", "net1c1", ips[name])
            self.uvxlan("endpoint", "ls")

            print("== Containers (each sees a TAP as eth0)")
            for name, host, net in PLACEMENTS:
                self.docker(host, "exec", name, "ip", "addr", "show", "eth0")
                self.docker(host, "exec", name, "ip", "route")
                mtu = self.docker(host, "exec", name, "cat", "/sys/class/net/eth0/mtu",
                                  show=False).stdout.strip()
                addr = self.docker(host, "exec", name, "ip", "-o", "-4", "addr", "show", "eth0",
                                   show=False).stdout
                self.check(mtu == str(MTU), f"{name} eth0 has MTU {MTU}")
                self.check(bool(ips[name]) and f" {ips[name]}/" in addr
                           and ips[name] in _subnet_hosts(nets[net]["subnet"]),
                           f"{name} eth0 has {ips[name] or 'no address'} in {net}'s subnet")

            print("== net1c1 (h1) -> net1c2 (h2), same network, across hosts")
            self.check(self.ping("h1", "net1c1", ips["net1c2"], 3),
                       "net1c1 reaches net1c2 across hosts")
            if rtt_first is not None:
                print(f"  first reply {rtt_first * 1000:.0f} ms after `docker run` of net1c2"
                      f" began (docker run itself: {run_took * 1000:.0f} ms; pings every"
                      " 50 ms from net1c1)")
            self.check(rtt_first is not None, "net1c2 answered within 10 s of docker run")

            print("== net1c1 -> net2 containers: other network, must not answer")
            # An on-link route makes net1c1 ask for net2's addresses on its
            # own segment: only VNI isolation keeps the answer away.  The
            # container has no CAP_NET_ADMIN: root adds it from outside.
            key = self.docker("h1", "inspect", "--format", "{{.NetworkSettings.SandboxKey}}",
                              "net1c1", show=False).stdout.strip()
            route = ["ip", "route", "add", nets["net2"]["subnet"], "dev", "eth0"]
            print(f"  h1$ nsenter --net={key} {shlex.join(route)}")
            subprocess.run(["nsenter", f"--net={key}", "--", *route], check=True,
                           capture_output=True, timeout=10)
            for name in ("net2c2", "net2c1"):
                self.check(not self.ping("h1", "net1c1", ips[name], 2),
                           f"net1c1 cannot reach {name} (isolated)")
        except (UvxlanError, subprocess.SubprocessError, OSError, KeyError) as exc:
            self.check(False, f"{type(exc).__name__}: {exc}"
                       if not isinstance(exc, UvxlanError) else str(exc))
        finally:
            if keep and not self.failures:
                print(f"== Left running (store {store}); docker -H"
                      f" {self.dockerds['h1'].host_url} ps; remove with:"
                      f" uvxlan lab down --name {self.lab_name}")
            else:
                self.clean_up(lab, started)
                self.keep_for_failures(workdir)
        return self.verdict()

    def clean_up(self, lab: Lab, started: list[str]) -> None:
        assert self.ov is not None
        print("== Cleaning up")
        try:
            for host, name in self.containers:
                self.docker(host, "rm", "--force", name, check=False)
            for host, nets in self.networks.items():
                self.docker(host, "network", "rm", *nets, check=False)
            if self.networks:
                eps = json.loads(self.uvxlan("endpoint", "ls", "--json", show=False))
                self.check(eps == [], "docker rm removed every endpoint from the store")
                made = [n["name"] for n in json.loads(self.uvxlan("network", "ls", "--json",
                                                                    show=False))]
                if made:
                    self.uvxlan("network", "rm", *made)
        except UvxlanError as exc:
            self.check(False, str(exc))
        for host in started:
            d = self.dockerds[host]
            print(f"  {host}: stopping dockerd")
            d.stop()
            left = [k for k, pids in owned_pids(d.root).items() if pids]
            self.check(not left and not d.root.exists(),
                       f"{host}'s dockerd, containerd and files removed")
        codes = self.ov.stop_all()
        self.check(all(c == 0 for c in codes.values()),
                   f"agents stopped cleanly on SIGTERM (exit codes {codes})")
        lab.down()
        self.check(not lab.namespaces(), "every namespace removed")


def _subnet_hosts(subnet: str) -> set[str]:
    return {str(a) for a in ipaddress.IPv4Network(subnet).hosts()}


def run(keep: bool = False, lab_name: str = LAB) -> int:
    return DockerDemo(lab_name).run(keep)
