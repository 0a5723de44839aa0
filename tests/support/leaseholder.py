"""A store user for the clock-step tests, run under libfaketime.

    python -m tests.support.leaseholder STORE_PATH LIVE_TTL DEAD_TTL SECONDS

Grants two leases on the SQLite store at STORE_PATH, puts ``/t/live``
under the first and keeps it alive every LIVE_TTL/4 seconds, puts
``/t/dead`` under the second and never renews it (an agent that died).
Every 0.1 s it prints one JSON line: whether each key is there (as this
process sees it: its reads expire the leases that are due), the wall
clock, CLOCK_BOOTTIME, and the error of the last keepalive (None if it
held).  Its first line says "ready"; it ends after SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from uvxlan.errors import StoreError
from uvxlan.store.sqlite import SqliteStore


async def main(path: str, live_ttl: float, dead_ttl: float, seconds: float) -> None:
    store = SqliteStore(path)
    try:
        live = await store.lease_grant(live_ttl)
        await store.put("/t/live", b"1", lease=live)
        dead = await store.lease_grant(dead_ttl)
        await store.put("/t/dead", b"1", lease=dead)
        print(json.dumps({"ready": True}), flush=True)
        end = time.monotonic() + seconds
        renewed = time.monotonic()
        error: str | None = None
        while time.monotonic() < end:
            if time.monotonic() - renewed >= live_ttl / 4:
                renewed = time.monotonic()
                try:
                    await store.lease_keepalive(live)
                    error = None
                except StoreError as exc:
                    error = str(exc)
            print(json.dumps({
                "live": await store.get("/t/live") is not None,
                "dead": await store.get("/t/dead") is not None,
                "wall": time.time(), "boot": time.clock_gettime(time.CLOCK_BOOTTIME),
                "error": error}), flush=True)
            await asyncio.sleep(0.1)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
