"""A store that refuses the agent's credentials (StoreDenied): before the
first registration the controller ends with that error itself (the agent
prints it as one line); after, it logs it and keeps running, so forwarding
goes on.  A status write that fails never breaks the sync either.  The
store is SQLite in a tmp dir, wrapped to refuse on demand."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_controller import ME, VTEP, FakeNode, _typed
from uvxlan import cluster
from uvxlan.cluster import HostRecord
from uvxlan.config import HostConfig
from uvxlan.controller import Controller
from uvxlan.errors import StoreDenied, StoreUnavailable
from uvxlan.store import open_store


class RefusingStore:
    """The Store interface of ``inner``; every call refused while ``deny``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.deny = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name == "close" or not callable(attr):
            return attr

        def refused(*args: Any, **kw: Any) -> Any:
            if self.deny:
                raise StoreDenied("store etcds://192.0.2.10:2379: user 'uvxlan' or its "
                                  "password (file /x) refused")
            return attr(*args, **kw)

        return refused


def controller(tmp_path: Path) -> tuple[Controller, RefusingStore]:
    store = RefusingStore(open_store(f"sqlite://{tmp_path}/state.db"))
    cfg = HostConfig(underlay=VTEP[ME], name=ME, lease_ttl=2.0)
    return Controller(_typed(FakeNode()), cfg, store), store  # type: ignore[arg-type]


def test_refused_at_start_ends_the_controller_with_that_error(tmp_path: Path) -> None:
    async def main() -> None:
        ctl, store = controller(tmp_path)
        store.deny = True
        try:
            with pytest.raises(StoreDenied, match="user 'uvxlan' or its password"):
                async with asyncio.timeout(5):
                    await ctl.run()
        finally:
            await ctl.close()

    asyncio.run(main())


def test_refused_later_is_logged_and_the_controller_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="uvxlan.controller")

    async def main() -> None:
        ctl, store = controller(tmp_path)
        task = asyncio.create_task(ctl.run())
        try:
            async with asyncio.timeout(5):
                await ctl.synced.wait()
            store.deny = True
            async with asyncio.timeout(5):
                while "store refused us" not in caplog.text:
                    await asyncio.sleep(0.05)
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            store.deny = False
            await ctl.close()

    asyncio.run(main())


class StatusFailingStore(RefusingStore):
    """Every status write refused as unavailable (a full etcd, a locked
    file); everything else answered."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != "put":
            return attr

        async def put(key: str, *args: Any, **kw: Any) -> Any:
            if key.startswith(cluster.STATUS):
                raise StoreUnavailable("store sqlite: database is locked")
            return await attr(key, *args, **kw)

        return put


def test_a_failing_status_write_does_not_break_the_sync(tmp_path: Path) -> None:
    """apply() queues what it cannot write: the first sync completes and
    is not repeated (no relist loop), the status stays queued."""
    async def main() -> None:
        store = StatusFailingStore(open_store(f"sqlite://{tmp_path}/state.db"))
        await cluster.create_network(store.inner, "net1", subnet="10.0.0.0/24", vni=256)
        me = HostRecord(name=ME, underlay=VTEP[ME], port=4789)
        await store.inner.put(cluster.host_key(ME), cluster.encode(me))   # no lease: by hand
        await cluster.attach(store.inner, "net1", host=ME, netns="c1", ip="10.0.0.11")
        cfg = HostConfig(underlay=VTEP[ME], name=ME, lease_ttl=30.0)
        ctl = Controller(_typed(FakeNode()), cfg, store)  # type: ignore[arg-type]
        task = asyncio.create_task(ctl.run())
        try:
            async with asyncio.timeout(5):
                await ctl.synced.wait()
            await asyncio.sleep(0.5)
            assert not task.done()
            assert ctl.work["full_syncs"] == 1
            assert ctl._status_todo == {cluster.endpoint_key("net1", "c1")}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ctl.close()

    asyncio.run(main())
