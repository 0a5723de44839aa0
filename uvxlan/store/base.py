"""What every store backend shares: the records (``KV``, ``Event``), the
``Store`` interface and the argument checks.  The backends import this
module, never the package, so ``uvxlan.store`` can open them without an
import cycle.  The rules are in ``uvxlan.store``'s docstring."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from uvxlan.errors import ConfigError

log = logging.getLogger("uvxlan.store")

# Undecodable keys already logged (bounded: a writer could make millions).
_TOLD_UNDECODABLE: set[bytes] = set()
_TOLD_MAX = 1024


@dataclass(frozen=True)
class KV:
    """One key as stored.  ``lease`` is 0 when the key has none."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Event:
    """One change seen by a watch; ``value`` is ``b""`` on delete."""

    type: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


@runtime_checkable
class Store(Protocol):
    """What the control plane needs from a store; see the module docstring."""

    async def get(self, key: str) -> KV | None:
        """The key, or None if absent."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write unconditionally; returns the new store revision."""
        ...

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        """Write only if the key is absent; False if it exists."""
        ...

    async def cas(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        """Write only if the key's mod_revision is still ``mod_revision``
        (0: only if absent); False if it changed."""
        ...

    async def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        """Delete (only if unchanged since ``mod_revision``, when given);
        True if a key was deleted."""
        ...

    async def txn(self, *, compare: Sequence[tuple[str, int]] = (),
                  put: Sequence[tuple[str, bytes, int]] = (),
                  delete: Sequence[str] = ()) -> bool:
        """Atomically: if every ``(key, mod_revision)`` in ``compare`` holds
        (0: the key is absent), apply every ``(key, value, lease)`` put and
        every delete, and return True; else change nothing, return False.
        A put with a lease that is gone raises LeaseExpired (nothing is
        written)."""
        ...

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        """The keys under ``prefix`` sorted by key, and the store revision
        they were read at."""
        ...

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        """Events under ``prefix`` with revision >= ``start_revision``, in
        order; raises StoreCompacted if that history is gone."""
        ...

    async def lease_grant(self, ttl: float) -> int:
        """A new lease living ``ttl`` seconds unless kept alive; its id."""
        ...

    async def lease_keepalive(self, lease: int) -> None:
        """Restart the lease's ttl; LeaseExpired if it is gone."""
        ...

    async def lease_revoke(self, lease: int) -> None:
        """End the lease now, deleting its keys (nothing if already gone)."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable after."""
        ...


def check_key(key: str) -> bytes:
    """The key as stored (UTF-8 bytes); a ConfigError if it is not a key."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"store key must be a non-empty string, not {key!r}")
    return key.encode()


def check_txn(compare: Sequence[tuple[str, int]], put: Sequence[tuple[str, bytes, int]],
              delete: Sequence[str]) -> tuple[list[tuple[bytes, int]],
                                              list[tuple[bytes, bytes, int]], list[bytes]]:
    """A txn's arguments as stored (UTF-8 keys, bytes values); a ConfigError
    for a bad key or a key changed twice (etcd refuses those too)."""
    cmp = [(check_key(k), int(rev)) for k, rev in compare]
    puts = [(check_key(k), bytes(v), int(lease)) for k, v, lease in put]
    dels = [check_key(k) for k in delete]
    changed = [k for k, _, _ in puts] + dels
    if len(set(changed)) != len(changed):
        dup = sorted({k.decode() for k in changed if changed.count(k) > 1})
        raise ConfigError(f"store txn changes a key more than once: {', '.join(dup)}")
    return cmp, puts, dels


def prefix_range(prefix: str) -> tuple[bytes, bytes | None]:
    """The byte range [start, end) a prefix covers; end None: no bound."""
    start = prefix.encode()
    end = bytearray(start)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return start, None
    end[-1] += 1
    return start, bytes(end)


def decode_key(raw: bytes) -> str | None:
    """A stored key as text, or None for one that is not UTF-8: such a key
    (any writer can make one) is skipped by every list and watch, logged
    once, so that one bad key never stops the cluster's control plane."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        if raw not in _TOLD_UNDECODABLE and len(_TOLD_UNDECODABLE) < _TOLD_MAX:
            _TOLD_UNDECODABLE.add(raw)
            log.warning("store key %r: not UTF-8; ignored", raw[:200])
        return None
