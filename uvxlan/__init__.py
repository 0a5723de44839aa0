"""uvxlan: a userspace VXLAN overlay (RFC 7348) with a C fast path."""

from uvxlan._version import __version__
from uvxlan.errors import (
    BenchError,
    ClusterError,
    ConfigError,
    LabError,
    LeaseExpired,
    NativeError,
    NetlinkError,
    RecordError,
    StaleBuildError,
    StoreCompacted,
    StoreError,
    StoreUnavailable,
    UvxlanError,
)

__all__ = [
    "__version__",
    "BenchError",
    "ClusterError",
    "ConfigError",
    "LabError",
    "LeaseExpired",
    "NativeError",
    "NetlinkError",
    "RecordError",
    "StaleBuildError",
    "StoreCompacted",
    "StoreError",
    "StoreUnavailable",
    "UvxlanError",
]
