"""jail310: run a command as if on Linux 3.10 (see README.md here).

``build_jail()`` compiles ``jail310.c`` into ``build/jail/jail310`` when the
binary is missing or older than its source; ``jailed(argv)`` prefixes a
command line with the jail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["JailBuildError", "SOURCE", "build_jail", "jailed"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "jail310.c"
REPO = HERE.parents[2]
BUILD_DIR = REPO / "build" / "jail"


class JailBuildError(RuntimeError):
    """The jail could not be built (no C compiler, or it did not compile)."""


def _out_dir() -> Path:
    try:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        if os.access(BUILD_DIR, os.W_OK):
            return BUILD_DIR
    except OSError:
        pass
    # A read-only checkout: build somewhere private instead.
    out = Path(tempfile.gettempdir()) / f"uvxlan-jail-{os.getuid()}"
    out.mkdir(mode=0o700, exist_ok=True)
    return out


def build_jail(cc: str | None = None) -> Path:
    """Path to a jail310 binary no older than its source, compiling it if needed."""
    binary = _out_dir() / "jail310"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = cc or os.environ.get("CC") or "gcc"
    if shutil.which(compiler) is None:
        raise JailBuildError(f"cannot build jail310: no C compiler '{compiler}' on PATH")
    # Build to a temporary name and rename: parallel test runs never see a
    # half-written binary.
    tmp = binary.with_name(f".jail310.{os.getpid()}")
    cmd = [compiler, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise JailBuildError(f"cannot build jail310 ({' '.join(cmd)}):\n{res.stderr.strip()}")
    os.replace(tmp, binary)
    return binary


def jailed(argv: list[str], *, log: bool = False) -> list[str]:
    """argv run under the jail (built if needed); log prints its rules to stderr."""
    return [str(build_jail()), *(["--log"] if log else []), "--", *argv]
