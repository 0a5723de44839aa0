"""One error hierarchy for uvxlan.

Every error uvxlan raises on purpose is a ``UvxlanError``; the subclasses
are also the builtin type a caller would expect, so ``except ValueError``
works as well as ``except UvxlanError``.  The CLI prints these as one line.
"""

from __future__ import annotations


class UvxlanError(Exception):
    """Base of every error uvxlan raises on purpose."""


class ConfigError(UvxlanError, ValueError):
    """Bad configuration or argument: names the field and the problem."""


class NetlinkError(UvxlanError, OSError):
    """A netlink (pyroute2) operation failed: names the object."""


class LabError(UvxlanError):
    """The lab of simulated hosts could not be built, found or removed."""


class NativeError(UvxlanError, OSError):
    """The C fast path refused an operation (carries errno)."""


class StaleBuildError(UvxlanError, ImportError):
    """The compiled fast path does not match the sources or the package."""


class StoreError(UvxlanError):
    """The cluster store refused or failed an operation."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store cannot be reached now (server down, database locked too
    long): retry with backoff."""


class StoreCompacted(StoreError):
    """A watch asked for history the store no longer keeps: list again, then
    watch from the listed revision + 1."""


class LeaseExpired(StoreError):
    """The lease is gone (expired or revoked), and so are its keys: grant a
    new one and put them again."""


class ClusterError(StoreError):
    """The cluster's state refuses the operation: a name, VNI, subnet,
    address or MAC already taken, a network or endpoint or host not found,
    a network with endpoints left, an endpoint its agent failed to make."""
