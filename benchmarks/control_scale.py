"""Does the control plane keep up with a large cluster?

    sudo .venv/bin/python benchmarks/control_scale.py [--stores sqlite,etcd]
        [--sizes 10x100,100x1000,1000x10000] [--burst 1000]

One real agent (lab host h1: its own netns, the C datapath, threads on)
follows a simulated cluster written straight to the store: HOSTS host
records under a lease (as their agents would keep them), one network
(VNI 300, 10.64.0.0/12) and ENDPOINTS endpoints spread over those hosts,
none on h1 (the agent programs an FDB entry, a flood-list entry per host,
an ARP entry and an admitted VTEP per host).  Per store (the embedded
SQLite file; etcd in lab host h2, reached over the underlay) and per size:

- start: from spawning the agent to its datapath holding the whole
  cluster;
- attach: from the first of --burst new endpoints written (32 writes in
  flight, each its own put, as ``uvxlan attach`` does) to all of them
  programmed; detach: the same for deleting them;
- the agent's CPU seconds in each phase and per store event of the
  bursts (/proc/PID/stat), its RSS at the end (/proc/PID/status), and the
  controller's records re-screened per event.

Convergence is read from the agent's control socket (``{"cmd":
"control"}``: entry counts and the work still pending), polled every
20 ms.  The agent's resync is set to an hour so a periodic full list does
not land inside a burst.  Prints one table row per run.

The CPU is the whole agent's (its loop, the store's thread or gRPC's,
the datapath threads) and the times are wall clock: on a machine whose
cores other work shares they move by half between runs (the agent's
loop runs at a lower priority than its datapath), so run each size a few
times and take medians.  The work counters (screened/ev) do not move.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvxlan import cluster  # noqa: E402
from uvxlan.cluster import EndpointRecord, HostRecord, NetworkRecord  # noqa: E402
from uvxlan.control import query_agent  # noqa: E402
from uvxlan.lab.netns import Lab  # noqa: E402
from uvxlan.lab.overlay import ClusterOverlay, LabEtcd  # noqa: E402
from uvxlan.store import Store, open_store  # noqa: E402

NETWORK = "big"
VNI = 300
SUBNET = "10.64.0.0/12"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CLONE_NEWNET = 0x40000000
ANSWER_S = 60.0              # how long the agent may take to answer a query


def host_record(i: int) -> HostRecord:
    return HostRecord(name=f"s{i}", underlay=f"198.18.{i // 250}.{i % 250 + 1}", port=4789)


def endpoint_record(i: int, hosts: int) -> EndpointRecord:
    return EndpointRecord(name=f"e{i}", network=NETWORK, host=f"s{i % hosts}", netns=f"e{i}",
                          ifname="eth0", mac=f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                          f"{i & 255:02x}", ip=f"10.{64 + (i + 2) // 65536}.{(i + 2) >> 8 & 255}."
                          f"{(i + 2) & 255}/12")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK       # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def enter_netns(name: str) -> None:
    """Move this process into lab netns name, to reach a store on the
    lab's underlay (the agent's control socket is a file: reachable from
    anywhere)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


async def wait_for(sock: str, done: Callable[[dict[str, Any]], bool],
                   timeout: float) -> tuple[float, dict[str, Any]]:
    """Poll the agent until done(counts): the time it took from now."""
    t0 = time.monotonic()
    while True:
        # Not the CLI's 5 s: the loop answers nothing while it applies a
        # full list, seconds at 10,000 endpoints on a busy machine.
        counts = await asyncio.to_thread(query_agent, sock, "control", ANSWER_S)
        if done(counts):
            return time.monotonic() - t0, counts
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not converged after {timeout:.0f} s: {counts}")
        await asyncio.sleep(0.02)


def holds(hosts: int, endpoints: int) -> Callable[[dict[str, Any]], bool]:
    """Counts of an agent that holds the whole simulated cluster."""
    def done(c: dict[str, Any]) -> bool:
        return (bool(c.get("synced")) and c["pending"] == 0 and c["fdb"] == endpoints
                and c["arp"] == endpoints and c["flood"] == min(hosts, endpoints)
                and c["peers"] == hosts)
    return done


async def populate(store: Store, hosts: int, endpoints: int) -> int:
    """The simulated cluster, written in transactions of 100 keys; the
    lease its hosts live under."""
    lease = await store.lease_grant(3600)
    kvs: list[tuple[str, bytes, int]] = [
        (cluster.network_key(NETWORK), cluster.encode(NetworkRecord(
            name=NETWORK, vni=VNI, subnet=SUBNET, gateway="10.64.0.1", mtu=1450)), 0)]
    kvs += [(cluster.host_key(f"s{i}"), cluster.encode(host_record(i)), lease)
            for i in range(hosts)]
    kvs += [(cluster.endpoint_key(NETWORK, f"e{i}"), cluster.encode(endpoint_record(i, hosts)), 0)
            for i in range(endpoints)]
    for i in range(0, len(kvs), 100):
        await store.txn(put=kvs[i:i + 100])
    return lease


async def burst(store: Store, keys: list[str], values: list[bytes] | None) -> float:
    """Each key put (or deleted, values None) on its own, 32 in flight:
    how long the writes took."""
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            if values is None:
                await store.delete(keys[i])
            else:
                await store.put(keys[i], values[i])

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(len(keys))))
    return time.monotonic() - t0


async def measure(ov: ClusterOverlay, url: str, hosts: int, endpoints: int,
                  n: int) -> dict[str, float]:
    store = open_store(url)
    try:
        lease = await populate(store, hosts, endpoints)
        t0 = time.monotonic()
        proc = ov.start("h1", timeout=600, wait_synced=False)
        sock = ov.control_socket("h1")
        await wait_for(sock, holds(hosts, endpoints), 600)
        r: dict[str, float] = {"start_s": time.monotonic() - t0,
                               "start_cpu": cpu_seconds(proc.pid)}
        work0 = await asyncio.to_thread(query_agent, sock, "control", ANSWER_S)
        keys = [cluster.endpoint_key(NETWORK, f"e{i}") for i in range(endpoints, endpoints + n)]
        values = [cluster.encode(endpoint_record(i, hosts))
                  for i in range(endpoints, endpoints + n)]
        for phase, vals, total in (("attach", values, endpoints + n),
                                   ("detach", None, endpoints)):
            await store.lease_keepalive(lease)
            cpu0 = cpu_seconds(proc.pid)
            t1 = time.monotonic()
            r[f"{phase}_write_s"] = await burst(store, keys, vals)
            await wait_for(sock, holds(hosts, total), 600)
            r[f"{phase}_s"] = time.monotonic() - t1
            r[f"{phase}_cpu"] = cpu_seconds(proc.pid) - cpu0
        work1 = await asyncio.to_thread(query_agent, sock, "control", ANSWER_S)
        events = work1["events"] - work0["events"]
        r["events"] = events
        r["cpu_ms_per_event"] = (r["attach_cpu"] + r["detach_cpu"]) * 1000 / max(events, 1)
        r["rescreened_per_event"] = (work1["rescreened"] - work0["rescreened"]) / max(events, 1)
        r["node_calls_per_event"] = (work1["node_calls"] - work0["node_calls"]) / max(events, 1)
        r["rss_mb"] = rss_mb(proc.pid)
        return r
    finally:
        ov.stop_all()
        # The next run starts from an empty store.
        kvs, _ = await store.list(cluster.ROOT)
        for i in range(0, len(kvs), 100):
            await store.txn(delete=[kv.key for kv in kvs[i:i + 100]])
        await store.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="sqlite,etcd")
    p.add_argument("--sizes", default="10x100,100x1000,1000x10000",
                   help="HOSTSxENDPOINTS, comma-separated")
    p.add_argument("--burst", type=int, default=1000)
    args = p.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]

    lab = Lab("cs" + secrets.token_hex(3))
    workdir = Path(tempfile.mkdtemp(prefix="uvxlan-ctlscale-"))
    etcd: LabEtcd | None = None
    print(f"{'store':<7}{'hosts':>6}{'endpts':>7}{'start s':>9}{'cpu s':>7}"
          f"{'attach s':>9}{'(write)':>8}{'detach s':>9}{'(write)':>8}"
          f"{'cpu ms/ev':>10}{'screened/ev':>12}{'RSS MB':>8}", flush=True)
    try:
        lab.up(2)
        enter_netns(lab.host("h1").netns)
        for kind in args.stores.split(","):
            if kind == "etcd":
                etcd = LabEtcd(lab, "h2", workdir / "etcd-data")
                etcd.start()
                url = etcd.url
            else:
                url = f"sqlite://{workdir}/state.db"
            ov = ClusterOverlay(lab, workdir / f"agents-{kind}", url,
                                host_options={"resync": 3600})
            for hosts, endpoints in sizes:
                r = asyncio.run(measure(ov, url, hosts, endpoints, args.burst))
                print(f"{kind:<7}{hosts:>6}{endpoints:>7}{r['start_s']:>9.2f}"
                      f"{r['start_cpu']:>7.2f}{r['attach_s']:>9.2f}{r['attach_write_s']:>8.2f}"
                      f"{r['detach_s']:>9.2f}{r['detach_write_s']:>8.2f}"
                      f"{r['cpu_ms_per_event']:>10.3f}{r['rescreened_per_event']:>12.2f}"
                      f"{r['rss_mb']:>8.0f}", flush=True)
            if etcd is not None:
                etcd.stop()
                etcd = None
        return 0
    finally:
        if etcd is not None:
            etcd.stop()
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
