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

TLS and authentication (``uvxlan.store.credentials`` says where the
settings come from): the channel is TLS when the credentials ask for it,
with their CA (else the system's) and client certificate.  With a user,
each new connection authenticates and every call carries the token etcd
gave.  etcd ends tokens (a JWT's ``ttl``, a simple token unused for
``--auth-token-ttl``, any token after an auth change): a call refused for
that authenticates again and is sent once more, so a running agent never
notices.  A refusal no retry can mend (a certificate the other side does
not accept, a wrong user or password, a permission the user lacks) is
StoreDenied, naming what to fix.
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

from uvxlan.errors import (
    LeaseExpired,
    StoreCompacted,
    StoreDenied,
    StoreError,
    StoreUnavailable,
)
from uvxlan.store.base import KV, Event, check_key, check_txn, decode_key, prefix_range
from uvxlan.store.credentials import EtcdCredentials

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
# etcd's answers to a token it no longer takes: authenticate again and retry.
_TOKEN_ENDED = ("invalid auth token", "revision of auth store is old", "user name is empty")


class _Client(aetcd.Client):  # type: ignore[misc]  # aetcd has no types
    """aetcd's client on a channel of ours: TLS when the credentials ask.
    aetcd 1.0 makes only plaintext channels and authenticates once, in
    connect(); this connect() sets up the same stubs on our channel and
    leaves authentication to EtcdStore (aetcd's calls read self.metadata
    each time, so a renewed token counts from the next call on)."""

    def __init__(self, host: str, port: int, *, timeout: float, options: dict[str, int],
                 credentials: EtcdCredentials) -> None:
        super().__init__(host=host, port=port, timeout=timeout,
                         options=options)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        target, options = f"{self._host}:{self._port}", list(self._options.items())
        c = self._credentials
        if c.tls:
            tls = grpc.ssl_channel_credentials(root_certificates=c.ca, private_key=c.key,
                                               certificate_chain=c.cert)
            self.channel = grpc.aio.secure_channel(target, tls, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.auth_stub = rpc.AuthStub(self.channel)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._connected.set()


class EtcdStore:
    """A Store on an etcd v3 cluster; see the module docstring."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, timeout: float = 5.0,
                 credentials: EtcdCredentials | None = None) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.credentials = credentials or EtcdCredentials()
        self.scheme = "etcds" if self.credentials.tls else "etcd"
        self._auth_lock = asyncio.Lock()
        self._auth_off_logged = False
        self._client: Any = None            # aetcd.Client
        self._endpoint = ""                 # host:port of _client
        self._next = 0                      # the endpoint to try first
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdStore({self.scheme}://" + ",".join(f"{h}:{p}" for h, p in self.endpoints) + ")"

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
            return [kv for kv in map(_kv, got.kvs) if kv is not None], int(got.header.revision)

        return await self._call(op, idempotent=True)

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        lo, hi = _etcd_range(prefix)
        renewed = False
        while True:
            client = await self._connected()
            token = client.metadata
            call = rpc.WatchStub(client.channel).Watch(metadata=token)
            try:
                await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                    key=lo, range_end=hi, start_revision=max(0, start_revision))))
                seen = False
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        raise StoreUnavailable(f"etcd {self._endpoint}: the watch stream ended")
                    if resp.compact_revision:
                        raise StoreCompacted(
                            f"etcd {self._endpoint}: revision {start_revision} is compacted "
                            f"(history starts at {resp.compact_revision})")
                    if resp.canceled:
                        reason = resp.cancel_reason or "no reason given"
                        # A token that ended is checked when the watch is
                        # made, never under a running one.
                        if not seen and not renewed and self._token_ended(reason):
                            renewed = True
                            await self._renew(client, token)
                            break
                        if "permission denied" in reason:
                            raise StoreDenied(f"{self._where(self._endpoint)}: permission "
                                              f"denied to watch for {self._who()}")
                        raise StoreError(f"etcd {self._endpoint}: watch cancelled: {reason}")
                    for ev in resp.events:
                        seen = True
                        key = decode_key(bytes(ev.kv.key))
                        if key is None:
                            continue
                        if ev.type == rpc.Event.PUT:
                            yield Event(type="put", key=key, value=ev.kv.value,
                                        revision=int(ev.kv.mod_revision))
                        else:
                            yield Event(type="delete", key=key, value=b"",
                                        revision=int(ev.kv.mod_revision))
            except grpc.aio.AioRpcError as exc:
                if self._closed and exc.code() == grpc.StatusCode.CANCELLED:
                    return                      # close() ends watches quietly
                raise await self._error(exc, client) from None
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - gRPC may raise others: never raw
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
        endpoint first); any op refused for an ended token is sent again
        once with a new one (etcd refuses it before applying anything)."""
        attempts = 2 if idempotent and len(self.endpoints) > 1 else 1
        attempt, renewed = 0, False
        while True:
            client = await self._connected()
            token = client.metadata
            try:
                return await op(client)
            except aetcd.ClientError as exc:
                if not renewed and self._token_ended(_detail(exc)):
                    renewed = True
                    await self._renew(client, token)
                    continue
                err = await self._error(exc, client)
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - gRPC/aetcd may raise others: never raw
                err = await self._error(exc, client)
            attempt += 1
            if not isinstance(err, StoreUnavailable) or attempt >= attempts:
                raise err
            log.info("store: %s; trying the next endpoint", err)

    async def _connected(self) -> Any:
        """The client, connecting first if there is none: to the endpoints
        in turn, from self._next, until one's channel is ready (and, with
        a user, it is authenticated).  A denial ends the search at once:
        every endpoint would give the same."""
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
                client = _Client(host, port, timeout=self.timeout,
                                 options=dict(_GRPC_OPTIONS), credentials=self.credentials)
                try:
                    await client.connect()
                    await self._ready(client.channel, f"{host}:{port}")
                    await self._authenticate(client, f"{host}:{port}")
                except StoreDenied:
                    await _close_quietly(client)
                    raise
                except (aetcd.ClientError, StoreUnavailable) as exc:
                    failures.append(f"{host}:{port} {exc}")
                    await _close_quietly(client)
                    continue
                self._client, self._endpoint, self._next = client, f"{host}:{port}", n
                return client
            raise StoreUnavailable("etcd unreachable: " + "; ".join(failures))

    async def _ready(self, channel: grpc.aio.Channel, endpoint: str) -> None:
        """Wait until the channel is connected; fail at once when the
        connection is refused or the TLS handshake fails, or after
        self.timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                         grpc.ChannelConnectivity.SHUTDOWN):
                raise await self._why_not(channel, endpoint)
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state),
                                       deadline - loop.time())
            except TimeoutError:
                raise StoreUnavailable(f"no connection in {self.timeout:g} s") from None
            state = channel.get_state(try_to_connect=True)

    async def _why_not(self, channel: grpc.aio.Channel, endpoint: str) -> StoreError:
        """Why a channel failed: the channel's state does not say, but a
        call on it fails at once with the last connection error."""
        try:
            await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(),
                                                     timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            return self._connect_error(endpoint, _detail(exc))
        return StoreUnavailable("connection failed")

    def _connect_error(self, endpoint: str, detail: str) -> StoreError:
        """StoreDenied for a TLS handshake that failed on a certificate
        (no retry mends it), else StoreUnavailable with gRPC's reason."""
        c, where = self.credentials, self._where(endpoint)
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            by = f"CA {c.ca_file}" if c.ca_file else "a CA this system trusts (--store-ca)"
            if "expired" in detail:
                return StoreDenied(f"{where}: TLS: the server's certificate has expired")
            return StoreDenied(f"{where}: TLS: the server's certificate is not signed by {by}")
        if "Hostname Verification" in detail:
            host = endpoint.rsplit(":", 1)[0]
            return StoreDenied(f"{where}: TLS: the server's certificate is not for {host} "
                               "(its subjectAltName must name the address used)")
        if c.tls and ("TSI_DATA_CORRUPTED" in detail or "ALERT" in detail):
            # The server ended the handshake with an alert: it wants a
            # client certificate, or does not take ours.
            if c.cert_file:
                return StoreDenied(f"{where}: TLS: the server refused client certificate "
                                   f"{c.cert_file} (not signed by a CA it trusts, or expired)")
            return StoreDenied(f"{where}: TLS: the server requires a client certificate "
                               "(--store-cert and --store-key)")
        if c.tls and "WRONG_VERSION_NUMBER" in detail:
            return StoreDenied(f"{where}: TLS: the handshake failed (does the server speak "
                               f"TLS on this port?): {_last_error(detail)}")
        hint = ""
        if not c.tls and "Socket closed" in detail:
            hint = " (if the server wants TLS: etcds:// or --store-ca)"
        return StoreUnavailable(_last_error(detail) + hint)

    async def _authenticate(self, client: Any, endpoint: str) -> None:
        """With a user: a token for the client's calls."""
        c = self.credentials
        if c.user is None:
            return
        where = self._where(endpoint)
        try:
            resp = await client.auth_stub.Authenticate(
                rpc.AuthenticateRequest(name=c.user, password=c.password or ""),
                timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            detail = _detail(exc)
            if "authentication is not enabled" in detail:
                # Calls then go without a token; when auth is enabled
                # later, the first refused call authenticates again.
                if not self._auth_off_logged:
                    log.warning("store %s: the server has authentication off: anyone who "
                                "reaches it can change the cluster", where)
                    self._auth_off_logged = True
                client.metadata = None
                return
            if "authentication failed" in detail:
                raise StoreDenied(f"{where}: user {c.user!r} or its password "
                                  f"({c.password_from}) refused") from None
            if exc.code() in _LOST:
                raise self._connect_error(endpoint, detail) from None
            raise StoreError(f"{where}: authenticating as {c.user!r}: {detail}") from None
        client.metadata = (("token", resp.token),)

    async def _renew(self, client: Any, stale: Any) -> None:
        """Authenticate again, unless another call did since ``stale``."""
        async with self._auth_lock:
            if client.metadata is stale:
                await self._authenticate(client, self._endpoint)
                log.debug("store: auth token renewed")

    def _token_ended(self, detail: str) -> bool:
        return self.credentials.user is not None and any(t in detail for t in _TOKEN_ENDED)

    def _where(self, endpoint: str) -> str:
        return f"store {self.scheme}://{endpoint}"

    def _who(self) -> str:
        c = self.credentials
        if c.user is not None:
            return f"user {c.user!r}"
        if c.cert_file is not None:
            return f"the user named by client certificate {c.cert_file}'s CN"
        return "a client without user or certificate"

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
                await _close_quietly(client)
            lost = self._connect_error(self._endpoint, detail)
            if isinstance(lost, StoreDenied):
                return lost
            return StoreUnavailable(f"{where}: {detail}")
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in detail:
            return LeaseExpired(f"{where}: {detail}")
        if "database space exceeded" in detail:
            # etcd's NOSPACE alarm: it takes reads and deletes, no writes,
            # until an operator compacts, defragments and disarms it.
            return StoreError(f"{where}: {detail} (the NOSPACE alarm is raised: compact, "
                              "defrag, then 'etcdctl alarm disarm')")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return StoreDenied(f"{self._where(self._endpoint)}: permission denied to "
                               f"{self._who()}: its etcd role needs readwrite on uvxlan's "
                               "prefix (docs/security.md)")
        if code == grpc.StatusCode.UNAUTHENTICATED or "user name is empty" in detail:
            return StoreDenied(f"{self._where(self._endpoint)}: {detail}: the server wants "
                               "a user (--store-user) or a client certificate")
        if not isinstance(exc, aetcd.ClientError) and code is None:
            # Not an answer from etcd (a gRPC or aetcd failure of its own):
            # a new connection is the best chance of a good next call.
            if self._client is client:
                self._client = None
                await _close_quietly(client)
            return StoreError(f"{where}: {type(exc).__name__}: {detail}")
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


def _last_error(detail: str) -> str:
    """gRPC's "failed to connect to all addresses; last error: X: ..." as X."""
    return detail.split("last error: ", 1)[-1]


async def _close_quietly(client: Any) -> None:
    """Close a client being dropped for a failure: whatever its close
    raises is logged, never let out of the error handling (the caller
    must get its StoreError, not a raw exception)."""
    try:
        await client.close()
    except Exception as exc:  # noqa: BLE001 - the client is dropped either way
        log.debug("etcd: closing a dropped client: %s: %s", type(exc).__name__, exc)


def _etcd_range(prefix: str) -> tuple[bytes, bytes]:
    """(key, range_end) for a prefix in etcd's terms: "\\0" as range_end
    means no bound, and the empty prefix is every key from "\\0" on."""
    lo, hi = prefix_range(prefix)
    return lo or b"\0", b"\0" if hi is None else hi


def _kv(kv: Any) -> KV | None:
    """The key as a KV; None for a key that is not UTF-8 (skipped)."""
    key = decode_key(bytes(kv.key))
    if key is None:
        return None
    return KV(key=key, value=bytes(kv.value),
              create_revision=int(kv.create_revision), mod_revision=int(kv.mod_revision),
              lease=int(kv.lease))
