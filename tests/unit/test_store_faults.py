"""Store faults never stop the controller, without root: the store is
SQLite in a tmp dir behind ``FaultyStore``, which makes the controller's
calls fail with the error each fault gives (a real etcd and SQLite make
them in tests/system/test_store_faults.py); the node is the in-memory
fake of test_controller.  While a fault lasts the controller keeps
running, changes nothing in the datapath and logs one line; once it
heals, the controller takes in what changed meanwhile and logs that the
store is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_controller import MTU, VTEP, FakeNode, _typed
from uvxlan import cluster, controller
from uvxlan.cluster import HostRecord
from uvxlan.config import HostConfig
from uvxlan.controller import Backoff, Controller, StoreHealth
from uvxlan.errors import (
    StoreCompacted,
    StoreDenied,
    StoreError,
    StoreUnavailable,
)
from uvxlan.store import Event, open_store

ME = "h1"


class FaultyStore:
    """The Store interface of ``inner``; while ``fail()`` holds, the calls
    it names (all by default) raise its error, and a running watch ends
    with it.  ``calls`` counts the calls that failed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.error: StoreError | None = None
        self.ops: set[str] | None = None
        self.failed = 0
        self._broken = asyncio.Event()

    def fail(self, error: StoreError, ops: set[str] | None = None) -> None:
        self.error, self.ops = error, ops
        if ops is None or "watch" in ops:
            self._broken.set()

    def heal(self) -> None:
        self.error = None
        self._broken.clear()

    def _check(self, op: str) -> None:
        if self.error is not None and (self.ops is None or op in self.ops):
            self.failed += 1
            raise self.error

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name == "close" or not callable(attr):
            return attr

        async def call(*args: Any, **kw: Any) -> Any:
            self._check(name)
            return await attr(*args, **kw)

        return call

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        self._check("watch")
        inner = self.inner.watch(prefix, start_revision=start_revision)
        try:
            while True:
                nxt = asyncio.ensure_future(anext(inner))
                broken = asyncio.ensure_future(self._broken.wait())
                await asyncio.wait({nxt, broken}, return_when=asyncio.FIRST_COMPLETED)
                broken.cancel()
                if not nxt.done():
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    self._check("watch")
                    continue
                yield nxt.result()
        finally:
            await inner.aclose()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller, "BACKOFF_FIRST", 0.02)
    monkeypatch.setattr(controller, "BACKOFF_MAX", 0.1)


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while True:
            got = check()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(what)          # pragma: no cover - timeout raises first


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "uvxlan.controller" and r.levelno == level]


def run(tmp_path: Path, scenario: Callable[[Controller, FaultyStore, FakeNode],
                                           Awaitable[None]]) -> None:
    """A running controller for h1 (lease TTL 2 s, a list every 2 s), with
    net1, c1 on h1 and c2 on h2 applied; then scenario."""
    async def main() -> None:
        inner = open_store(f"sqlite://{tmp_path}/state.db")
        store, node = FaultyStore(inner), FakeNode()
        ctl = Controller(_typed(node), HostConfig(underlay=VTEP[ME], name=ME, lease_ttl=2.0,
                                                   resync=2.0),
                         store)  # type: ignore[arg-type]  # a Store by duck typing
        await inner.put(cluster.host_key("h2"), cluster.encode(
            HostRecord(name="h2", underlay=VTEP["h2"], port=4789)))
        await cluster.create_network(inner, "net1", subnet="10.0.0.0/24", vni=256, mtu=MTU)
        task = asyncio.create_task(ctl.run())
        try:
            await until(lambda: bool(ctl.lease), 5, "registered")
            await cluster.attach(inner, "net1", host="h1", netns="c1", ip="10.0.0.11")
            await cluster.attach(inner, "net1", host="h2", netns="c2", ip="10.0.0.12")
            await until(lambda: len(ctl.applied.local) == 1 and len(ctl.applied.fdb) == 1,
                        5, "the first sync")
            await scenario(ctl, store, node)
            assert not task.done(), "the controller ended"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ctl.close()

    asyncio.run(main())


# --- Backoff and the log, alone ---------------------------------------------------------

def test_backoff_doubles_from_the_first_to_the_cap_with_jitter_in_the_upper_half() -> None:
    lo = Backoff(rand=lambda: 0.0)
    assert [lo.next() for _ in range(4)] == [0.01, 0.02, 0.04, 0.05]   # cap 0.1 (fixture)
    hi = Backoff(rand=lambda: 0.999999)
    assert [round(hi.next(), 3) for _ in range(3)] == [0.02, 0.04, 0.08]
    hi.reset()
    assert round(hi.next(), 3) == 0.02
    assert Backoff(rand=lambda: 0.0).next(slow=True) == 0.05          # a refusal: the cap


def test_one_line_per_episode_one_per_new_kind_and_one_when_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="uvxlan.controller")
    now = [100.0]
    health = StoreHealth(clock=lambda: now[0])
    for _ in range(50):
        health.failed("sync", StoreUnavailable("etcd unreachable: 127.0.0.1:2379 refused"))
        health.failed("registration", StoreUnavailable("etcd unreachable"))
    health.failed("registration", StoreError("etcd: database space exceeded"))
    health.ok("sync")                      # one task back: the episode goes on
    now[0] = 112.5
    health.ok("registration")
    health.ok("registration")              # nothing failing: nothing to say
    warned = lines(caplog, logging.WARNING)
    assert len(warned) == 2, warned
    assert warned[0].startswith("store unreachable (etcd unreachable: 127.0.0.1:2379 refused)")
    assert warned[1].startswith("store failing (etcd: database space exceeded)")
    assert lines(caplog, logging.INFO) == ["store back after 12.5 s (101 failed tries); "
                                           "in step again"]
    assert health.episodes == 1 and not health.failing
    health.failed("sync", StoreDenied("permission denied"))
    assert health.episodes == 2
    assert lines(caplog, logging.ERROR)[0].startswith("store refused us (permission denied)")


# --- The controller under each fault ---------------------------------------------------

FAULTS = {
    "unreachable": StoreUnavailable("etcd unreachable: 127.0.0.1:2379 Connection refused"),
    "nospace": StoreError("etcd 127.0.0.1:2379: etcdserver: mvcc: database space exceeded"),
    "denied": StoreDenied("store etcd://127.0.0.1:2379: permission denied to user 'uvxlan'"),
    "watch-cancelled": StoreError("etcd 127.0.0.1:2379: watch cancelled: no reason given"),
    "corrupt": StoreError("store /x/state.db: file is not a database"),
    "locked": StoreUnavailable("store /x/state.db: database is locked"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_mid_run_changes_nothing_logs_once_and_heals(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    caplog.set_level(logging.INFO, logger="uvxlan.controller")

    async def scenario(ctl: Controller, store: FaultyStore, node: FakeNode) -> None:
        before, caplog.records[:] = node.state(), []
        store.fail(FAULTS[fault])
        # A change made while the store fails us: seen once it heals.
        await cluster.attach(store.inner, "net1", host="h2", netns="c3", ip="10.0.0.13")
        await until(lambda: store.failed >= 10, 5, "retries")
        await asyncio.sleep(0.3)
        assert node.state() == before                 # the datapath kept what it had
        level = logging.ERROR if fault == "denied" else logging.WARNING
        assert len(lines(caplog, level)) == 1, caplog.text
        assert str(FAULTS[fault]) in lines(caplog, level)[0]
        assert ctl.health.failing
        store.heal()
        await until(lambda: len(ctl.applied.fdb) == 2, 5, "the change made meanwhile")
        await until(lambda: not ctl.health.failing, 5, "every task back")
        assert [m for m in lines(caplog, logging.INFO) if m.startswith("store back")]
        assert len(lines(caplog, logging.WARNING)) + len(lines(caplog, logging.ERROR)) == 1

    run(tmp_path, scenario)


def test_status_writes_failing_never_stop_the_watch(tmp_path: Path) -> None:
    async def scenario(ctl: Controller, store: FaultyStore, node: FakeNode) -> None:
        store.fail(StoreError("etcdserver: mvcc: database space exceeded"), ops={"put", "delete"})
        await cluster.attach(store.inner, "net1", host="h2", netns="c3", ip="10.0.0.13")
        await cluster.attach(store.inner, "net1", host="h1", netns="c4", ip="10.0.0.14")
        # Reads still work: both are applied though no status can be written.
        await until(lambda: len(ctl.applied.fdb) == 2 and len(ctl.applied.local) == 2, 5,
                    "events applied while writes fail")
        assert await store.inner.get(cluster.status_key("h1", "net1", "c4")) is None
        store.heal()

        async def written() -> bool:
            return await store.inner.get(cluster.status_key("h1", "net1", "c4")) is not None

        await until(written, 5, "the queued status written")

    run(tmp_path, scenario)


def test_a_lease_revoked_by_hand_is_granted_anew_with_our_keys(tmp_path: Path) -> None:
    async def scenario(ctl: Controller, store: FaultyStore, node: FakeNode) -> None:
        old = ctl.lease
        await store.inner.lease_revoke(old)             # host key and statuses go with it
        assert await store.inner.get(cluster.host_key(ME)) is None

        async def back() -> bool:
            host = await store.inner.get(cluster.host_key(ME))
            st = await store.inner.get(cluster.status_key(ME, "net1", "c1"))
            return (host is not None and host.lease == ctl.lease != old
                    and st is not None and st.lease == ctl.lease)

        await until(back, 5, "host key and status under a new lease")
        assert len(ctl.applied.local) == 1             # the endpoint never went

    run(tmp_path, scenario)


def test_a_lease_lost_while_the_store_was_away_is_granted_anew(tmp_path: Path) -> None:
    async def scenario(ctl: Controller, store: FaultyStore, node: FakeNode) -> None:
        old = ctl.lease
        store.fail(StoreUnavailable("etcd unreachable"))
        await asyncio.sleep(2.5)                         # past the TTL: the lease expires
        assert await store.inner.get(cluster.host_key(ME)) is None
        store.heal()

        async def back() -> bool:
            host = await store.inner.get(cluster.host_key(ME))
            return host is not None and host.lease == ctl.lease != old

        await until(back, 5, "registered again")

    run(tmp_path, scenario)


def test_a_compacted_watch_lists_again_without_a_fault(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="uvxlan.controller")

    async def scenario(ctl: Controller, store: FaultyStore, node: FakeNode) -> None:
        syncs = ctl.work["full_syncs"]
        store.fail(StoreCompacted("revision 7 is compacted"), ops={"watch"})
        await asyncio.sleep(0.05)
        store.heal()
        await until(lambda: ctl.work["full_syncs"] > syncs, 5, "a new list")
        assert "watch history compacted; listing again" in caplog.text
        assert not lines(caplog, logging.WARNING) and not ctl.health.failing

    run(tmp_path, scenario)


def test_a_refusal_before_the_first_registration_still_ends_the_controller(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = FaultyStore(open_store(f"sqlite://{tmp_path}/state.db"))
        store.fail(StoreDenied("user 'uvxlan' or its password refused"))
        ctl = Controller(_typed(FakeNode()), HostConfig(underlay=VTEP[ME], name=ME),
                         store)  # type: ignore[arg-type]
        try:
            with pytest.raises(StoreDenied, match="password refused"):
                async with asyncio.timeout(5):
                    await ctl.run()
        finally:
            await ctl.close()

    asyncio.run(main())


def test_any_other_store_error_at_start_is_retried(tmp_path: Path) -> None:
    async def main() -> None:
        store = FaultyStore(open_store(f"sqlite://{tmp_path}/state.db"))
        store.fail(StoreError("etcdserver: mvcc: database space exceeded"))
        ctl = Controller(_typed(FakeNode()), HostConfig(underlay=VTEP[ME], name=ME),
                         store)  # type: ignore[arg-type]
        task = asyncio.create_task(ctl.run())
        try:
            await until(lambda: store.failed >= 5, 5, "retries")
            assert not task.done()
            store.heal()
            await until(ctl.synced.is_set, 5, "registered and synced")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ctl.close()

    asyncio.run(main())



def test_an_etcd_client_that_fails_to_close_still_gives_a_store_error() -> None:
    """Dropping a failed client closes it; if that close raises too, the
    caller still gets its one-line StoreError, not the raw exception."""
    from uvxlan.store.etcd import EtcdStore

    class BrokenClient:
        closed = 0

        async def close(self) -> None:
            self.closed += 1
            raise RuntimeError("channel already closed")

    async def main() -> None:
        store = open_store("etcd://127.0.0.1:2379")
        assert isinstance(store, EtcdStore)
        client = BrokenClient()
        store._client, store._endpoint = client, "127.0.0.1:2379"
        err = await store._error(ValueError("a gRPC failure of its own"), client)
        assert type(err) is StoreError
        assert str(err) == "etcd 127.0.0.1:2379: ValueError: a gRPC failure of its own"
        assert client.closed == 1 and store._client is None

    asyncio.run(main())
