"""A soak: churn, traffic and agent restarts together, for N minutes.

    sudo .venv/bin/python benchmarks/soak.py --minutes 30 [--json FILE]
        [--restart-every 60] [--iperf-rate 200M] [--churners-per-host 1]

Three lab hosts h1..h3, an agent on each on the embedded store (SQLite),
one network net1 (10.0.0.0/24).  Long-lived containers a1, a2, a3 (one per
host) stay attached the whole run.  Concurrently, for N minutes:

- churn: on every host, containers are attached, held a few seconds and
  detached, their netns removed.  Addresses come from a small pool, the
  one freed last first, and names are often reused right after they were
  freed, each time with a new MAC: a new container takes an address that
  belonged to another a moment ago;
- probes: a UDP datagram from each long-lived container to every address
  of the pool every ~0.3 s, attached or not: what keeps old neighbour
  entries (old MACs) in use after a detach;
- iperf3 TCP from a1 (h1) to a2 (h2), in 30 s slices;
- ping at 10/s a1 -> a2, a2 -> a3, a3 -> a1 (every path crosses hosts);
- agent restarts, rotating h1, h2, h3 every --restart-every seconds,
  alternating SIGTERM and SIGKILL, each followed by a start.

Stale deliveries: every container (churned and long-lived) runs a packet
socket on its eth0 that counts frames the kernel classed PACKET_OTHERHOST:
unicast to a MAC that is not the container's own, i.e. delivered to a
container that is not its addressee (broadcast and multicast are not
counted).  Before the run, a detector check sends such a frame over a veth
pair to the same counter and requires it to be counted.

Per host, the agent's open fds (/proc/PID/fd, and how many of them are
/dev/net/tun), RSS and the TAPs with its alias (uvxlan:HOST) are sampled
at start (after the long-lived containers are attached), at each restart
(the outgoing agent, at the end of its life) and at the end (churn stopped,
every churned container detached).  Restarted agents have new pids: the
same host's agent is compared.

Lost pings are listed with the time since the latest restart of a host on
their path.  Prints a table; --json writes every figure.  Exit 1 if a
stale delivery was seen, fds or TAPs grew, or churn failed.  Everything
it made is removed at the end, also on Ctrl-C or SIGTERM; it ends only
processes it started.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uvxlan import netlink  # noqa: E402
from uvxlan.errors import LabError, UvxlanError  # noqa: E402
from uvxlan.lab.netns import Lab, terminate  # noqa: E402
from uvxlan.lab.overlay import ClusterOverlay  # noqa: E402

HOSTS = ["h1", "h2", "h3"]
NETWORK = "net1"
SUBNET = "10.0.0.0/24"
LONG_LIVED = {"a1": ("h1", "10.0.0.11"), "a2": ("h2", "10.0.0.12"), "a3": ("h3", "10.0.0.13")}
PINGS = [("a1", "a2"), ("a2", "a3"), ("a3", "a1")]
POOL = [f"10.0.0.{i}" for i in range(100, 112)]     # churned containers' addresses
PROBE_PORT = 7777
IPERF_PORT = 5201
IPERF_SLICE = 30
PING_INTERVAL = 0.1
# A lost ping this close to a restart of a host on its path (from the
# stop to this long after the new agent is ready) is put down to it.
RESTART_WINDOW_AFTER = 3.0

# Counts frames the kernel classed PACKET_OTHERHOST on eth0 (unicast whose
# destination MAC is not eth0's), from before eth0 exists until SIGTERM,
# and UDP probes addressed to it.  A classic BPF filter passes only
# PACKET_OTHERHOST, so iperf3's traffic costs the counter nothing.
DETECTOR = r"""
import ctypes, json, select, signal, socket, struct, sys, time
ifname, port = sys.argv[1], int(sys.argv[2])
ETH_P_ALL, SO_ATTACH_FILTER, PACKET_OTHERHOST = 3, 26, 3
# ld pkttype; jeq OTHERHOST ? accept 128 bytes : drop
code = [(0x20, 0, 0, 0xfffff004), (0x15, 0, 1, PACKET_OTHERHOST),
        (0x06, 0, 0, 128), (0x06, 0, 0, 0)]
insns = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
ps.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
              struct.pack("HL", len(code), ctypes.addressof(insns)))
us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
us.bind(("0.0.0.0", port))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
stale, probes, samples, first = 0, 0, [], {}
print("ready", flush=True)
while not stop:
    try:
        ready, _, _ = select.select([ps, us], [], [], 0.5)
    except InterruptedError:
        continue
    if us in ready:
        _, (src, _) = us.recvfrom(2048)
        probes += 1
        first.setdefault(src, time.time())
    if ps in ready:
        data, addr = ps.recvfrom(2048)
        if addr[0] != ifname or addr[2] != PACKET_OTHERHOST or len(data) < 14:
            continue
        stale += 1
        if len(samples) < 20:
            ipv4 = data[12:14] == b"\x08\x00" and len(data) >= 34
            ip_dst = socket.inet_ntoa(data[30:34]) if ipv4 else ""
            samples.append({"t": time.time(), "dst_mac": data[0:6].hex(":"),
                            "src_mac": data[6:12].hex(":"), "ethertype": data[12:14].hex(),
                            "ip_dst": ip_dst})
print(json.dumps({"stale": stale, "probes": probes, "samples": samples,
                  "first_probe": first}), flush=True)
"""

# One UDP datagram every GAP seconds, to each pool address in turn.
PROBER = r"""
import socket, sys, time
port, gap, dsts = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
i = 0
while True:
    try:
        s.sendto(b"soak-probe", (dsts[i % len(dsts)], port))
    except OSError:
        pass      # no neighbour yet (nobody holds the address): ARP goes on
    i += 1
    time.sleep(gap)
"""

PING_LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+)")
PING_SENT = re.compile(r"(\d+) packets transmitted")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stop(Exception):
    """SIGTERM: clean up as on Ctrl-C."""


@dataclass
class Detector:
    """The stale-delivery counter running in one container's netns."""
    container: str
    mac: str
    ip: str
    host: str
    proc: subprocess.Popen[str]
    attached: float = 0.0
    reused_ip: bool = False
    result: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> dict[str, Any]:
        if not self.result:
            self.proc.send_signal(signal.SIGTERM)
            out, err = self.proc.communicate(timeout=10)
            line = out.strip().splitlines()[-1] if out.strip() else ""
            if not line.startswith("{"):
                raise LabError(f"stale detector in {self.container} failed: {err.strip()[-300:]}")
            self.result = json.loads(line)
        return self.result


def start_detector(lab: Lab, netns: str, ifname: str = "eth0") -> subprocess.Popen[str]:
    proc = lab.spawn(netns, [sys.executable, "-c", DETECTOR, ifname, str(PROBE_PORT)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        terminate(proc)
        raise LabError(f"stale detector in {netns} did not start: "
                       f"{proc.stderr.read() if proc.stderr else ''}")
    return proc


SEND_FRAME = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
dst = bytes.fromhex(sys.argv[2].replace(":", ""))
src = bytes.fromhex(sys.argv[3].replace(":", ""))
s.send(dst + src + b"\x88\xb5" + b"soak-detector-check".ljust(46, b"\0"))
"""


def detector_check(lab: Lab) -> int:
    """Send one unicast frame to a foreign MAC over a veth pair into a
    detector: it must count it (the detector can see what it is for)."""
    ns_a, ns_b = lab.add_container("chk-a"), lab.add_container("chk-b")
    try:
        netlink.veth_create("vchk", "eth0", ns_a)
        netlink.link_move("eth0", ns_b, "eth0", netns=ns_a)
        netlink.link_configure("vchk", ns_a, up=True)
        netlink.link_configure("eth0", ns_b, up=True)
        proc = start_detector(lab, ns_b)
        det = Detector("chk-b", "", "", "", proc)
        lab.run(ns_a, [sys.executable, "-c", SEND_FRAME, "vchk", "02:5a:ff:ff:ff:01",
                       "02:5a:ff:ff:ff:02"], check=True)
        time.sleep(0.3)
        return int(det.finish()["stale"])
    finally:
        lab.remove_container("chk-a")
        lab.remove_container("chk-b")


def agent_sample(lab: Lab, ov: ClusterOverlay, host: str) -> dict[str, Any] | None:
    """fds, RSS and TAPs of host's agent now; None while it is not running."""
    proc = ov.proc(host)
    if proc is None or proc.poll() is not None:
        return None
    pid = proc.pid
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        tun = 0
        for fd in fds:
            with contextlib.suppress(OSError):   # an fd closed meanwhile
                tun += os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/net/tun"
        with open(f"/proc/{pid}/status") as f:
            rss_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    taps = 0
    for ns in lab.containers().values():
        try:
            st = netlink.link_state("eth0", ns)
        except UvxlanError:
            continue        # a churned netns going away under us
        taps += st is not None and st["alias"] == f"uvxlan:{host}"
    return {"t": time.time(), "pid": pid, "fds": len(fds), "tun_fds": tun,
            "rss_mb": round(rss_kb / 1024, 1), "taps": taps}


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lab = Lab("sk" + secrets.token_hex(3))
        self.tmp = Path(tempfile.mkdtemp(prefix="uvxlan-soak-"))
        self.ov = ClusterOverlay(self.lab, self.tmp / "agents", f"sqlite://{self.tmp}/state.db")
        self.stop = threading.Event()
        self.lock = threading.Lock()      # pool, names, results, the overlay's procs
        self.cli_lock = threading.Lock()
        self.free_ips = list(POOL)        # the end is the one freed last
        self.free_names: list[str] = []
        self.serial = 0
        self.detectors: list[Detector] = []   # churned, finished
        self.long_detectors: dict[str, Detector] = {}
        self.churn = {"attached": 0, "detached": 0, "ip_reused": 0, "name_reused": 0,
                      "failures": 0, "errors": []}
        self.restarts: list[dict[str, Any]] = []
        self.samples: dict[str, list[dict[str, Any]]] = {h: [] for h in HOSTS}
        self.iperf: list[dict[str, Any]] = []
        self.ip_owners: dict[str, list[tuple[float, str, str]]] = {}  # ip -> (t, name, mac)
        self.background: list[subprocess.Popen[Any]] = []
        self.restarting: set[str] = set()

    # --- helpers -----------------------------------------------------------

    def cli(self, *args: str, host: str = "h1", timeout: float = 60.0) -> None:
        self.ov.cli(*args, host=host, timeout=timeout)

    def error(self, what: str) -> None:
        with self.lock:
            self.churn["failures"] += 1
            if len(self.churn["errors"]) < 20:
                self.churn["errors"].append(f"{time.strftime('%H:%M:%S')} {what}")
        log(f"churn: {what}")

    def sample(self, host: str, when: str) -> None:
        s = agent_sample(self.lab, self.ov, host)
        if s is not None:
            s["when"] = when
            self.samples[host].append(s)

    # --- set-up ------------------------------------------------------------

    def setup(self) -> None:
        self.lab.up(len(HOSTS))
        caught = detector_check(self.lab)
        if caught != 1:
            raise LabError(f"detector check: a foreign unicast frame counted {caught} times, not 1")
        self.detector_check = caught
        for h in HOSTS:
            self.ov.start(h)
        self.cli("network", "create", NETWORK, "--subnet", SUBNET)
        for name, (host, ip) in LONG_LIVED.items():
            ns = self.lab.add_container(name)
            mac = f"02:5a:00:00:00:{int(ip.split('.')[-1]):02x}"
            det = Detector(name, mac, ip, host, start_detector(self.lab, ns))
            self.long_detectors[name] = det
            self.cli("attach", NETWORK, "--host", host, "--netns", ns, "--name", name,
                     "--ip", ip, "--mac", mac)
        for a, b in PINGS:   # neighbours resolved, paths up
            self.lab.run(self.lab.container_netns(a),
                         ["ping", "-c", "3", "-i", "0.2", "-W", "1", LONG_LIVED[b][1]])

    # --- workers -----------------------------------------------------------

    def churner(self, host: str, rng: random.Random) -> None:
        while not self.stop.is_set():
            try:
                self.churn_once(host, rng)
            except (UvxlanError, OSError, subprocess.SubprocessError) as exc:
                self.error(f"{host}: {exc}")
                self.stop.wait(1.0)

    def churn_once(self, host: str, rng: random.Random) -> None:
        with self.lock:
            if not self.free_ips:
                ip = None
            else:
                # the address freed last, most of the time: where stale paths hide
                ip = self.free_ips.pop(-1 if rng.random() < 0.7 else 0)
                reused_ip = ip in self.ip_owners
                self.churn["ip_reused"] += reused_ip
                self.ip_owners.setdefault(ip, [])
                if self.free_names and rng.random() < 0.5:
                    name = self.free_names.pop()
                    self.churn["name_reused"] += 1
                else:
                    self.serial += 1
                    name = f"k{self.serial}"
                self.serial += 1
                # a MAC of its own each time (02:5b: apart from the long-lived 02:5a:)
                mac = "02:5b:" + ":".join(f"{self.serial >> s & 255:02x}" for s in (24, 16, 8, 0))
        if ip is None:
            self.stop.wait(0.5)
            return
        det: Detector | None = None
        netns = None
        attached = False
        try:
            netns = self.lab.add_container(name)
            det = Detector(name, mac, ip, host, start_detector(self.lab, netns),
                           reused_ip=reused_ip)
            self.cli("attach", NETWORK, "--host", host, "--netns", netns, "--name", name,
                     "--ip", ip, "--mac", mac, "--timeout", "30", host=host)
            attached = True
            det.attached = time.time()
            with self.lock:
                self.churn["attached"] += 1
                self.ip_owners[ip].append((det.attached, name, mac))
            self.stop.wait(rng.uniform(2.0, 6.0))
            self.cli("detach", NETWORK, name, host=host)
            attached = False
            with self.lock:
                self.churn["detached"] += 1
            # Traffic for the old MAC is still in the air: keep counting a moment.
            time.sleep(0.5)
        finally:
            if attached:
                try:
                    self.cli("detach", NETWORK, name, host=host)
                except UvxlanError as exc:
                    self.error(f"{host}: detach {name} after a failure: {exc}")
            if det is not None:
                try:
                    det.finish()
                    with self.lock:
                        self.detectors.append(det)
                finally:
                    if det.proc.poll() is None:
                        terminate(det.proc)
            if netns is not None:
                self.lab.remove_container(name)
            with self.lock:
                self.free_ips.append(ip)
                self.free_names.append(name)

    def restarter(self, every: float) -> None:
        i = 0
        while not self.stop.wait(every):
            host = HOSTS[i % len(HOSTS)]
            # h1 TERM, h2 KILL, h3 TERM, h1 KILL, ...: each host gets both
            sig = "term" if i % 2 == 0 else "kill"
            i += 1
            self.restarting.add(host)
            self.sample(host, f"before restart {i}")
            old = self.ov.proc(host)
            t_stop = time.time()
            if sig == "kill":
                self.ov.kill(host)
            else:
                self.ov.stop(host)
            t_down = time.time()
            new = None
            for attempt in range(3):
                try:
                    new = self.ov.start(host, timeout=30)
                    break
                except LabError as exc:
                    log(f"restart {host}: start attempt {attempt + 1} failed: {exc}")
            t_ready = time.time()
            rec = {"host": host, "signal": f"SIG{sig.upper()}", "t_stop": t_stop,
                   "stopped_ms": round((t_down - t_stop) * 1e3),
                   "ready_ms": round((t_ready - t_stop) * 1e3),
                   "old_pid": old.pid if old else None, "new_pid": new.pid if new else None,
                   "t_ready": t_ready}
            with self.lock:
                self.restarts.append(rec)
            log(f"restart {host} ({rec['signal']}): ready after {rec['ready_ms']} ms")
            self.sample(host, f"after restart {i}")
            self.restarting.discard(host)
            if new is None:
                self.error(f"{host}: agent did not come back")
                return

    def iperf_loop(self) -> None:
        a, b = "a1", "a2"
        ns_a = self.lab.container_netns(a)
        while not self.stop.is_set():
            slice_s = IPERF_SLICE
            left = self.deadline - time.monotonic()
            if left < 5:
                return
            slice_s = int(min(slice_s, left - 2))
            t0 = time.time()
            proc = self.lab.spawn(ns_a, ["iperf3", "-c", LONG_LIVED[b][1], "-p", str(IPERF_PORT),
                                         "-t", str(slice_s), "-b", self.args.iperf_rate, "-J",
                                         "--connect-timeout", "5000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, _ = proc.communicate(timeout=slice_s + 60)
            except subprocess.TimeoutExpired:
                terminate(proc)
                self.iperf.append({"t": t0, "ok": False, "error": "timed out"})
                continue
            try:
                res = json.loads(out)
            except ValueError:
                res = {"error": out[-200:]}
            if "error" in res:
                self.iperf.append({"t": t0, "ok": False, "error": str(res["error"])})
                self.stop.wait(1.0)
                continue
            end = res["end"]
            self.iperf.append({"t": t0, "ok": True, "seconds": slice_s,
                               "mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
                               "retransmits": end["sum_sent"].get("retransmits", 0)})

    def sampler(self) -> None:
        while not self.stop.wait(30.0):
            for h in HOSTS:
                if h not in self.restarting:   # not an agent still starting
                    self.sample(h, "periodic")

    # --- the run -----------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        self.setup()
        ns = self.lab.container_netns
        seconds = args.minutes * 60.0
        for h in HOSTS:
            self.sample(h, "start")
        start_wall = time.time()
        self.deadline = time.monotonic() + seconds
        srv = self.lab.spawn(ns("a2"), ["iperf3", "-s", "-B", LONG_LIVED["a2"][1],
                                        "-p", str(IPERF_PORT)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.background.append(srv)
        for name in LONG_LIVED:
            self.background.append(self.lab.spawn(
                ns(name), [sys.executable, "-c", PROBER, str(PROBE_PORT), "0.025", *POOL],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        count = int(seconds / PING_INTERVAL)
        pings = {(a, b): self.lab.spawn(ns(a), ["ping", "-D", "-n", "-i", str(PING_INTERVAL),
                                                "-W", "2", "-c", str(count), LONG_LIVED[b][1]],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                 for a, b in PINGS}
        self.background += list(pings.values())
        outs: dict[tuple[str, str], str] = {}
        readers = [threading.Thread(target=lambda k=k, p=p: outs.__setitem__(k, p.communicate()[0]),
                                    daemon=True) for k, p in pings.items()]
        rng = random.Random(args.seed)
        workers = [threading.Thread(target=self.restarter, args=(args.restart_every,)),
                   threading.Thread(target=self.iperf_loop),
                   threading.Thread(target=self.sampler)]
        workers += [threading.Thread(target=self.churner, args=(h, random.Random(rng.random())))
                    for h in HOSTS for _ in range(args.churners_per_host)]
        for t in readers + workers:
            t.start()
        log(f"lab {self.lab.name}: soak running for {args.minutes} min")
        try:
            while time.monotonic() < self.deadline:
                time.sleep(min(5.0, max(0.0, self.deadline - time.monotonic())))
        finally:
            self.stop.set()
            for t in workers:
                t.join()
        # ping -c runs late under load: stop it at the deadline (SIGINT:
        # it prints its statistics and exits).
        for p in pings.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for t in readers:
            t.join(30)
        end_wall = time.time()
        log("traffic over; waiting for the TAPs to settle")
        # Every churned container is detached: each host keeps its one long-lived TAP.
        settle = time.monotonic() + 30
        while time.monotonic() < settle:
            now = [agent_sample(self.lab, self.ov, h) for h in HOSTS]
            if all(s is not None and s["taps"] == 1 for s in now):
                break
            time.sleep(0.5)
        for h in HOSTS:
            self.sample(h, "end")
        for det in self.long_detectors.values():
            det.finish()
        return self.report(start_wall, end_wall, outs)

    # --- the report --------------------------------------------------------

    def lost_pings(self, pair: tuple[str, str], out: str) -> dict[str, Any]:
        replies: dict[int, float] = {}
        for line in out.splitlines():
            m = PING_LINE.match(line)
            if m:
                replies.setdefault(int(m.group(2)), float(m.group(1)))
        m2 = PING_SENT.search(out)
        sent = int(m2.group(1)) if m2 else (max(replies) if replies else 0)
        seqs = sorted(replies)
        hosts = {LONG_LIVED[pair[0]][0], LONG_LIVED[pair[1]][0]}
        restarts = [r for r in self.restarts if r["host"] in hosts]
        lost = []
        for seq in range(1, sent + 1):
            if seq in replies or not seqs:
                continue
            # when it was sent: from the nearest answered one, at the interval
            j = bisect.bisect_left(seqs, seq)
            near = min((seqs[k] for k in (j - 1, j) if 0 <= k < len(seqs)),
                       key=lambda s: abs(s - seq))
            t = replies[near] + (seq - near) * PING_INTERVAL
            before = [r for r in restarts if r["t_stop"] - 0.5 <= t]
            last = max(before, key=lambda r: r["t_stop"]) if before else None
            near_restart = last is not None and t <= last["t_ready"] + RESTART_WINDOW_AFTER
            lost.append({"seq": seq, "t": round(t, 3),
                         "since_restart_s": round(t - last["t_stop"], 2) if last else None,
                         "restart_host": last["host"] if last else None,
                         "near_restart": near_restart})
        near = sum(1 for x in lost if x["near_restart"])
        return {"pair": f"{pair[0]}->{pair[1]}", "sent": sent, "lost": len(lost),
                "lost_pct": round(100.0 * len(lost) / sent, 3) if sent else None,
                "lost_near_restart": near, "lost_other": len(lost) - near,
                "lost_detail": lost[:500]}

    def report(self, start: float, end: float, outs: dict[tuple[str, str], str]
               ) -> dict[str, Any]:
        stale_rows = []
        for det in self.detectors + list(self.long_detectors.values()):
            r = det.result
            if r.get("stale"):
                samples = r["samples"]
                for s in samples:   # whose MAC it was, if a container of ours had it
                    s["dst_was"] = [(n, round(s["t"] - t, 2)) for ip, owners in
                                    self.ip_owners.items() for t, n, mac in owners
                                    if mac == s["dst_mac"]]
                stale_rows.append({"container": det.container, "host": det.host,
                                   "ip": det.ip, "mac": det.mac, "stale": r["stale"],
                                   "samples": samples})
        stale = sum(r["stale"] for r in stale_rows)
        # How soon the probes (from a1, a2, a3) reached a new container:
        # a neighbour cache that still names an address's old MAC delays it.
        reach: dict[str, Any] = {}
        for kind, dets in (("new_address", [d for d in self.detectors if not d.reused_ip]),
                           ("reused_address", [d for d in self.detectors if d.reused_ip])):
            delays, partial = [], 0
            for d in dets:
                firsts = d.result.get("first_probe", {})
                if len(firsts) == len(LONG_LIVED):
                    delays.append(max(firsts.values()) - d.attached)
                else:
                    partial += 1
            delays.sort()
            reach[kind] = {"containers": len(dets), "reached_by_all": len(delays),
                           "not_by_all": partial,
                           "median_s": round(delays[len(delays) // 2], 2) if delays else None,
                           "max_s": round(delays[-1], 2) if delays else None}
        probes = sum(d.result.get("probes", 0) for d in self.detectors)
        hosts = {}
        for h in HOSTS:
            ss = self.samples[h]
            first = next((s for s in ss if s["when"] == "start"), None)
            last = next((s for s in reversed(ss) if s["when"] == "end"), None)
            delta = ({k: round(last[k] - first[k], 1) for k in ("fds", "tun_fds", "rss_mb", "taps")}
                     if first and last else None)
            # Each agent's own life (a pid's first to last sample): what a
            # leak would add between two restarts.  Churned containers'
            # TAPs come and go: fds other than /dev/net/tun are compared.
            lives: dict[int, list[dict[str, Any]]] = {}
            for s in ss:
                lives.setdefault(s["pid"], []).append(s)
            growth = [{"fds": (life[-1]["fds"] - life[-1]["tun_fds"])
                       - (life[0]["fds"] - life[0]["tun_fds"]),
                       "rss_mb": round(life[-1]["rss_mb"] - life[0]["rss_mb"], 1),
                       "pid": pid, "seconds": round(life[-1]["t"] - life[0]["t"])}
                      for pid, life in lives.items() if len(life) > 1]
            hosts[h] = {"start": first, "end": last, "delta": delta,
                        "agents": len(lives),
                        "max_fd_growth_in_a_life": max((g["fds"] for g in growth), default=None),
                        "max_rss_growth_in_a_life_mb": max((g["rss_mb"] for g in growth),
                                                           default=None),
                        "lives": growth,
                        "max_fds": max((s["fds"] for s in ss), default=None),
                        "max_rss_mb": max((s["rss_mb"] for s in ss), default=None),
                        "samples": ss}
        pings = [self.lost_pings(p, outs.get(p, "")) for p in PINGS]
        iperf_ok = [x for x in self.iperf if x["ok"]]
        grew = [h for h, v in hosts.items()
                if v["delta"] is None or v["delta"]["fds"] > 0 or v["delta"]["taps"] > 0
                or v["delta"]["tun_fds"] > 0]
        return {
            "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
            "lab": self.lab.name, "minutes": self.args.minutes, "start": start, "end": end,
            "load_avg_end": os.getloadavg(),
            "detector_check": self.detector_check,
            "stale": stale, "stale_by_container": stale_rows,
            "churned_containers": len(self.detectors), "probes_delivered_to_churned": probes,
            "probe_reach": reach,
            "churn": self.churn, "restarts": self.restarts, "pings": pings,
            "iperf": {"slices": len(self.iperf), "ok": len(iperf_ok),
                      "failed": len(self.iperf) - len(iperf_ok),
                      "mean_mbit_s": round(sum(x["mbit_s"] for x in iperf_ok) / len(iperf_ok), 1)
                      if iperf_ok else None,
                      "retransmits": sum(x["retransmits"] for x in iperf_ok),
                      "detail": self.iperf},
            "hosts": hosts,
            "grew": grew,
            "passed": stale == 0 and not grew and self.churn["failures"] == 0,
        }

    def cleanup(self) -> None:
        self.stop.set()
        for p in self.background:
            if p.poll() is None:
                terminate(p)
        for det in self.long_detectors.values():
            if det.proc.poll() is None:
                terminate(det.proc)
        try:
            self.ov.stop_all()
        finally:
            self.lab.down()
            shutil.rmtree(self.tmp, ignore_errors=True)


def print_table(r: dict[str, Any]) -> None:
    print(f"soak: {r['minutes']} min, lab {r['lab']}, 3 hosts, embedded store;"
          f" load average at the end {', '.join(f'{x:.2f}' for x in r['load_avg_end'])}")
    c = r["churn"]
    print(f"churn: {c['attached']} attached, {c['detached']} detached"
          f" ({c['ip_reused']} on an address another container had, {c['name_reused']} reusing"
          f" a freed name), {c['failures']} failures")
    print(f"stale deliveries: {r['stale']}  (detector check counted {r['detector_check']}/1;"
          f" {r['probes_delivered_to_churned']} probes reached churned containers)")
    for row in r["stale_by_container"]:
        print(f"  {row['container']} ({row['host']}, {row['ip']}, {row['mac']}): {row['stale']};"
              f" e.g. {row['samples'][:2]}")
    for kind, x in r["probe_reach"].items():
        print(f"probes reaching churned containers on a {kind.replace('_', ' ')}:"
              f" {x['reached_by_all']}/{x['containers']} reached from all 3 long-lived"
              f" containers, median {x['median_s']} s after attach (max {x['max_s']} s)")
    print(f"restarts: {len(r['restarts'])} ("
          + ", ".join(f"{x['host']} {x['signal']} {x['ready_ms']} ms" for x in r["restarts"][:6])
          + (" ..." if len(r["restarts"]) > 6 else "") + ")")
    print("| ping | sent | lost | lost % | near a restart | other |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in r["pings"]:
        print(f"| {p['pair']} | {p['sent']} | {p['lost']} | {p['lost_pct']} "
              f"| {p['lost_near_restart']} | {p['lost_other']} |")
    i = r["iperf"]
    print(f"iperf3 a1->a2: {i['ok']}/{i['slices']} slices completed, mean {i['mean_mbit_s']}"
          f" Mbit/s, {i['retransmits']} retransmits")
    print("| host | fds start | end | diff | tun fds start | end | RSS MB start | end | diff "
          "| TAPs start | end | pid start | end |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for h, v in r["hosts"].items():
        s, e, d = v["start"], v["end"], v["delta"]
        if not (s and e and d):
            print(f"| {h} | missing samples |")
            continue
        print(f"| {h} | {s['fds']} | {e['fds']} | {d['fds']:+g} | {s['tun_fds']} | {e['tun_fds']} "
              f"| {s['rss_mb']} | {e['rss_mb']} | {d['rss_mb']:+g} | {s['taps']} | {e['taps']} "
              f"| {s['pid']} | {e['pid']} |")
    print("per agent life (first to last sample of one pid): largest growth of fds"
          " (not counting TAPs) and RSS: "
          + "; ".join(f"{h} {v['max_fd_growth_in_a_life']:+g} fds,"
                      f" {v['max_rss_growth_in_a_life_mb']:+g} MB over {v['agents']} agents"
                      for h, v in r["hosts"].items()
                      if v["max_fd_growth_in_a_life"] is not None))
    print("PASSED" if r["passed"] else
          f"FAILED: stale {r['stale']}, grew {r['grew']}, churn failures {c['failures']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    p.add_argument("--restart-every", type=float, default=60.0, metavar="S",
                   help="seconds between agent restarts, rotating over the hosts (default 60)")
    p.add_argument("--iperf-rate", default="200M",
                   help="iperf3 -b: the TCP stream's rate cap (default 200M; 0: none)")
    p.add_argument("--churners-per-host", type=int, default=1,
                   help="concurrent attach/detach loops per host (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the churn's choices")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("soak: error: needs root (namespaces, TAPs)", file=sys.stderr)
        return 2
    if not 0 < args.minutes <= 24 * 60 or args.restart_every <= 0 or args.churners_per_host < 1:
        print("soak: error: --minutes must be in (0, 1440], --restart-every > 0,"
              " --churners-per-host >= 1", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise Stop()

    signal.signal(signal.SIGTERM, on_term)
    soak = Soak(args)
    try:
        result = soak.run()
    except (KeyboardInterrupt, Stop):
        print("soak: interrupted; removing everything", file=sys.stderr)
        return 130
    except UvxlanError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 1
    finally:
        soak.cleanup()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
