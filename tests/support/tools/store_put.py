"""Run in a lab host: write values straight to the cluster store, as a
writer of the store who bypasses the CLI's checks would (hostile records).

    store_put.py STORE_URL JSON

JSON is an object {KEY: VALUE}: a VALUE that is a string is written as
its UTF-8 bytes, anything else as its JSON text."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from uvxlan.store import open_store  # noqa: E402


async def main(url: str, puts: dict[str, object]) -> None:
    store = open_store(url)
    try:
        for key, value in puts.items():
            data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
            await store.put(key, data)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
