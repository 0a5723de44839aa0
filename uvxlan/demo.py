"""``uvxlan demo``: the experiment uvxlan comes from, on one machine.

Two hosts h1 and h2, two overlay networks net1 and net2 with their own
VNIs, both on 10.0.0.0/24 as Docker's overlay did.  net1c1 and net2c1 live
on h1, net1c2 and net2c2 on h2.  The demo shows each container's address,
route and MTU, pings net1c1 -> net1c2 across hosts (must succeed) and
net1c1 -> the net2 containers (must fail: isolated), shows the counters,
then removes everything.  Any expectation not met makes it exit 1.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from uvxlan import netlink
from uvxlan.errors import UvxlanError
from uvxlan.lab import Lab
from uvxlan.overlay import Overlay, Placement

LAB = "demo"
NETWORKS = {"net1": 4097, "net2": 4098}
PLACEMENTS = [
    Placement("net1c1", "h1", "net1", "10.0.0.2/24"),
    Placement("net2c1", "h1", "net2", "10.0.0.4/24"),
    Placement("net1c2", "h2", "net1", "10.0.0.3/24"),
    Placement("net2c2", "h2", "net2", "10.0.0.5/24"),
]


class Demo:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failures.append(what)

    def show_container(self, lab: Lab, p: Placement) -> None:
        ns = lab.container_netns(p.container)
        info = netlink.link_info("eth0", netns=ns)
        addrs = [f"{a}/{n}" for ifname, a, n in netlink.addresses(ns)
                 if ifname == "eth0" and ":" not in a]
        routes = [f"{r['dst']} dev eth0" for r in netlink.routes(ns)
                  if r["dev"] == "eth0" and r["family"] == 4]
        print(f"  {p.container:<7} on {p.host} in {p.network}: eth0 {info['mac']}"
              f" {' '.join(addrs)} mtu {info['mtu']}; routes: {'; '.join(routes)}")
        self.check(info["mtu"] == 1450, f"{p.container} eth0 has MTU 1450")
        self.check(p.address in addrs, f"{p.container} eth0 has {p.address}")
        self.check("10.0.0.0/24 dev eth0" in routes,
                   f"{p.container} routes 10.0.0.0/24 through eth0")

    def ping(self, lab: Lab, src: str, dst_ip: str, count: int) -> tuple[bool, str]:
        done = lab.run(lab.container_netns(src),
                       ["ping", "-c", str(count), "-i", "0.2", "-W", "1", dst_ip],
                       timeout=count + 10)
        summary = [ln for ln in done.stdout.splitlines()
                   if "transmitted" in ln or ln.startswith("rtt")]
        received = re.search(r"(\d+) received", done.stdout)
        return bool(received and int(received.group(1)) > 0), " / ".join(summary)

    def run(self, keep: bool) -> int:
        lab = Lab(LAB)
        lab.down()   # a previous demo that crashed leaves nothing in the way
        workdir = Path(tempfile.mkdtemp(prefix="uvxlan-demo-"))
        overlay = Overlay(lab, workdir, NETWORKS, PLACEMENTS, hosts=["h1", "h2"])
        try:
            print("== Building two hosts on a shared underlay")
            for h in lab.up(2):
                print(f"  {h.name}: netns {h.netns}, underlay {h.underlay_ip}")
            for p in PLACEMENTS:
                lab.add_container(p.container)
            print("== Starting an agent on each host (net1 = VNI 4097, net2 = VNI 4098)")
            overlay.start_all()
            print("== Containers (each sees a TAP as eth0)")
            for p in PLACEMENTS:
                self.show_container(lab, p)

            print("== net1c1 (h1) -> net1c2 (h2), same network, across hosts")
            ok, summary = self.ping(lab, "net1c1", "10.0.0.3", 3)
            print(f"  {summary}")
            self.check(ok, "net1c1 reaches net1c2 across hosts")

            print("== net1c1 -> net2 containers: other network, must not answer")
            for name, ip in (("net2c2", "10.0.0.5"), ("net2c1", "10.0.0.4")):
                ok, summary = self.ping(lab, "net1c1", ip, 2)
                print(f"  to {name} ({ip}): {summary}")
                self.check(not ok, f"net1c1 cannot reach {name} (isolated)")

            print("== Counters on h1")
            stats = overlay.query("h1", "stats")
            for n in stats["networks"]:
                print(f"  {n['name']} (VNI {n['vni']}): sent {n['tx_packets']}"
                      f" datagrams, received {n['rx_packets']}")
            net1 = next(n for n in stats["networks"] if n["name"] == "net1")
            self.check(net1["tx_packets"] > 0 and net1["rx_packets"] > 0,
                       "net1's traffic crossed the underlay as VXLAN")
        except UvxlanError as exc:
            self.check(False, str(exc))
        finally:
            if keep and not self.failures:
                print(f"== Left running; remove with: uvxlan lab down --name {LAB}")
            else:
                print("== Cleaning up")
                codes = overlay.stop_all()
                self.check(all(c == 0 for c in codes.values()),
                           "agents stopped cleanly on SIGTERM")
                lab.down()
                self.check(not lab.namespaces(), "every namespace removed")
        if self.failures:
            print(f"demo FAILED: {len(self.failures)} check(s) failed")
            return 1
        print("demo passed")
        return 0


def run(keep: bool = False) -> int:
    return Demo().run(keep)
