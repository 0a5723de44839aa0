"""The SQLite store's lease clock, without root: deadlines on CLOCK_BOOTTIME
of the boot the file names, a schema-1 file (wall-clock expiries)
converted, the leases of an earlier boot ended.  The wall-clock step
itself is tested under libfaketime in tests/system/test_identity.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from uvxlan.errors import LeaseExpired
from uvxlan.store import Event
from uvxlan.store import sqlite as backend
from uvxlan.store.sqlite import SqliteStore

SCHEMA_1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('revision', 2), ('compacted', 0);
CREATE TABLE kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL,
    create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL);
CREATE INDEX kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE events (
    revision INTEGER PRIMARY KEY, type TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL);
CREATE TABLE leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expiry REAL NOT NULL);
CREATE INDEX leases_expiry ON leases (expiry);
PRAGMA user_version=1;
"""


def _deadlines(path: Path) -> dict[int, float]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT id, deadline FROM leases").fetchall())


def test_deadlines_count_in_boottime(tmp_path: Path) -> None:
    async def body() -> int:
        store = SqliteStore(tmp_path / "s.db")
        try:
            return await store.lease_grant(30)
        finally:
            await store.close()

    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    lease = asyncio.run(body())
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before + 30 <= _deadlines(tmp_path / "s.db")[lease] <= after + 30


def test_a_schema_1_file_is_converted(tmp_path: Path) -> None:
    """A live lease of schema 1 keeps what it had left; an expired one
    ends (with its key) at the first operation."""
    path = tmp_path / "s.db"
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1)
        now = time.time()
        conn.execute("INSERT INTO leases VALUES (1, 100, ?), (2, 5, ?)", (now + 100, now - 1))
        conn.execute("INSERT INTO kv VALUES (?, ?, 1, 1, 1), (?, ?, 2, 2, 2)",
                     (b"/t/live", b"a", b"/t/dead", b"b"))

    async def body() -> None:
        store = SqliteStore(path)
        try:
            assert await store.get("/t/live") is not None
            assert await store.get("/t/dead") is None
            await store.lease_keepalive(1)
            with pytest.raises(LeaseExpired):
                await store.lease_keepalive(2)
        finally:
            await store.close()

    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    asyncio.run(body())
    assert list(_deadlines(path)) == [1]
    assert before + 99 <= _deadlines(path)[1] <= time.clock_gettime(time.CLOCK_BOOTTIME) + 101
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == backend.SCHEMA_VERSION
        assert conn.execute("SELECT id FROM boot").fetchall() == [(backend._boot(),)]


def test_the_leases_of_an_earlier_boot_end(tmp_path: Path) -> None:
    """A file carried across a reboot: its deadlines count in the old
    boot's clock, whose agents are all gone: every lease ends, its keys go
    with delete events (the watchers see the hosts leave), the rest stays."""
    path = tmp_path / "s.db"

    async def first() -> int:
        store = SqliteStore(path)
        try:
            lease = await store.lease_grant(3600)
            await store.put("/t/host", b"h", lease=lease)
            await store.put("/t/net", b"n")
            return lease
        finally:
            await store.close()

    lease = asyncio.run(first())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE boot SET id = 'another-boot'")

    async def after_reboot() -> None:
        store = SqliteStore(path)
        try:
            kvs, rev = await store.list("/t/")
            assert [kv.key for kv in kvs] == ["/t/net"]
            events = [ev async for ev in _take(store.watch("/t/", start_revision=1), 3)]
            assert [(ev.type, ev.key) for ev in events][-1] == ("delete", "/t/host")
            with pytest.raises(LeaseExpired):
                await store.lease_keepalive(lease)
        finally:
            await store.close()

    asyncio.run(after_reboot())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM boot").fetchall() == [(backend._boot(),)]


async def _take(events: AsyncIterator[Event], n: int) -> AsyncIterator[Event]:
    async for ev in events:
        yield ev
        n -= 1
        if n == 0:
            return
