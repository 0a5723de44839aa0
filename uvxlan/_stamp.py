"""The source digest a build of the C code is stamped with: one definition.

csrc/build_ffi.py stamps it into ``uvxlan._native`` (and
csrc/testing/build_testing.py into the test module); ``uvxlan.native`` and
``tests/support/native_testing.py`` compare it with the sources at import.
The build scripts load this file by its path, before the package is built,
so it imports nothing but the standard library.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: What a build is made from, in each source directory: the C sources and
#: headers, and the build scripts (``build_ffi.py`` makes the cdef).
PATTERNS = ("*.c", "*.h", "build_*.py")


def source_digest(*dirs: Path) -> str:
    """Digest of the files of ``PATTERNS`` in each of dirs, in order."""
    h = hashlib.sha256()
    for d in dirs:
        for path in sorted({p for pattern in PATTERNS for p in d.glob(pattern)}):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]
