"""``uvxlan demo``: the experiment uvxlan comes from, on one machine, run
the way a user would.

Two hosts h1 and h2 each run an agent on the embedded store (a SQLite
file); ``uvxlan network create`` makes net1 and net2 (their own VNIs and
subnets), ``uvxlan attach`` puts net1c1 and net2c1 on h1, net1c2 and
net2c2 on h2.  The demo shows each container's address, route and MTU,
pings net1c1 -> net1c2 across hosts (must succeed) and net1c1 -> the net2
containers (must fail: isolated, even with a route that makes net1c1 ask
for them on its own segment), shows the FDB h1 filled from the store, then
removes everything.  Any expectation not met makes it exit 1.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from uvxlan import netlink
from uvxlan.errors import UvxlanError
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay

LAB = "demo"
# container, host, network
PLACEMENTS = [
    ("net1c1", "h1", "net1"),
    ("net2c1", "h1", "net2"),
    ("net1c2", "h2", "net1"),
    ("net2c2", "h2", "net2"),
]


class Checks:
    """A demo's checks: each printed [ok] or [FAILED], the failures kept;
    its work directory kept for them; its verdict."""

    def __init__(self, lab_name: str = LAB) -> None:
        self.lab_name = lab_name
        self.failures: list[str] = []
        self.ov: ClusterOverlay | None = None

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failures.append(what)

    def keep_for_failures(self, workdir: Path) -> None:
        """The agents' logs and store stay when a check failed."""
        if self.failures:
            print(f"  agent logs and store kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    def verdict(self) -> int:
        """The exit code, said in a line."""
        if self.failures:
            print(f"demo FAILED: {len(self.failures)} check(s) failed")
            return 1
        print("demo passed")
        return 0


class Demo(Checks):

    def uvxlan(self, *args: str, show: bool = True, store: bool = True) -> str:
        """Run the CLI as a user would (on h1), echoing the command."""
        assert self.ov is not None
        if show:
            print(f"  $ uvxlan {shlex.join(args)}")
        done = self.ov.cli(*args, store=store)
        if show:
            for line in done.stdout.rstrip().splitlines():
                print(f"    {line}")
        return done.stdout

    def show_container(self, lab: Lab, name: str, host: str, ep: dict[str, Any],
                       subnet: str) -> None:
        ns = lab.container_netns(name)
        info = netlink.link_info("eth0", netns=ns)
        addrs = [f"{a}/{n}" for ifname, a, n in netlink.addresses(ns)
                 if ifname == "eth0" and ":" not in a]
        routes = [f"{r['dst']} dev eth0" for r in netlink.routes(ns)
                  if r["dev"] == "eth0" and r["family"] == 4]
        print(f"  {name:<7} on {host}: eth0 {info['mac']} {' '.join(addrs)}"
              f" mtu {info['mtu']}; routes: {'; '.join(routes)}")
        self.check(info["mtu"] == 1450, f"{name} eth0 has MTU 1450")
        self.check(ep["ip"] in addrs, f"{name} eth0 has {ep['ip']} from the store")
        self.check(f"{subnet} dev eth0" in routes, f"{name} routes {subnet} through eth0")

    def ping(self, lab: Lab, src: str, dst_ip: str, count: int) -> tuple[bool, str]:
        done = lab.run(lab.container_netns(src),
                       ["ping", "-c", str(count), "-i", "0.2", "-W", "1", dst_ip],
                       timeout=count + 10)
        summary = [ln for ln in done.stdout.splitlines()
                   if "transmitted" in ln or ln.startswith("rtt")]
        received = re.search(r"(\d+) received", done.stdout)
        return bool(received and int(received.group(1)) > 0), " / ".join(summary)

    def run(self, keep: bool) -> int:
        lab = Lab(self.lab_name)
        lab.down()   # a previous demo that crashed leaves nothing in the way
        workdir = Path(tempfile.mkdtemp(prefix="uvxlan-demo-"))
        store = f"sqlite://{workdir}/state.db"
        self.ov = ov = ClusterOverlay(lab, workdir, store)
        try:
            print("== Building two hosts on a shared underlay")
            for h in lab.up(2):
                print(f"  {h.name}: netns {h.netns}, underlay {h.underlay_ip}")
            print(f"== Starting an agent on each host, on the embedded store {store}")
            for name in ("h1", "h2"):
                ov.start(name)
                print(f"  uvxlan agent --store {store} --name {name}"
                      f" --advertise {lab.host(name).underlay_ip}")
            self.uvxlan("host", "ls")

            print("== Creating the networks (VNIs and subnets allocated by the store)")
            self.uvxlan("network", "create", "net1")
            self.uvxlan("network", "create", "net2")
            nets = {n["name"]: n for n in json.loads(self.uvxlan("network", "ls", "--json",
                                                                   show=False))}
            self.uvxlan("network", "ls")
            self.check(nets["net1"]["vni"] != nets["net2"]["vni"],
                       "net1 and net2 have their own VNIs")

            print("== Attaching the containers")
            for name, host, net in PLACEMENTS:
                netns = lab.add_container(name)
                self.uvxlan("attach", net, "--host", host, "--netns", netns, "--name", name)
            eps = {e["name"]: e for e in json.loads(self.uvxlan("endpoint", "ls", "--json",
                                                                  show=False))}
            self.uvxlan("endpoint", "ls")

            print("== Containers (each sees a TAP as eth0)")
            for name, host, net in PLACEMENTS:
                self.show_container(lab, name, host, eps[name], nets[net]["subnet"])

            ip = {name: str(e["ip"]).split("/")[0] for name, e in eps.items()}
            print("== net1c1 (h1) -> net1c2 (h2), same network, across hosts")
            ok, summary = self.ping(lab, "net1c1", ip["net1c2"], 3)
            print(f"  {summary}")
            self.check(ok, "net1c1 reaches net1c2 across hosts")

            print("== net1c1 -> net2 containers: other network, must not answer")
            # An on-link route makes net1c1 ask for net2's addresses on its
            # own segment: only VNI isolation keeps the answer away.
            lab.run(lab.container_netns("net1c1"),
                    ["ip", "route", "add", nets["net2"]["subnet"], "dev", "eth0"], check=True)
            for name in ("net2c2", "net2c1"):
                ok, summary = self.ping(lab, "net1c1", ip[name], 2)
                print(f"  to {name} ({ip[name]}): {summary}")
                self.check(not ok, f"net1c1 cannot reach {name} (isolated)")

            print("== h1's forwarding table, filled from the store")
            fdb = self.uvxlan("fdb", "show", "--agent", ov.control_socket("h1"), store=False)
            self.check(eps["net1c2"]["mac"] in fdb and "store" in fdb,
                       "h1 knows net1c2's MAC from the store")
            stats = ov.query("h1", "stats")
            net1 = next(n for n in stats["networks"] if n["name"] == "net1")
            print(f"  net1 on h1: sent {net1['tx_packets']} datagrams, received"
                  f" {net1['rx_packets']}, answered {net1['arp_replies']} ARP request(s) locally")
            self.check(net1["tx_packets"] > 0 and net1["rx_packets"] > 0,
                       "net1's traffic crossed the underlay as VXLAN")
        except UvxlanError as exc:
            self.check(False, str(exc))
        finally:
            if keep and not self.failures:
                print(f"== Left running (store {store}); remove with: "
                      f"uvxlan lab down --name {self.lab_name}")
            else:
                print("== Cleaning up")
                codes = ov.stop_all()
                self.check(all(c == 0 for c in codes.values()),
                           f"agents stopped cleanly on SIGTERM (exit codes {codes})")
                lab.down()
                self.check(not lab.namespaces(), "every namespace removed")
                self.keep_for_failures(workdir)
        return self.verdict()


def run(keep: bool = False, lab_name: str = LAB) -> int:
    return Demo(lab_name).run(keep)
