"""The embedded store: one SQLite database file that the processes of one
machine (agents, CLI) share.

    meta    (name, value)       revision: of the last write
                                compacted: events up to here are gone
    kv      (key, value, create_revision, mod_revision, lease)
    events  (revision, type, key, value)       one row per write
    leases  (id, ttl, deadline) deadline: when the lease ends, in seconds of
                                CLOCK_BOOTTIME (see below)
    boot    (id)                the boot whose CLOCK_BOOTTIME the deadlines count

The database runs in WAL mode, so readers never wait for the writer.  Every
write takes the write lock up front (``BEGIN IMMEDIATE``) and holds it until
it commits, so CAS, create and conditional delete compare and write with no
other process in between; a writer kept waiting longer than ``busy_timeout``
gets StoreUnavailable.  Each written or deleted key takes the next revision
and logs one event; the oldest events beyond ``history`` are dropped
(compaction), and a watch that needs them raises StoreCompacted.  A ``txn``
is one such write transaction: its compares, then each put and delete
taking the next revision, committed (or rolled back) together.

There is no notification between processes: a watch polls the events table
every ``poll_interval``.  Leases expire without their owner: every operation
and every poll first deletes the keys of leases whose deadline has passed (with
delete events), whichever process notices first.

Lease deadlines count in CLOCK_BOOTTIME, never in the wall clock: a
wall-clock step (NTP, an operator's ``date -s``) would otherwise end every
lease at once (a step forward: every host vanishes) or keep dead ones for
as long as the step (a step back).  CLOCK_BOOTTIME is monotonic, counts
time suspended, and is the same for every process of the machine, so the
processes sharing the file agree on it.  It restarts at each boot: the
file names the boot its deadlines belong to (/proc/sys/kernel/random/
boot_id), and a process that opens it after a reboot ends every lease of
the old boot (their agents died with it).  Schema 1 kept wall-clock
expiries: opening such a file converts them (and a schema-1 process still
running on it then fails on every operation, as on an unreachable store,
rather than misread the new deadlines).

All database work runs on one thread per store, never on the event loop.

A file that turns corrupt fails every call (StoreError, saying to restore
it) and its connection is dropped, so each call opens the path again until
the file is good.  A file removed or replaced under an open connection is
noticed at the next call (its inode); once opened, a file that is gone is
never made anew here (StoreUnavailable until it is restored or a command
makes it); a store opened with ``create=False`` (commands that only read)
never makes a missing file at all; and a watch whose store goes back in revision raises
StoreCompacted.

The database says who may do what on every host, so only its owner may
read or change it.  ``_secure`` runs before the first open: a missing
directory is made 0700 and a missing file 0600, whatever the umask (SQLite
gives its -wal and -shm files the database file's mode).  A directory
others may write to (they could swap the file or plant a -wal), or a
directory or file owned by another user (not root), is refused with one
line (StoreDenied); an existing file others may read or write is tightened
to 0600, with a warning, since it was ours already.  A directory others
may only read is left as it is: it shows no more than the file's name.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal, TypeVar

from uvxlan.errors import (
    LeaseExpired,
    StoreCompacted,
    StoreDenied,
    StoreError,
    StoreUnavailable,
)
from uvxlan.store.base import KV, Event, check_key, check_txn, decode_key, prefix_range

log = logging.getLogger("uvxlan.store")

T = TypeVar("T")

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL,
    create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY, type TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, deadline REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_deadline ON leases (deadline);
CREATE TABLE IF NOT EXISTS boot (id TEXT NOT NULL);
"""
_WATCH_BATCH = 1000          # events read per poll at most
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _clock() -> float:
    """Now, on the clock lease deadlines count in (see the module docstring)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@functools.cache
def _boot() -> str:
    """This boot's id: CLOCK_BOOTTIME readings of other boots mean nothing."""
    try:
        with open(_BOOT_ID, encoding="ascii") as f:
            return f.read().strip()
    except OSError as exc:
        raise StoreUnavailable(f"cannot read {_BOOT_ID}: {exc.strerror}") from None


class SqliteStore:
    """A Store on one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, *, history: int = 10000, busy_timeout: float = 5.0,
                 poll_interval: float = 0.05, create: bool = True) -> None:
        """create=False: a missing file is an error, never made anew."""
        if history < 1:
            raise ValueError("history must be at least 1")
        self.path = Path(path)
        self.history = history
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self._may_create = create
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None     # (st_dev, st_ino) _conn has open
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uvxlan-store")
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # The Store interface -----------------------------------------------------

    async def get(self, key: str) -> KV | None:
        k = check_key(key)
        return await self._run(self._get, k)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        k = check_key(key)
        return await self._run(self._put, k, bytes(value), lease)

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> bool:
        return await self.cas(key, value, mod_revision=0, lease=lease)

    async def cas(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        k = check_key(key)
        return await self._run(self._cas, k, bytes(value), mod_revision, lease)

    async def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        k = check_key(key)
        return await self._run(self._delete, k, mod_revision)

    async def txn(self, *, compare: Sequence[tuple[str, int]] = (),
                  put: Sequence[tuple[str, bytes, int]] = (),
                  delete: Sequence[str] = ()) -> bool:
        cmp, puts, dels = check_txn(compare, put, delete)
        return await self._run(self._txn, cmp, puts, dels)

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        return await self._run(self._list, prefix_range(prefix))

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        bounds = prefix_range(prefix)
        next_rev, seen = start_revision, 0
        while not self._closed:
            events, next_rev, rev = await self._run(self._poll, bounds, next_rev)
            if rev < seen:
                # The store went back in time: the file was restored from
                # a backup or made anew.  What we watched is no longer its
                # history: list again.
                raise StoreCompacted(f"store {self.path}: revision {rev} follows {seen} "
                                     "(the file was restored or made anew)")
            seen = rev
            for event in events:
                yield event
            if not events:
                await asyncio.sleep(self.poll_interval)

    async def lease_grant(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be positive, not {ttl!r}")
        return await self._run(self._lease_grant, float(ttl))

    async def lease_keepalive(self, lease: int) -> None:
        await self._run(self._lease_keepalive, lease)

    async def lease_revoke(self, lease: int) -> None:
        await self._run(self._lease_revoke, lease)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        finally:
            self._thread.shutdown(wait=False)

    # Beyond the interface ------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Drop the events before ``revision``: a watch from an earlier
        revision raises StoreCompacted from now on."""
        await self._run(self._compact, revision)

    # Running on the store's thread -------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except RuntimeError as exc:          # the thread was shut down under us
            if self._closed:
                raise StoreError(f"{self!r} is closed") from None
            raise exc
        except StoreError:                  # some are OSErrors too
            raise
        except OSError as exc:              # the directory or file, beyond _secure's
            raise StoreUnavailable(f"store {self.path}: {exc.strerror or exc}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._file:
                return self._conn
            # Removed or replaced (a backup moved over it, say): the open
            # connection would go on with the old file, unseen by every
            # other process.  Open what the path names now.
            self._disconnect()
        if self._file is not None and not self.path.exists():
            # Once opened, a file that is gone is not made anew here: an
            # empty store would make this agent remove every endpoint.
            # Restoring it, or a uvxlan command that makes it, brings it back.
            raise StoreUnavailable(f"store {self.path}: the file is gone; waiting for it "
                                   "to be restored or made again")
        if not self._may_create and not self.path.exists():
            raise StoreError(f"store {self.path}: store file missing (`uvxlan network "
                             "create` or `uvxlan attach` makes one)")
        _secure(self.path)
        with self._errors():
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"store {self.path}: schema {version} is newer than "
                                     f"this uvxlan's ({SCHEMA_VERSION})")
                if version < SCHEMA_VERSION:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        self._upgrade(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                self._check_boot(conn)
            except BaseException:
                conn.close()
                raise
        st = os.stat(self.path)
        self._conn, self._file = conn, (st.st_dev, st.st_ino)
        return conn

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """Bring the schema to SCHEMA_VERSION, under the write lock (another
        process may have done it since we looked)."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version == 1:
            # Wall-clock expiries become deadlines on this boot's clock.
            conn.execute("ALTER TABLE leases RENAME COLUMN expiry TO deadline")
            conn.execute("DROP INDEX IF EXISTS leases_expiry")
            conn.execute("UPDATE leases SET deadline = deadline - ? + ?",
                         (time.time(), _clock()))
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO boot VALUES (?)", (_boot(),))
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _check_boot(self, conn: sqlite3.Connection) -> None:
        """A file whose deadlines count in another boot's clock: that boot's
        agents are all gone, so are their leases (and keys).  Once per
        connection is enough: no process outlives a reboot."""
        row = conn.execute("SELECT id FROM boot").fetchone()
        if row is not None and row[0] == _boot():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT id FROM boot").fetchone()
            if row is None or row[0] != _boot():
                leases = conn.execute("SELECT id FROM leases ORDER BY id").fetchall()
                for (lease,) in leases:
                    self._drop_lease(conn, lease)
                if leases:
                    log.info("store: %d lease(s) of an earlier boot ended", len(leases))
                conn.execute("DELETE FROM boot")
                conn.execute("INSERT INTO boot VALUES (?)", (_boot(),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with suppress(sqlite3.Error):
                conn.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3's exceptions as StoreErrors, one line each."""
        try:
            yield
        except sqlite3.OperationalError as exc:    # locked, busy, cannot open, I/O
            raise StoreUnavailable(f"store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            # Corrupt ("file is not a database", "disk image is malformed"):
            # the connection keeps what it read, so only a new one sees the
            # file restored.  Each call opens it again until it is good.
            self._disconnect()
            raise StoreError(f"store {self.path}: {exc} (restore the file, or remove it "
                             "with its -wal and -shm: the next agent start, `uvxlan "
                             "network create` or `uvxlan attach` makes it anew)") from None
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, holding the write lock from its start; due
        leases are expired first, in the same transaction."""
        conn = self._db()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._expire(conn, _clock())
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot.  Leases that are due
        are expired first (a short write, only when some are)."""
        conn = self._db()
        with self._errors():
            if conn.execute("SELECT 1 FROM leases WHERE deadline <= ? LIMIT 1",
                            (_clock(),)).fetchone() is not None:
                with self._write():
                    pass
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _revision(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return int(row[0])

    @staticmethod
    def _compacted(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
        return int(row[0])

    def _log(self, conn: sqlite3.Connection, kind: Literal["put", "delete"], key: bytes,
             value: bytes) -> int:
        """Take the next revision for one change and log its event; the
        oldest events beyond ``history`` go."""
        rev = self._revision(conn) + 1
        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (rev, kind, key, value))
        self._drop_events(conn, rev - self.history + 1)
        return rev

    def _drop_events(self, conn: sqlite3.Connection, first_kept: int) -> None:
        if first_kept - 1 > self._compacted(conn):
            conn.execute("DELETE FROM events WHERE revision < ?", (first_kept,))
            conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'",
                         (first_kept - 1,))

    def _expire(self, conn: sqlite3.Connection, now: float) -> None:
        due = conn.execute("SELECT id FROM leases WHERE deadline <= ? ORDER BY deadline",
                           (now,)).fetchall()
        for (lease,) in due:
            n = self._drop_lease(conn, lease)
            log.info("store: lease %x expired, %d key(s) deleted", lease, n)

    def _drop_lease(self, conn: sqlite3.Connection, lease: int) -> int:
        keys = conn.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key",
                            (lease,)).fetchall()
        for (key,) in keys:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._log(conn, "delete", key, b"")
        conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
        return len(keys)

    def _write_key(self, conn: sqlite3.Connection, key: bytes, value: bytes, lease: int,
                   create_revision: int | None) -> int:
        """Put within a write transaction; create_revision None: a new key."""
        if lease and conn.execute("SELECT 1 FROM leases WHERE id = ?",
                                  (lease,)).fetchone() is None:
            raise LeaseExpired(f"lease {lease:x} has expired or was revoked")
        rev = self._log(conn, "put", key, value)
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                     (key, value, rev if create_revision is None else create_revision, rev,
                      lease))
        return rev

    @staticmethod
    def _row(conn: sqlite3.Connection, key: bytes) -> tuple[int, int] | None:
        """(create_revision, mod_revision) of a key, or None if absent."""
        row = conn.execute("SELECT create_revision, mod_revision FROM kv WHERE key = ?",
                           (key,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def _get(self, key: bytes) -> KV | None:
        with self._read() as conn:
            row = conn.execute("SELECT key, value, create_revision, mod_revision, lease "
                               "FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else _kv(row)

    def _put(self, key: bytes, value: bytes, lease: int) -> int:
        with self._write() as conn:
            row = self._row(conn, key)
            return self._write_key(conn, key, value, lease, None if row is None else row[0])

    def _cas(self, key: bytes, value: bytes, mod_revision: int, lease: int) -> bool:
        with self._write() as conn:
            row = self._row(conn, key)
            if (0 if row is None else row[1]) != mod_revision:
                return False
            self._write_key(conn, key, value, lease, None if row is None else row[0])
            return True

    def _delete(self, key: bytes, mod_revision: int | None) -> bool:
        with self._write() as conn:
            row = self._row(conn, key)
            if row is None or (mod_revision is not None and row[1] != mod_revision):
                return False
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._log(conn, "delete", key, b"")
            return True

    def _txn(self, compare: builtins.list[tuple[bytes, int]],
             puts: builtins.list[tuple[bytes, bytes, int]], dels: builtins.list[bytes]) -> bool:
        # One write transaction: the compares and every change happen under
        # the write lock, and a failure (LeaseExpired) rolls all of it back.
        with self._write() as conn:
            for key, mod_revision in compare:
                row = self._row(conn, key)
                if (0 if row is None else row[1]) != mod_revision:
                    return False
            for key, value, lease in puts:
                row = self._row(conn, key)
                self._write_key(conn, key, value, lease, None if row is None else row[0])
            for key in dels:
                if conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                    self._log(conn, "delete", key, b"")
            return True

    def _list(self, bounds: tuple[bytes, bytes | None]) -> tuple[builtins.list[KV], int]:
        lo, hi = bounds
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key, value, create_revision, mod_revision, lease FROM kv "
                "WHERE key >= ? AND (? IS NULL OR key < ?) ORDER BY key", (lo, hi, hi)).fetchall()
            rev = self._revision(conn)
        return [kv for kv in map(_kv, rows) if kv is not None], rev

    def _poll(self, bounds: tuple[bytes, bytes | None],
              next_rev: int) -> tuple[builtins.list[Event], int, int]:
        """Events from next_rev on under the prefix, the revision to poll
        from next time, and the store's revision."""
        lo, hi = bounds
        with self._read() as conn:
            rev = self._revision(conn)
            if next_rev <= 0:
                return [], rev + 1, rev
            compacted = self._compacted(conn)
            if next_rev <= compacted:
                raise StoreCompacted(f"store {self.path}: revision {next_rev} is compacted "
                                     f"(history starts at {compacted + 1})")
            if next_rev > rev:
                return [], next_rev, rev
            rows = conn.execute(
                "SELECT revision, type, key, value FROM events WHERE revision BETWEEN ? AND ? "
                "AND key >= ? AND (? IS NULL OR key < ?) ORDER BY revision LIMIT ?",
                (next_rev, rev, lo, hi, hi, _WATCH_BATCH)).fetchall()
        events = [Event(type=r[1], key=key, value=bytes(r[3]), revision=int(r[0]))
                  for r in rows if (key := decode_key(bytes(r[2]))) is not None]
        if len(rows) == _WATCH_BATCH:
            return events, int(rows[-1][0]) + 1, rev
        return events, rev + 1, rev

    def _lease_grant(self, ttl: float) -> int:
        with self._write() as conn:
            # A random id, as etcd's are: after the file is made anew, an
            # agent's old id must not name another agent's new lease.
            while True:
                lease = secrets.randbelow(1 << 62) + 1
                if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
                    break
            conn.execute("INSERT INTO leases (id, ttl, deadline) VALUES (?, ?, ?)",
                         (lease, ttl, _clock() + ttl))
            return lease

    def _lease_keepalive(self, lease: int) -> None:
        with self._write() as conn:
            cur = conn.execute("UPDATE leases SET deadline = ? + ttl WHERE id = ?",
                               (_clock(), lease))
            if cur.rowcount == 0:
                raise LeaseExpired(f"lease {lease:x} has expired or was revoked")

    def _lease_revoke(self, lease: int) -> None:
        with self._write() as conn:
            self._drop_lease(conn, lease)

    def _compact(self, revision: int) -> None:
        with self._write() as conn:
            if revision > self._revision(conn) + 1:
                raise StoreError(f"store {self.path}: cannot compact at future revision "
                                 f"{revision}")
            self._drop_events(conn, revision)


def _secure(path: Path) -> None:
    """Make or check the database's directory and file: see the module
    docstring."""
    owners = {0, os.geteuid()}
    missing = []
    d = path.parent
    while not os.path.lexists(d):
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)           # the umask may have taken bits away
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreUnavailable(f"store {path}: cannot create directory {d}: "
                                   f"{exc.strerror}") from None
    try:
        st = os.stat(path.parent)
    except OSError as exc:
        raise StoreUnavailable(f"store {path}: cannot use directory {path.parent}: "
                               f"{exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreUnavailable(f"store {path}: cannot create directory {path.parent}: "
                               "a file is in the way")
    if st.st_uid not in owners:
        raise StoreDenied(f"store {path}: directory {path.parent} belongs to uid "
                          f"{st.st_uid}, who could replace the database")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreDenied(f"store {path}: directory {path.parent} can be written by others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}), who could replace the "
                          "database: chmod go-w it, or put the database elsewhere")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        os.chmod(path, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreUnavailable(f"store {path}: cannot create it: {exc.strerror}") from None
    for f in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            st = os.stat(f)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreUnavailable(f"store {path}: cannot use {f}: {exc.strerror}") from None
        if st.st_uid not in owners:
            raise StoreDenied(f"store {path}: {f} belongs to uid {st.st_uid}, not to us")
        if stat.S_IMODE(st.st_mode) & 0o077:
            try:
                os.chmod(f, 0o600)
            except OSError as exc:
                raise StoreDenied(f"store {path}: {f} can be read by others and chmod "
                                  f"failed: {exc.strerror}") from None
            log.warning("store: %s could be read or written by others (mode %o): "
                        "now 0600", f, stat.S_IMODE(st.st_mode))


def _kv(row: tuple[bytes, bytes, int, int, int]) -> KV | None:
    """The row as a KV; None for a key that is not UTF-8 (skipped)."""
    key = decode_key(bytes(row[0]))
    if key is None:
        return None
    return KV(key=key, value=bytes(row[1]), create_revision=int(row[2]),
              mod_revision=int(row[3]), lease=int(row[4]))
