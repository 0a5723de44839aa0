"""One error hierarchy for uvxlan: every error class it defines is here.

Every error uvxlan raises on purpose is a ``UvxlanError``; the subclasses
are also the builtin type a caller would expect, so ``except ValueError``
works as well as ``except UvxlanError``.  The CLI prints these as one line.

    UvxlanError
    ├── ConfigError (ValueError)        bad configuration or argument
    ├── NetlinkError (OSError)          a netlink operation failed
    ├── NativeError (OSError)           the C fast path refused
    ├── StaleBuildError (ImportError)   the compiled fast path is stale
    ├── LabError                        the lab of simulated hosts
    │   └── BenchError                  ``uvxlan bench`` could not run
    ├── StoreError                      the store's transport and protocol
    │   ├── StoreUnavailable (ConnectionError)   unreachable, timed out, locked
    │   ├── StoreDenied (PermissionError)        credentials or permissions refused
    │   ├── StoreCompacted              watch history gone
    │   └── LeaseExpired                lease (and its keys) gone
    ├── RecordError (ValueError)        a stored value that is not a usable record
    ├── ClusterError                    the cluster's state refuses: taken, not found, busy
    └── CniError                        uvxlan-cni's answer to a runtime: a CNI error code

The three store branches call for different handling: a ``StoreError``
is retried (or the operation fails for now), except ``StoreDenied``,
which no retry mends (a command and a starting agent end with it; a
running agent logs it and keeps forwarding); a ``RecordError`` is one bad
key, skipped with a warning while the rest is served; a ``ClusterError``
is the answer to the user's request.
"""

from __future__ import annotations


class UvxlanError(Exception):
    """Base of every error uvxlan raises on purpose."""


class ConfigError(UvxlanError, ValueError):
    """Bad configuration or argument: names the field and the problem."""


class NetlinkError(UvxlanError, OSError):
    """A netlink (pyroute2) operation failed: names the object."""


class NativeError(UvxlanError, OSError):
    """The C fast path refused an operation (carries errno)."""


class StaleBuildError(UvxlanError, ImportError):
    """The compiled fast path does not match the sources or the package."""


class LabError(UvxlanError):
    """The lab of simulated hosts could not be built, found or removed."""


class BenchError(LabError):
    """The benchmark could not run (missing tool, failed measurement)."""


class StoreError(UvxlanError):
    """The cluster store refused or failed an operation (its transport or
    its protocol, never the content of a value)."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store cannot be reached now (server down, database locked too
    long): retry with backoff."""


class StoreDenied(StoreError, PermissionError):
    """The store will not serve us as configured: a TLS handshake that fails
    on a certificate, a user or password it refuses, a user without
    permission on uvxlan's keys, a database file others could change.
    Retrying does not help; the configuration must.  Names what to fix."""


class StoreCompacted(StoreError):
    """A watch asked for history the store no longer keeps: list again, then
    watch from the listed revision + 1."""


class LeaseExpired(StoreError):
    """The lease is gone (expired or revoked), and so are its keys: grant a
    new one and put them again."""


class RecordError(UvxlanError, ValueError):
    """A value in the store is not a record this uvxlan can use (not JSON,
    not the record's shape, or a field that fails its rule): written by
    hand or by a newer uvxlan.  Names the key."""


class ClusterError(UvxlanError):
    """The cluster's state refuses the operation: a name, VNI, subnet,
    address or MAC already taken, a network or endpoint or host not found,
    a network with endpoints left, an endpoint its agent failed to make."""


class CniError(UvxlanError):
    """What uvxlan-cni tells a container runtime went wrong: a CNI error
    code (the spec's 1-99, or uvxlan's own 100+, listed in uvxlan.cni)
    and a one-line message; the runtime shows the message."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
