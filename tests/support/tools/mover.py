"""Run in lab host h1: move one address between h2 and h3 again and again,
as a container that is stopped on one host and started on another, and
check after each move that traffic reaches only the new host.

    mover.py STORE_URL AGENT_DIR SRC_NETNS NETNS_H2 NETNS_H3 MOVES

The endpoint "mover" (10.9.0.50 in network net1, MAC derived from it, so
the same MAC each time) is detached and attached again on the other host.
After the new host reports it ready and h1's FDB points at the new host,
SRC_NETNS pings it: the reply must come, and the old host's VXLAN receive
counter for net1 must not move (moby#35401: packets to the old host)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from uvxlan import cluster  # noqa: E402
from uvxlan.control import query_agent  # noqa: E402
from uvxlan.store import open_store  # noqa: E402

IP = "10.9.0.50"


def net1_rx(agent_dir: str, host: str) -> int:
    st = query_agent(f"{agent_dir}/{host}.sock", "stats")
    return int(next((n["rx_packets"] for n in st["networks"] if n["name"] == "net1"), 0))


def h1_points_at(agent_dir: str, mac: str, vtep: str) -> bool:
    fdb: list[dict[str, Any]] = query_agent(f"{agent_dir}/h1.sock", "fdb")["fdb"]
    return any(e["mac"] == mac and e["remote"] == vtep for e in fdb)


def ping(netns: str) -> bool:
    for _ in range(3):
        done = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", IP],
                              capture_output=True, timeout=10)
        if done.returncode == 0:
            return True
    return False


async def main(url: str, agent_dir: str, src: str, ns: dict[str, str], moves: int
               ) -> dict[str, Any]:
    store = open_store(url)
    failures: list[str] = []
    hosts = {h.name: h for h in await cluster.list_hosts(store)}
    try:
        where = None
        for i in range(moves):
            new = "h2" if i % 2 == 0 else "h3"
            if where is not None:
                await cluster.detach(store, "net1", "mover")
            rec = await cluster.attach(store, "net1", host=new, netns=ns[new], name="mover",
                                       ip=IP)
            await cluster.wait_ready(store, rec, 15)
            deadline = time.monotonic() + 10
            while not h1_points_at(agent_dir, rec.mac, hosts[new].underlay):
                if time.monotonic() > deadline:
                    failures.append(f"move {i}: h1 never pointed {rec.mac} at {new}")
                    break
                await asyncio.sleep(0.02)
            old_rx = net1_rx(agent_dir, where) if where else 0
            if not ping(src):
                failures.append(f"move {i}: no reply from {new}")
            if where and net1_rx(agent_dir, where) != old_rx:
                failures.append(f"move {i}: old host {where} still received traffic")
            where = new
        return {"moves": moves, "failures": failures}
    finally:
        await store.close()


if __name__ == "__main__":
    a = sys.argv
    print(json.dumps(asyncio.run(main(a[1], a[2], a[3], {"h2": a[4], "h3": a[5]},
                                      int(a[6])))))
