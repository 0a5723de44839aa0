"""The cluster store: networks, endpoints and hosts that every agent shares.

An etcd-v3-shaped key-value store, as Docker's overlay driver kept its state
in libkv: keys are non-empty ``str`` (UTF-8), values ``bytes``.  Every write
moves one store-wide revision forward, each key remembers the revision that
created it and the one that last changed it, and a watch replays every change
under a prefix from a given revision on, so an agent can list, then watch
from the listed revision + 1, and miss nothing.

Two backends speak the same ``Store`` interface:

- ``sqlite:///ABS/PATH/state.db`` (``uvxlan.store.sqlite``): embedded, the
  default (``sqlite://`` alone means ``/var/lib/uvxlan/state.db``); the
  processes of one machine (agents, CLI) share one database file.  Query
  options: ``history`` (events kept for watches, default 10000),
  ``busy_timeout`` (seconds to wait for another writer, default 5).
- ``etcd://HOST:PORT[,HOST:PORT...]`` (``uvxlan.store.etcd``): an etcd v3
  cluster for hosts on several machines; endpoints are tried in turn.
  Query option: ``timeout`` (seconds per request and per connection
  attempt, default 5).  ``etcds://`` is the same over TLS.  TLS and
  authentication (``ca``, ``cert``, ``key``, ``user``, ``password_file``
  as query options, flags or environment variables) are described in
  ``uvxlan.store.credentials``.

Rules both keep:

- A prefix is a plain string prefix: ``"/a/b"`` matches ``"/a/bc"``; end it
  with ``"/"`` to mean a directory (``"/a/b/"`` matches neither ``"/a/b"``
  nor ``"/a/bc"``).  ``""`` matches every key.
- ``cas``/``delete`` compare ``mod_revision``; 0 means "absent".
- ``txn(compare=[(key, mod_revision)...], put=[(key, value, lease)...],
  delete=[key...])`` is the multi-key form: if every compare holds (0:
  the key is absent), all the puts and deletes happen at once, else
  nothing does (and it returns False).  No reader or watcher ever sees
  part of one.  etcd gives all its changes one revision; sqlite gives each
  change the next revision, all committed in one transaction, so a watch
  sees one event per put or deleted key either way.  Deleting an absent
  key is no change (no event); a key may appear once among the puts and
  deletes (else ConfigError, as etcd refuses duplicates in a txn).
- A key put with a lease is deleted, with a delete event, when the lease is
  revoked or expires; putting it again without one detaches it.
- ``watch(prefix, start_revision=r)`` yields every event with revision
  >= r in order (0: from the next write on), and raises ``StoreCompacted`` if
  the store no longer has the history from r, ``StoreUnavailable`` if it
  loses the store.  Either way the caller lists again and watches anew.
- Errors are ``StoreError`` subclasses from ``uvxlan.errors``:
  ``StoreUnavailable`` (retry with backoff), ``StoreDenied`` (credentials,
  permissions: no retry), ``StoreCompacted``, ``LeaseExpired``; a bad key
  or URL, or a credential file that cannot be read, is a ``ConfigError``.  Values are
  bytes to the store: one that is not a record is ``uvxlan.cluster``'s
  ``RecordError``, never a ``StoreError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit

from uvxlan.errors import ConfigError
from uvxlan.store.base import KV, Event, Store
from uvxlan.store.credentials import URL_OPTIONS, StoreAuth, resolve
from uvxlan.validate import PORT

# gRPC's C core writes its own lines to stderr (a failed TLS handshake, say)
# beside the one-line error uvxlan gives; it reads this once, before grpc
# loads, and this package always loads before its etcd backend.
# GRPC_VERBOSITY=ERROR in the environment shows them again.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

DEFAULT_SQLITE_PATH = "/var/lib/uvxlan/state.db"
DEFAULT_ETCD_PORT = 2379

__all__ = ["DEFAULT_SQLITE_PATH", "KV", "Event", "Store", "StoreAuth", "open_store"]


def open_store(url: str, auth: StoreAuth | None = None,
               env: Mapping[str, str] | None = None, *, create: bool = True) -> Store:
    """The store a URL names (see the module docstring), with the TLS and
    authentication settings of flags (``auth``), the URL and the
    environment (``env``, default ``os.environ``).  Opens nothing yet: the
    first operation connects, and raises StoreUnavailable if it cannot.
    A malformed URL or an unreadable credential file is a one-line
    ConfigError.  ``create=False``: a SQLite file that does not exist is
    an error at the first operation, not made anew (for commands that
    only read: a new, empty store would make every agent remove its
    endpoints)."""
    auth = auth or StoreAuth()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # Every message names the URL without what may hold a secret (a user
    # and password before "@", the query's values): errors reach logs.
    url = _redacted(parts)
    if scheme == "sqlite":
        if auth.given():
            raise ConfigError(f"store URL {url!r}: {', '.join(auth.given())} "
                              "only apply to an etcd store")
        return _open_sqlite(url, parts.netloc, parts.path, parts.query, create)
    if scheme in ("etcd", "etcds"):
        if parts.path not in ("", "/"):
            raise ConfigError(f"store URL {url!r}: etcd takes no path")
        return _open_etcd(url, scheme, parts.netloc, parts.query, auth,
                          os.environ if env is None else env)
    raise ConfigError(
        f"store URL {url!r}: expected sqlite:///ABS/PATH/state.db or etcd://HOST:PORT[,...]")


def _redacted(parts: SplitResult) -> str:
    """The URL as messages show it: no user or password, no query."""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _open_sqlite(url: str, netloc: str, path: str, query: str, create: bool) -> Store:
    if netloc:
        raise ConfigError(f"store URL {url!r}: the path must be absolute (sqlite:///ABS/PATH)")
    path = unquote(path)
    if path in ("", "/"):
        path = DEFAULT_SQLITE_PATH
    if path.endswith("/"):
        raise ConfigError(f"store URL {url!r}: names a directory, not a database file")
    opts = _query(url, query, {"history", "busy_timeout"})
    history = _number(url, opts, "history", 10000.0, integer=True)
    busy_timeout = _number(url, opts, "busy_timeout", 5.0)
    from uvxlan.store.sqlite import SqliteStore

    return SqliteStore(path, history=int(history), busy_timeout=busy_timeout, create=create)


def _open_etcd(url: str, scheme: str, netloc: str, query: str, auth: StoreAuth,
               env: Mapping[str, str]) -> Store:
    if "@" in netloc:
        raise ConfigError("store URL: no user or password in the URL (they show "
                          "in ps): use --store-user and --store-password-file, or "
                          "$UVXLAN_STORE_USER and $UVXLAN_STORE_PASSWORD_FILE")
    endpoints: list[tuple[str, int]] = []
    for item in netloc.split(","):
        endpoints.append(_host_port(url, item.strip()))
    if "password" in dict(parse_qsl(query, keep_blank_values=True)):
        # Not echoed: the message must not show the password either.
        raise ConfigError(f"store URL {url.split('?', 1)[0]!r}: no password in the URL "
                          "(it shows in ps): "
                          "use password_file=FILE, --store-password-file or "
                          "$UVXLAN_STORE_PASSWORD_FILE")
    opts = _query(url, query, {"timeout"} | URL_OPTIONS)
    timeout = _number(url, opts, "timeout", 5.0)
    shown = url.split("?", 1)[0]
    creds = resolve(shown, tls=scheme == "etcds", hosts=[h for h, _ in endpoints],
                    given=auth, query=opts, env=env)
    try:
        from uvxlan.store.etcd import EtcdStore
    except ImportError as exc:
        raise ConfigError(f"store URL {url!r}: the etcd store needs aetcd ({exc})") from None
    return EtcdStore(endpoints, timeout=timeout, credentials=creds)


def _host_port(url: str, item: str) -> tuple[str, int]:
    if not item:
        raise ConfigError(f"store URL {url!r}: an empty endpoint (expected HOST:PORT)")
    if item.startswith("["):                         # [v6]:port
        host, sep, rest = item.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            raise ConfigError(f"store URL {url!r}: bad endpoint {item!r}")
        port_s = rest[1:] if sep and rest else ""
    else:
        host, _, port_s = item.partition(":")
        if ":" in port_s:
            raise ConfigError(f"store URL {url!r}: put an IPv6 address in brackets: {item!r}")
    if host in ("", "[]"):
        raise ConfigError(f"store URL {url!r}: endpoint {item!r} has no host")
    if not port_s:
        return host, DEFAULT_ETCD_PORT
    if not port_s.isdigit() or int(port_s) not in PORT:
        raise ConfigError(f"store URL {url!r}: bad port in {item!r}")
    return host, int(port_s)


def _query(url: str, query: str, known: set[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"store URL {url!r}: malformed query {query!r}") from None
    for name, value in pairs:
        if name not in known:
            raise ConfigError(f"store URL {url!r}: unknown option {name!r} "
                              f"(known: {', '.join(sorted(known))})")
        opts[name] = value
    return opts


def _number(url: str, opts: dict[str, str], name: str, default: float, *,
            integer: bool = False) -> float:
    if name not in opts:
        return default
    text = opts[name]
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = -1
    if not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise ConfigError(f"store URL {url!r}: {name} must be {kind}, not {text!r}")
    return value
