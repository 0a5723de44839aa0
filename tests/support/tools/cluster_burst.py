"""Run in a lab host: create networks and attach endpoints as fast as it
can, racing the same script on other hosts.  Prints what it made as JSON.

    cluster_burst.py STORE_URL HOST NETWORKS ENDPOINTS NETNS

Networks are HOST-n0.. (VNI and subnet chosen by the store); endpoints go
into the network "shared" (whichever host creates it first), realised by
HOST's agent in NETNS (the host's own) as interfaces HOSTe0.."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from uvxlan import cluster  # noqa: E402
from uvxlan.errors import UvxlanError  # noqa: E402
from uvxlan.store import open_store  # noqa: E402


async def main(url: str, host: str, nets: int, eps: int, netns: str) -> dict[str, list[str]]:
    store = open_store(url)
    try:
        with contextlib.suppress(UvxlanError):      # another host made it first
            await cluster.create_network(store, "shared")
        made = await asyncio.gather(*(cluster.create_network(store, f"{host}-n{i}")
                                      for i in range(nets)))
        attached = await asyncio.gather(*(
            cluster.attach(store, "shared", host=host, netns=netns,
                           name=f"{host}-e{i}", ifname=f"{host}e{i}")
            for i in range(eps)))
        return {"networks": [n.name for n in made], "endpoints": [e.name for e in attached]}
    finally:
        await store.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                      int(sys.argv[4]), sys.argv[5]))))
