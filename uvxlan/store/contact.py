"""Whether the store answers: a Store that passes every call through to
another and notes how the last one went (``uvxlan_store_connected`` in
the agent's metrics).

Any answer, a refusal included (a lease gone, a compacted history,
credentials refused), means the store was reached; only StoreUnavailable
means it was not.  The controller's keepalive (every lease_ttl / 3) asks
often enough for this to follow an outage within that time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import suppress
from typing import TypeVar

from uvxlan.errors import StoreUnavailable
from uvxlan.store.base import KV, Event, Store

T = TypeVar("T")


class ContactStore:
    """``inner``, with ``connected`` (None before the first answer) and
    the monotonic time it last changed."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.connected: bool | None = None
        self.since = time.monotonic()

    def _note(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected, self.since = connected, time.monotonic()

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except StoreUnavailable:
            self._note(False)
            raise
        except Exception:
            self._note(True)      # an answer, if not the one hoped for
            raise
        self._note(True)
        return result

    async def get(self, key: str) -> KV | None:
        return await self._call(self.inner.get(key))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return await self._call(self.inner.put(key, value, lease=lease))

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        return await self._call(self.inner.create(key, value, lease=lease))

    async def cas(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        return await self._call(self.inner.cas(key, value, mod_revision=mod_revision,
                                               lease=lease))

    async def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        return await self._call(self.inner.delete(key, mod_revision=mod_revision))

    async def txn(self, *, compare: Sequence[tuple[str, int]] = (),
                  put: Sequence[tuple[str, bytes, int]] = (),
                  delete: Sequence[str] = ()) -> bool:
        return await self._call(self.inner.txn(compare=compare, put=put, delete=delete))

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        return await self._call(self.inner.list(prefix))

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        events = self.inner.watch(prefix, start_revision=start_revision)
        try:
            while True:
                try:
                    event = await self._call(anext(events))
                except StopAsyncIteration:
                    return
                yield event
        finally:
            # The inner watch holds a stream (etcd): end it with ours.  As
            # the controller does, a failure to end it is not news: what
            # ends ours (a cancel, a timeout, an error) is.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with suppress(Exception):
                    await aclose()

    async def lease_grant(self, ttl: float) -> int:
        return await self._call(self.inner.lease_grant(ttl))

    async def lease_keepalive(self, lease: int) -> None:
        await self._call(self.inner.lease_keepalive(lease))

    async def lease_revoke(self, lease: int) -> None:
        await self._call(self.inner.lease_revoke(lease))

    async def close(self) -> None:
        await self.inner.close()
