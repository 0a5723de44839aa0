"""The etcd v3 store, through aetcd (asyncio gRPC): for hosts on several
machines.

Keys and revisions are etcd's own: ``cas`` and conditional ``delete`` are
transactions comparing the key's mod_revision, ``txn`` is one etcd Txn
(all its changes at one revision), a lease is an etcd lease, and ``list``
returns the revision of the range read (its header).

Endpoints are tried in turn: the store keeps one client, connected to the
first endpoint whose channel becomes ready.  When a call finds the server
gone (gRPC UNAVAILABLE or a deadline), that client is dropped and the call
raises StoreUnavailable; the next call connects again, starting at the next
endpoint.  Reads (get, list) go straight on to the next endpoint once;
writes do not, since the first may have been applied.

Each watch is its own gRPC Watch stream (not aetcd's shared watcher), so
cancelling one cancels only its stream, and a lost connection or a
compacted start revision ends it with StoreUnavailable or StoreCompacted.

etcd's lease TTLs are whole seconds, at least its minimum (1.5 x the
election timeout, 2 s with the defaults): ``lease_grant`` rounds up.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc

from uvxlan.errors import LeaseExpired, StoreCompacted, StoreError, StoreUnavailable
from uvxlan.store.base import KV, Event, check_key, check_txn, prefix_range

log = logging.getLogger("uvxlan.store")

T = TypeVar("T")

_GRPC_OPTIONS: dict[str, int] = {
    "grpc.max_receive_message_length": 64 << 20,   # a large list()
    "grpc.keepalive_time_ms": 10_000,              # notice a dead server under a watch
    "grpc.keepalive_timeout_ms": 5_000,            # (etcd allows pings every 5 s)
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
}
_UNAVAILABLE = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError,
                aetcd.WatchTimeoutError)
_LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
         grpc.StatusCode.CANCELLED)          # a watch whose channel was dropped


class EtcdStore:
    """A Store on an etcd v3 cluster; see the module docstring."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._client: Any = None            # aetcd.Client
        self._endpoint = ""                 # host:port of _client
        self._next = 0                      # the endpoint to try first
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return "EtcdStore(" + ",".join(f"{h}:{p}" for h, p in self.endpoints) + ")"

    # The Store interface -----------------------------------------------------

    async def get(self, key: str) -> KV | None:
        k = check_key(key)

        async def op(client: Any) -> KV | None:
            got = await client.get(k)
            return None if got is None else _kv(got)

        return await self._call(op, idempotent=True)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        k = check_key(key)

        async def op(client: Any) -> int:
            done = await client.put(k, bytes(value), lease=lease)
            return int(done.header.revision)

        return await self._call(op)

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        return await self.cas(key, value, mod_revision=0, lease=lease)

    async def cas(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        k = check_key(key)

        async def op(client: Any) -> bool:
            tx = client.transactions
            ok, _ = await client.transaction(compare=[tx.mod(k) == mod_revision],
                                             success=[tx.put(k, bytes(value), lease=lease)],
                                             failure=[])
            return bool(ok)

        return await self._call(op)

    async def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        k = check_key(key)

        async def op(client: Any) -> bool:
            if mod_revision is None:
                return await client.delete(k) is not None
            tx = client.transactions
            ok, responses = await client.transaction(compare=[tx.mod(k) == mod_revision],
                                                     success=[tx.delete(k)], failure=[])
            return bool(ok) and responses[0].response_delete_range.deleted > 0

        return await self._call(op)

    async def txn(self, *, compare: Sequence[tuple[str, int]] = (),
                  put: Sequence[tuple[str, bytes, int]] = (),
                  delete: Sequence[str] = ()) -> bool:
        cmp, puts, dels = check_txn(compare, put, delete)

        async def op(client: Any) -> bool:
            tx = client.transactions
            ok, _ = await client.transaction(
                compare=[tx.mod(k) == rev for k, rev in cmp],
                success=[tx.put(k, v, lease=lease) for k, v, lease in puts]
                + [tx.delete(k) for k in dels],
                failure=[])
            return bool(ok)

        return await self._call(op)

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        lo, hi = _etcd_range(prefix)

        async def op(client: Any) -> tuple[list[KV], int]:
            got = await client.get_range(lo, hi, sort_order="ascend", sort_target="key")
            return [_kv(kv) for kv in got.kvs], int(got.header.revision)

        return await self._call(op, idempotent=True)

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        lo, hi = _etcd_range(prefix)
        client = await self._connected()
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=lo, range_end=hi, start_revision=max(0, start_revision))))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise StoreUnavailable(f"etcd {self._endpoint}: the watch stream ended")
                if resp.compact_revision:
                    raise StoreCompacted(
                        f"etcd {self._endpoint}: revision {start_revision} is compacted "
                        f"(history starts at {resp.compact_revision})")
                if resp.canceled:
                    raise StoreError(f"etcd {self._endpoint}: watch cancelled: "
                                     f"{resp.cancel_reason or 'no reason given'}")
                for ev in resp.events:
                    if ev.type == rpc.Event.PUT:
                        yield Event(type="put", key=ev.kv.key.decode(), value=ev.kv.value,
                                    revision=int(ev.kv.mod_revision))
                    else:
                        yield Event(type="delete", key=ev.kv.key.decode(), value=b"",
                                    revision=int(ev.kv.mod_revision))
        except grpc.aio.AioRpcError as exc:
            if self._closed and exc.code() == grpc.StatusCode.CANCELLED:
                return                      # close() ends watches quietly
            raise await self._error(exc, client) from None
        finally:
            call.cancel()

    async def lease_grant(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be positive, not {ttl!r}")
        seconds = max(1, math.ceil(ttl))

        async def op(client: Any) -> int:
            lease = await client.lease(seconds)
            return int(lease.id)

        return await self._call(op)

    async def lease_keepalive(self, lease: int) -> None:
        async def op(client: Any) -> None:
            reply = await client.refresh_lease(lease)
            if reply is None:
                raise StoreUnavailable(f"etcd {self._endpoint}: no keepalive reply")
            if reply.TTL <= 0:              # etcd's answer for an unknown lease
                raise LeaseExpired(f"lease {lease:x} has expired or was revoked")

        await self._call(op, idempotent=True)

    async def lease_revoke(self, lease: int) -> None:
        async def op(client: Any) -> None:
            try:
                await client.revoke_lease(lease)
            except aetcd.ClientError as exc:
                if _code(exc) != grpc.StatusCode.NOT_FOUND:
                    raise

        await self._call(op)

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # Beyond the interface ------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision``: a watch from an earlier
        revision raises StoreCompacted from now on."""
        async def op(client: Any) -> None:
            try:
                await client.compact(revision, physical=True)
            except aetcd.ClientError as exc:
                if "has been compacted" not in str(exc):
                    raise

        await self._call(op)

    # Connections and errors ----------------------------------------------------

    async def _call(self, op: Callable[[Any], Awaitable[T]], *, idempotent: bool = False) -> T:
        """Run op on a connected client, its errors as StoreErrors.  An
        idempotent op that lost the server tries once more (the next
        endpoint first)."""
        attempts = 2 if idempotent and len(self.endpoints) > 1 else 1
        for attempt in range(attempts):
            client = await self._connected()
            try:
                return await op(client)
            except aetcd.ClientError as exc:
                err = await self._error(exc, client)
            if not isinstance(err, StoreUnavailable) or attempt == attempts - 1:
                raise err
            log.info("store: %s; trying the next endpoint", err)
        raise AssertionError("unreachable")

    async def _connected(self) -> Any:
        """The client, connecting first if there is none: to the endpoints
        in turn, from self._next, until one's channel is ready."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            failures = []
            for i in range(len(self.endpoints)):
                n = (self._next + i) % len(self.endpoints)
                host, port = self.endpoints[n]
                client = aetcd.Client(host=host, port=port, timeout=self.timeout,
                                      options=dict(_GRPC_OPTIONS))
                try:
                    await client.connect()
                    await self._ready(client.channel)
                except (aetcd.ClientError, StoreUnavailable) as exc:
                    failures.append(f"{host}:{port} {exc}")
                    await client.close()
                    continue
                self._client, self._endpoint, self._next = client, f"{host}:{port}", n
                return client
            raise StoreUnavailable("etcd unreachable: " + "; ".join(failures))

    async def _ready(self, channel: grpc.aio.Channel) -> None:
        """Wait until the channel is connected; fail at once when the
        connection is refused, or after self.timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                         grpc.ChannelConnectivity.SHUTDOWN):
                raise StoreUnavailable("connection failed")
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state),
                                       deadline - loop.time())
            except TimeoutError:
                raise StoreUnavailable(f"no connection in {self.timeout:g} s") from None
            state = channel.get_state(try_to_connect=True)

    async def _error(self, exc: Exception, client: Any) -> StoreError:
        """The StoreError for an aetcd or gRPC error; a lost server also
        drops the client, so the next call connects again."""
        if isinstance(exc, StoreError):
            return exc
        where = f"etcd {self._endpoint}"
        if isinstance(exc, aetcd.RevisionCompactedError):
            return StoreCompacted(f"{where}: history before {exc.compacted_revision} "
                                  "is compacted")
        code = _code(exc)
        detail = _detail(exc)
        if isinstance(exc, _UNAVAILABLE) or code in _LOST:
            if self._client is client:
                self._client = None
                self._next = (self._next + 1) % len(self.endpoints)
                await client.close()
            return StoreUnavailable(f"{where}: {detail}")
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in detail:
            return LeaseExpired(f"{where}: {detail}")
        return StoreError(f"{where}: {detail}")


def _code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status behind an aetcd error (aetcd chains it as __cause__)."""
    for e in (exc, exc.__cause__):
        if isinstance(e, grpc.aio.AioRpcError):
            code: grpc.StatusCode = e.code()
            return code
    return None


def _detail(exc: BaseException) -> str:
    for e in (exc, exc.__cause__):
        if isinstance(e, grpc.aio.AioRpcError):
            return str(e.details() or e.code().name).replace("\n", " ")
    return str(exc).replace("\n", " ") or type(exc).__name__


def _etcd_range(prefix: str) -> tuple[bytes, bytes]:
    """(key, range_end) for a prefix in etcd's terms: "\\0" as range_end
    means no bound, and the empty prefix is every key from "\\0" on."""
    lo, hi = prefix_range(prefix)
    return lo or b"\0", b"\0" if hi is None else hi


def _kv(kv: Any) -> KV:
    return KV(key=bytes(kv.key).decode(), value=bytes(kv.value),
              create_revision=int(kv.create_revision), mod_revision=int(kv.mod_revision),
              lease=int(kv.lease))
