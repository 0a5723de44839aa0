"""uvxlan: a userspace VXLAN overlay (RFC 7348) with a C fast path."""

from uvxlan._version import __version__
from uvxlan.errors import (
    ConfigError,
    LabError,
    NativeError,
    NetlinkError,
    StaleBuildError,
    UvxlanError,
)

__all__ = [
    "__version__",
    "ConfigError",
    "LabError",
    "NativeError",
    "NetlinkError",
    "StaleBuildError",
    "UvxlanError",
]
