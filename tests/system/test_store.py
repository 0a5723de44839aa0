"""The store contract, written once and run against both backends: sqlite (a
database file in tmp_path) and etcd (a real ``etcd`` on 127.0.0.1, started
for this module, skipped when the binary is missing).

Each test runs its coroutine on a uvloop loop, as the agent does, under an
overall timeout; every wait inside has its own.  Keys live under a prefix
unique to the test, so tests sharing the etcd server never see each other.
A ``Backend`` supplies the few things that differ: how to open a store, to
compact, to make the store unavailable for a while, and an address where
none can be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import uvloop

from tests.support import etcdserver
from tests.support.children import Racers
from tests.support.etcdserver import EtcdServer, free_ports, needs_etcd
from uvxlan.errors import ConfigError, LeaseExpired, StoreCompacted, StoreError, StoreUnavailable
from uvxlan.store import DEFAULT_SQLITE_PATH, KV, Event, Store, open_store
from uvxlan.store.etcd import EtcdStore
from uvxlan.store.sqlite import SqliteStore

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
etcd_server = etcdserver.etcd_server          # the shared fixture, one server per module
TEST_TIMEOUT = 40.0


def run(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT) -> T:
    """Run a test body on uvloop; a hang fails the test instead of the run."""
    return uvloop.run(asyncio.wait_for(coro, timeout))


# The backends ----------------------------------------------------------------

class Backend:
    name = ""
    url = ""
    reads_survive_outage = False      # sqlite in WAL mode: a held write lock blocks writers only

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ns = f"/t{secrets.token_hex(4)}/"      # this test's keys

    @contextlib.asynccontextmanager
    async def store(self, url: str | None = None) -> AsyncIterator[Store]:
        s = open_store(url or self.url)
        try:
            yield s
        finally:
            await s.close()

    async def compact(self, store: Store, revision: int) -> None:
        compact: Callable[[int], Awaitable[None]] = getattr(store, "compact")  # noqa: B009
        await compact(revision)

    def outage(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def unreachable_url(self) -> str:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"
    reads_survive_outage = True

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.db = tmp_path / "state" / "state.db"
        self.url = f"sqlite://{self.db}?busy_timeout=2"

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """Another writer holds the write lock past the busy timeout."""
        holder = sqlite3.connect(self.db, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            holder.close()

    def unreachable_url(self) -> str:
        blocker = self.tmp_path / "not-a-dir"
        blocker.write_text("a file where the store wants a directory\n")
        return f"sqlite://{blocker}/state.db"


class EtcdBackend(Backend):
    name = "etcd"

    def __init__(self, tmp_path: Path, server: EtcdServer) -> None:
        super().__init__(tmp_path)
        self.server = server
        self.url = server.store_url

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The server stops; then starts again on the same data and ports."""
        await asyncio.to_thread(self.server.stop)
        try:
            yield
        finally:
            await asyncio.to_thread(self.server.start)

    def unreachable_url(self) -> str:
        return f"etcd://127.0.0.1:{free_ports(1)[0]}?timeout=2"


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=needs_etcd)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(tmp_path)
    return EtcdBackend(tmp_path, request.getfixturevalue("etcd_server"))


async def take(events: AsyncIterator[Event], n: int, timeout: float) -> list[Event]:
    """The next n events, or fail after timeout."""
    got: list[Event] = []

    async def collect() -> None:
        async for ev in events:
            got.append(ev)
            if len(got) == n:
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        pytest.fail(f"saw {len(got)} of {n} events in {timeout} s: {got}")
    return got


async def stop(events: AsyncIterator[Event]) -> None:
    """End a watch (each backend's watch is an async generator)."""
    await cast(AsyncGenerator[Event, None], events).aclose()


async def first_event(events: AsyncIterator[Event], timeout: float = 10.0) -> Event:
    return (await take(events, 1, timeout))[0]


# Keys, revisions, prefixes ---------------------------------------------------

def test_put_get_list(backend: Backend) -> None:
    async def body() -> None:
        p = backend.ns
        async with backend.store() as s:
            assert await s.get(p + "a/b") is None
            r1 = await s.put(p + "a/b", b"1")
            r2 = await s.put(p + "a/bc", b"2")
            r3 = await s.put(p + "a/b/c", b"3")
            r4 = await s.put(p + "a/b/d", b"\x00\xff")
            assert 0 < r1 < r2 < r3 < r4
            assert await s.get(p + "a/b") == KV(p + "a/b", b"1", r1, r1, 0)
            r5 = await s.put(p + "a/b", b"one")
            assert r5 > r4
            assert await s.get(p + "a/b") == KV(p + "a/b", b"one", r1, r5, 0)

            kvs, rev = await s.list(p + "a/b/")            # a directory: not a/b, not a/bc
            assert [kv.key for kv in kvs] == [p + "a/b/c", p + "a/b/d"]
            assert kvs[1] == KV(p + "a/b/d", b"\x00\xff", r4, r4, 0)
            assert rev >= r5
            kvs, _ = await s.list(p + "a/b")               # a plain string prefix
            assert [kv.key for kv in kvs] == [p + "a/b", p + "a/b/c", p + "a/b/d", p + "a/bc"]
            kvs, _ = await s.list(p + "a/bc/")
            assert kvs == []
            kvs, rev2 = await s.list(p)
            assert len(kvs) == 4 and rev2 >= rev
            everything, _ = await s.list("")
            assert {kv.key for kv in kvs} <= {kv.key for kv in everything}

            r6 = await s.put(p + "ü/ключ", "värde".encode())
            assert await s.get(p + "ü/ключ") == KV(p + "ü/ключ", "värde".encode(), r6, r6, 0)
            kvs, rev3 = await s.list(p + "ü/")
            assert [kv.key for kv in kvs] == [p + "ü/ключ"] and rev3 >= r6

            with pytest.raises(ConfigError):
                await s.put("", b"x")

    run(body())


def test_create_only_if_absent(backend: Backend) -> None:
    async def body() -> None:
        k = backend.ns + "net/net1"
        async with backend.store() as s:
            assert await s.create(k, b"first")
            assert not await s.create(k, b"second")
            kv = await s.get(k)
            assert kv is not None and kv.value == b"first"
            assert await s.delete(k)
            assert await s.create(k, b"again")
            kv2 = await s.get(k)
            assert kv2 is not None and kv2.value == b"again"
            assert kv2.create_revision > kv.create_revision

    run(body())


def test_cas(backend: Backend) -> None:
    async def body() -> None:
        k = backend.ns + "counter"
        async with backend.store() as s:
            assert not await s.cas(k, b"x", mod_revision=1)       # absent: only 0 matches
            assert await s.cas(k, b"1", mod_revision=0)
            kv = await s.get(k)
            assert kv is not None
            assert not await s.cas(k, b"x", mod_revision=0)       # present now
            assert await s.cas(k, b"2", mod_revision=kv.mod_revision)
            assert not await s.cas(k, b"3", mod_revision=kv.mod_revision)   # stale
            kv2 = await s.get(k)
            assert kv2 is not None and kv2.value == b"2"
            assert kv2.mod_revision > kv.mod_revision
            assert kv2.create_revision == kv.create_revision

    run(body())


def test_conditional_delete(backend: Backend) -> None:
    async def body() -> None:
        k = backend.ns + "ep/1"
        async with backend.store() as s:
            assert not await s.delete(k)                          # absent
            await s.put(k, b"v1")
            kv = await s.get(k)
            assert kv is not None
            await s.put(k, b"v2")
            assert not await s.delete(k, mod_revision=kv.mod_revision)   # changed since
            kv2 = await s.get(k)
            assert kv2 is not None
            assert await s.delete(k, mod_revision=kv2.mod_revision)
            assert await s.get(k) is None
            assert not await s.delete(k, mod_revision=kv2.mod_revision)
            await s.put(k, b"v3")
            assert await s.delete(k)                              # unconditional
            assert await s.get(k) is None

    run(body())


# Concurrent writers ------------------------------------------------------------

async def increment(store: Store, key: str, n: int) -> int:
    """Add 1 to the counter at key n times by CAS, retrying on conflict;
    returns how many CAS succeeded."""
    done = 0
    for _ in range(n * 200):
        kv = await store.get(key)
        value = int(kv.value) if kv else 0
        if await store.cas(key, str(value + 1).encode(),
                           mod_revision=kv.mod_revision if kv else 0):
            done += 1
            if done == n:
                break
    return done


def _racer_main(argv: list[str], race: Callable[[Store, str, int], Awaitable[int]]) -> None:
    """A racer in another process: connects, says ready, waits for a line
    on stdin (so every racer starts at once), races, prints its result."""
    url, key, n = argv[0], argv[1], int(argv[2])

    async def main() -> int:
        store = open_store(url)
        try:
            await store.get(key)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            return await race(store, key, n)
        finally:
            await store.close()

    print(uvloop.run(main()), flush=True)


def worker_main(argv: list[str]) -> None:
    """A CAS worker: increments n times, prints its count."""
    _racer_main(argv, increment)


def test_concurrent_cas_tasks(backend: Backend) -> None:
    """Six tasks on three store handles race to increment one counter: no
    update is lost, and a watch sees every value once, in order."""
    async def body() -> None:
        k = backend.ns + "counter"
        per_task, tasks = 10, 6
        async with backend.store() as a, backend.store() as b, backend.store() as c:
            kvs, rev = await a.list(backend.ns)
            assert kvs == []
            watch = a.watch(k, start_revision=rev + 1)
            seen = asyncio.ensure_future(take(watch, per_task * tasks, 30.0))
            handles = [a, b, c] * (tasks // 3)
            counts = await asyncio.gather(*(increment(h, k, per_task) for h in handles))
            kv = await b.get(k)
            assert kv is not None
            assert int(kv.value) == sum(counts) == per_task * tasks
            events = await seen
            await stop(watch)
            assert [e.value for e in events] == [str(i).encode() for i in range(1, 61)]
            assert all(e.type == "put" for e in events)
            revs = [e.revision for e in events]
            assert revs == sorted(set(revs)) and revs[-1] == kv.mod_revision

    run(body())


def test_concurrent_cas_processes(backend: Backend) -> None:
    """Two other processes and two local tasks increment one counter at once."""
    async def body() -> None:
        k = backend.ns + "counter"
        n = 25
        argv = [sys.executable, "-c",
                "import sys; from tests.system.test_store import worker_main; "
                "worker_main(sys.argv[1:])",
                backend.url, k, str(n)]
        async with Racers([argv] * 2, cwd=REPO) as racers, backend.store() as s:
            await racers.go()
            local = asyncio.gather(increment(s, k, n), increment(s, k, n))
            outs = await racers.results(30)
            counts = list(await local) + [int(out) for out in outs]
            kv = await s.get(k)
            assert kv is not None
            assert int(kv.value) == sum(counts) == 4 * n

    run(body())


# Transactions ------------------------------------------------------------------

def test_txn_all_or_nothing(backend: Backend) -> None:
    """Every compare must hold for any change to happen; then all of them
    happen, and a watch sees each one."""
    async def body() -> None:
        p = backend.ns
        async with backend.store() as s:
            r0 = await s.put(p + "a", b"a0")
            await s.put(p + "gone", b"to be deleted")
            a = await s.get(p + "a")
            assert a is not None
            # a's revision is stale after this put: the txn below must fail
            await s.put(p + "a", b"a1")
            before, rev_before = await s.list(p)
            assert not await s.txn(compare=[(p + "new", 0), (p + "a", a.mod_revision)],
                                   put=[(p + "new", b"n", 0), (p + "b", b"b", 0)],
                                   delete=[p + "gone"])
            after, rev_after = await s.list(p)
            assert after == before and rev_after == rev_before
            assert not await s.txn(compare=[(p + "a", 0)], put=[(p + "b", b"b", 0)])
            assert await s.get(p + "b") is None

            a1 = await s.get(p + "a")
            assert a1 is not None
            assert await s.txn(compare=[(p + "a", a1.mod_revision), (p + "new", 0)],
                               put=[(p + "new", b"n", 0), (p + "a", b"a2", 0)],
                               delete=[p + "gone", p + "never-was"])
            kvs, rev = await s.list(p)
            assert {kv.key: kv.value for kv in kvs} == {p + "a": b"a2", p + "new": b"n"}
            assert rev > rev_after
            new, a2 = await s.get(p + "new"), await s.get(p + "a")
            assert new is not None and a2 is not None
            assert new.create_revision == new.mod_revision > rev_after
            assert a2.create_revision == r0 and a2.mod_revision > rev_after

            events = await take(s.watch(p, start_revision=rev_after + 1), 3, 10.0)
            assert sorted((e.type, e.key, e.value) for e in events) == [
                ("delete", p + "gone", b""), ("put", p + "a", b"a2"), ("put", p + "new", b"n")]
            assert all(rev_after < e.revision <= rev for e in events)
            by_key = {e.key: e.revision for e in events}
            assert by_key[p + "new"] == new.mod_revision and by_key[p + "a"] == a2.mod_revision

            assert await s.txn()                           # nothing asked: nothing to refuse
            with pytest.raises(ConfigError):
                await s.txn(put=[(p + "x", b"1", 0)], delete=[p + "x"])
            with pytest.raises(ConfigError):
                await s.txn(put=[(p + "x", b"1", 0), (p + "x", b"2", 0)])
            with pytest.raises(ConfigError):
                await s.txn(compare=[("", 0)])
            assert await s.get(p + "x") is None

    run(body())


def test_txn_leases(backend: Backend) -> None:
    """A txn's puts take their leases; a gone lease fails the whole txn."""
    async def body() -> None:
        p = backend.ns
        async with backend.store() as s:
            lease = await s.lease_grant(30.0)
            assert await s.txn(put=[(p + "leased", b"1", lease), (p + "kept", b"2", 0)])
            leased, kept = await s.get(p + "leased"), await s.get(p + "kept")
            assert leased is not None and leased.lease == lease
            assert kept is not None and kept.lease == 0
            await s.lease_revoke(lease)
            assert await s.get(p + "leased") is None and await s.get(p + "kept") is not None
            with pytest.raises(LeaseExpired):
                await s.txn(put=[(p + "other", b"3", 0), (p + "late", b"4", lease)],
                            delete=[p + "kept"])
            assert await s.get(p + "other") is None and await s.get(p + "late") is None
            assert await s.get(p + "kept") is not None

    run(body())


async def txn_race(store: Store, prefix: str, rounds: int) -> int:
    """Race for rounds: each attempt reads the round counter, then in one txn
    claims the round's key, moves the counter on and deletes the round's
    token; returns how many rounds this racer won."""
    won = 0
    for _ in range(rounds * 500):
        kv = await store.get(prefix + "counter")
        assert kv is not None
        r = int(kv.value)
        if r >= rounds:
            return won
        if await store.txn(compare=[(prefix + "counter", kv.mod_revision),
                                    (prefix + f"round/{r:04}", 0)],
                           put=[(prefix + "counter", str(r + 1).encode(), 0),
                                (prefix + f"round/{r:04}", str(os.getpid()).encode(), 0)],
                           delete=[prefix + f"token/{r:04}"]):
            won += 1
    raise AssertionError(f"{rounds} rounds not done after {rounds * 500} attempts")


def txn_worker_main(argv: list[str]) -> None:
    """A txn racer: races the rounds, prints how many it won."""
    _racer_main(argv, txn_race)


def test_txn_concurrent(backend: Backend) -> None:
    """Four local tasks on two handles and two other processes race txns on
    the same keys: exactly one wins each round, and every round's changes
    are all there."""
    async def body() -> None:
        p = backend.ns
        rounds = 30
        async with backend.store() as s, backend.store() as s2:
            assert await s.txn(put=[(p + "counter", b"0", 0)]
                               + [(p + f"token/{r:04}", b"t", 0) for r in range(rounds)])
            _, rev = await s.list(p)
            argv = [sys.executable, "-c",
                    "import sys; from tests.system.test_store import txn_worker_main; "
                    "txn_worker_main(sys.argv[1:])",
                    backend.url, p, str(rounds)]
            async with Racers([argv] * 2, cwd=REPO) as racers:
                await racers.go()
                local = asyncio.gather(*(txn_race(h, p, rounds) for h in (s, s2, s, s2)))
                outs = await racers.results(30)
                wins = list(await local) + [int(out) for out in outs]
            assert sum(wins) == rounds, wins                # one winner per round, no more
            kvs, _ = await s.list(p)
            keys = {kv.key: kv for kv in kvs}
            assert keys[p + "counter"].value == str(rounds).encode()
            assert not [k for k in keys if k.startswith(p + "token/")]
            claimed = [kv for k, kv in keys.items() if k.startswith(p + "round/")]
            assert len(claimed) == rounds
            assert all(kv.create_revision == kv.mod_revision for kv in claimed)  # written once
            events = await take(s.watch(p, start_revision=rev + 1), 3 * rounds, 20.0)
            assert sorted(e.key for e in events if e.type == "delete") == \
                [p + f"token/{r:04}" for r in range(rounds)]
            assert [e.value for e in events if e.key == p + "counter"] == \
                [str(r + 1).encode() for r in range(rounds)]

    run(body())


# Watches -----------------------------------------------------------------------

def test_watch_from_revision(backend: Backend) -> None:
    """A watch replays what happened since its start revision, then goes on
    live, in order, and only under its prefix."""
    async def body() -> None:
        p = backend.ns
        async with backend.store() as s:
            base = await s.put(p + "w/a", b"1")
            await s.put(p + "w/b", b"2")
            await s.put(p + "wx", b"a sibling, not under w/")
            await s.delete(p + "w/a")
            watch = s.watch(p + "w/", start_revision=base + 1)
            first = await take(watch, 2, 10.0)           # made before the watch
            await s.put(p + "w/c", b"3")
            await s.put(p + "wy", b"another sibling")
            await s.delete(p + "w/b")
            await s.put(p + "w/c", b"4")
            later = await take(watch, 3, 10.0)
            await stop(watch)
            got = [(e.type, e.key, e.value) for e in first + later]
            assert got == [("put", p + "w/b", b"2"), ("delete", p + "w/a", b""),
                           ("put", p + "w/c", b"3"), ("delete", p + "w/b", b""),
                           ("put", p + "w/c", b"4")]
            revs = [e.revision for e in first + later]
            assert revs == sorted(set(revs)) and revs[0] > base
            kv = await s.get(p + "w/c")
            assert kv is not None and kv.mod_revision == revs[-1]

            again = s.watch(p + "w/", start_revision=base)   # from the first put itself
            ev = await first_event(again)
            await stop(again)
            assert (ev.type, ev.key, ev.value, ev.revision) == ("put", p + "w/a", b"1", base)

    run(body())


async def put_raw(s: Store, key: bytes, value: bytes) -> None:
    """Write a key of any bytes, as another writer of the store could (the
    Store interface takes only text keys)."""
    if isinstance(s, EtcdStore):
        await s._call(lambda client: client.put(key, value, lease=0))
    else:
        assert isinstance(s, SqliteStore)
        await s._run(s._put, key, value, 0)


def test_a_key_that_is_not_utf8_is_skipped(backend: Backend,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """One undecodable key (any writer can make one) is left out of every
    list and watch and logged once; it never fails them (etcd: every list
    an error forever; SQLite: a raw UnicodeDecodeError out of the store)."""
    async def body() -> None:
        p = backend.ns
        bad = (p + "u/").encode() + b"\xff\xfe"
        async with backend.store() as s:
            base = await s.put(p + "u/a", b"1")
            watch = s.watch(p + "u/", start_revision=base)
            await put_raw(s, bad, b"x")
            await s.put(p + "u/b", b"2")
            for _ in range(2):
                kvs, _ = await s.list(p + "u/")
                assert [kv.key for kv in kvs] == [p + "u/a", p + "u/b"]
            got = await take(watch, 2, 10.0)
            await stop(watch)
            assert [(e.type, e.key) for e in got] == [("put", p + "u/a"), ("put", p + "u/b")]

    with caplog.at_level(logging.WARNING, logger="uvxlan.store"):
        run(body())
    told = [r.getMessage() for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(told) == 1, told


def test_watch_compacted(backend: Backend) -> None:
    async def body() -> None:
        k = backend.ns + "c"
        async with backend.store() as s:
            r1 = await s.put(k, b"1")
            await s.put(k, b"2")
            r3 = await s.put(k, b"3")
            await backend.compact(s, r3)
            with pytest.raises(StoreCompacted):
                await first_event(s.watch(backend.ns, start_revision=r1))
            kvs, rev = await s.list(backend.ns)              # the way back: list, then watch
            assert [kv.value for kv in kvs] == [b"3"]
            watch = s.watch(backend.ns, start_revision=rev + 1)
            r4 = await s.put(k, b"4")
            ev = await first_event(watch)
            await stop(watch)
            assert (ev.value, ev.revision) == (b"4", r4)

    run(body())


def test_sqlite_history_limit(tmp_path: Path) -> None:
    """The sqlite store keeps the last `history` events, and a watch that
    needs older ones, even one already running, raises StoreCompacted."""
    async def body() -> None:
        s = open_store(f"sqlite://{tmp_path}/state.db?history=5")
        try:
            revs = [await s.put(f"/k/{i}", b"v") for i in range(10)]
            with pytest.raises(StoreCompacted):
                await first_event(s.watch("/k/", start_revision=revs[0]))
            with pytest.raises(StoreCompacted):
                await first_event(s.watch("/k/", start_revision=revs[-5] - 1))
            events = await take(s.watch("/k/", start_revision=revs[-5]), 5, 5.0)
            assert [e.revision for e in events] == revs[-5:]

            behind = s.watch("/k/", start_revision=revs[-1] + 1)
            await s.put("/k/x", b"seen")
            assert (await first_event(behind)).key == "/k/x"
            for i in range(10):                              # more than history, in one go
                await s.put(f"/k/{i}", b"w")
            with pytest.raises(StoreCompacted):
                await take(behind, 10, 5.0)
        finally:
            await s.close()

    run(body())


# Leases ----------------------------------------------------------------------

def test_lease_expiry(backend: Backend) -> None:
    """The lease's owner goes away without revoking: within ttl + a couple
    of seconds its keys are deleted, with delete events another store sees."""
    async def body() -> None:
        p = backend.ns + "hosts/"
        ttl = 1.0
        async with backend.store() as watcher:
            owner = open_store(backend.url)
            try:
                lease = await owner.lease_grant(ttl)
                r = await owner.put(p + "h1", b"10.0.0.1", lease=lease)
                await owner.put(p + "h1/port", b"4789", lease=lease)
                await owner.put(p + "h2", b"10.0.0.2")
                kv = await owner.get(p + "h1")
                assert kv is not None and kv.lease == lease
                t0 = time.monotonic()
            finally:
                await owner.close()
            events = await take(watcher.watch(p, start_revision=r + 1), 4, ttl + 4.0)
            assert [(e.type, e.key) for e in events[:2]] == [("put", p + "h1/port"),
                                                             ("put", p + "h2")]
            deletes = events[2:]
            assert sorted(e.key for e in deletes) == [p + "h1", p + "h1/port"]
            assert all(e.type == "delete" and e.value == b"" and e.revision > r
                       for e in deletes)
            assert time.monotonic() - t0 < ttl + 3.0
            assert await watcher.get(p + "h1") is None
            kvs, _ = await watcher.list(p)
            assert [kv.key for kv in kvs] == [p + "h2"]
            with pytest.raises(LeaseExpired):
                await watcher.lease_keepalive(lease)
            with pytest.raises(LeaseExpired):
                await watcher.put(p + "h3", b"x", lease=lease)
            with pytest.raises(LeaseExpired):
                await watcher.create(p + "h3", b"x", lease=lease)
            assert await watcher.get(p + "h3") is None

    run(body())


def test_lease_keepalive(backend: Backend) -> None:
    async def body() -> None:
        k = backend.ns + "hosts/h1"
        async with backend.store() as s:
            lease = await s.lease_grant(1.0)
            await s.put(k, b"alive", lease=lease)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3.0:                  # three ttls
                await s.lease_keepalive(lease)
                await asyncio.sleep(0.25)
                assert await s.get(k) is not None, "expired although kept alive"
            await s.lease_revoke(lease)

    run(body())


def test_lease_revoke(backend: Backend) -> None:
    async def body() -> None:
        p = backend.ns + "hosts/"
        async with backend.store() as s:
            lease = await s.lease_grant(30.0)
            r = await s.put(p + "a", b"1", lease=lease)
            await s.put(p + "b", b"2", lease=lease)
            await s.put(p + "c", b"3", lease=lease)
            await s.put(p + "c", b"3")                       # put again: no lease now
            kv = await s.get(p + "c")
            assert kv is not None and kv.lease == 0
            await s.lease_revoke(lease)
            assert await s.get(p + "a") is None and await s.get(p + "b") is None
            assert await s.get(p + "c") is not None
            events = await take(s.watch(p, start_revision=r + 1), 5, 5.0)
            assert [(e.type, e.key) for e in events[:3]] == [("put", p + "b"), ("put", p + "c"),
                                                             ("put", p + "c")]
            assert sorted((e.type, e.key) for e in events[3:]) == [("delete", p + "a"),
                                                                     ("delete", p + "b")]
            await s.lease_revoke(lease)                       # gone already: nothing to do
            with pytest.raises(LeaseExpired):
                await s.lease_keepalive(lease)

    run(body())


# Failures ----------------------------------------------------------------------

def test_unavailable_then_back(backend: Backend) -> None:
    """The store goes away mid-test: calls raise StoreUnavailable (soon, not
    after a hang); when it is back, so is the data."""
    async def body() -> None:
        k = backend.ns + "kept"
        async with backend.store() as s:
            r = await s.put(k, b"before")
            watch = s.watch(backend.ns, start_revision=r)
            assert (await first_event(watch)).value == b"before"
            async with backend.outage():
                t0 = time.monotonic()
                if not backend.reads_survive_outage:
                    with pytest.raises(StoreUnavailable):
                        await first_event(watch)
                    with pytest.raises(StoreUnavailable):
                        await asyncio.wait_for(s.get(k), 10.0)
                with pytest.raises(StoreUnavailable) as caught:
                    await asyncio.wait_for(s.put(k, b"during"), 10.0)
                assert "\n" not in str(caught.value)
                assert isinstance(caught.value, ConnectionError)
                assert time.monotonic() - t0 < 10.0
            await stop(watch)
            deadline = time.monotonic() + 15.0
            while True:                                       # callers retry with backoff
                try:
                    kv = await s.get(k)
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "store did not come back"
                    await asyncio.sleep(0.2)
            assert kv is not None and kv.value == b"before"
            assert await s.put(k, b"after") > r

    run(body())


def test_unreachable(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store(backend.unreachable_url()) as s:
            for call in (s.get("/x"), s.put("/x", b"v"), s.list("/"), s.lease_grant(5)):
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(call, 10.0)
            with pytest.raises(StoreUnavailable):
                await first_event(s.watch("/", start_revision=1))

    run(body())


@needs_etcd
def test_etcd_endpoints_in_turn(etcd_server: EtcdServer) -> None:
    """A dead endpoint first in the list: the store goes on to the next."""
    async def body() -> None:
        dead = free_ports(1)[0]
        s = open_store(f"etcd://127.0.0.1:{dead},127.0.0.1:{etcd_server.client_port}?timeout=2")
        try:
            r = await s.put("/endpoints/k", b"v")
            kv = await s.get("/endpoints/k")
            assert kv is not None and kv.mod_revision == r
        finally:
            await s.close()

    run(body())


def test_closed(backend: Backend) -> None:
    async def body() -> None:
        s = open_store(backend.url)
        await s.put(backend.ns + "k", b"v")
        await s.close()
        with pytest.raises(StoreError):
            await s.get(backend.ns + "k")

    run(body())


# URLs --------------------------------------------------------------------------

def test_open_store_urls(tmp_path: Path) -> None:
    from uvxlan.store.etcd import EtcdStore
    from uvxlan.store.sqlite import SqliteStore

    async def body() -> None:
        s = open_store(f"sqlite://{tmp_path}/a.db?history=50&busy_timeout=0.5")
        assert isinstance(s, SqliteStore) and isinstance(s, Store)
        assert (s.path, s.history, s.busy_timeout) == (tmp_path / "a.db", 50, 0.5)
        await s.close()
        d = open_store("sqlite://")
        assert isinstance(d, SqliteStore) and str(d.path) == DEFAULT_SQLITE_PATH
        await d.close()
        e = open_store("etcd://10.0.0.1:2379,etcd2,[::1]:23790?timeout=1.5")
        assert isinstance(e, EtcdStore) and isinstance(e, Store)
        assert e.endpoints == [("10.0.0.1", 2379), ("etcd2", 2379), ("[::1]", 23790)]
        assert e.timeout == 1.5
        await e.close()

    run(body())
    for bad in ["", "/var/lib/uvxlan/state.db", "mysql://h/db", "sqlite://relative/state.db",
                "sqlite:///var/lib/uvxlan/", "sqlite:///x.db?history=0",
                "sqlite:///x.db?history=many", "sqlite:///x.db?colour=blue",
                "etcd://", "etcd://h:0", "etcd://h:99999", "etcd://h:port", "etcd://a,,b",
                "etcd://::1:2379", "etcd://h:2379/path", "etcd://h?timeout=-1"]:
        with pytest.raises(ConfigError) as caught:
            open_store(bad)
        assert "\n" not in str(caught.value), bad
