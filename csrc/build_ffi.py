"""cffi build script for uvxlan._native (out-of-line API mode).

setup.py names it in ``cffi_modules``.  The library is stamped with the
package version and a digest of its sources, and ``uvxlan.native`` refuses
to load a library whose stamp does not match: a stale build fails loudly.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
ROOT = CSRC.parent
SOURCES = sorted(p.name for p in CSRC.glob("*.c"))


def package_version() -> str:
    text = (ROOT / "uvxlan" / "_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    if not match:
        raise RuntimeError("uvxlan/_version.py has no __version__")
    return match.group(1)


def source_digest() -> str:
    """Digest of every C source and header, as uvxlan.native computes it."""
    h = hashlib.sha256()
    for path in sorted(CSRC.glob("*.[ch]")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


CFLAGS = ["-std=gnu11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"]
if os.environ.get("UVX_SANITIZE"):
    # ASan + UBSan build for the test suite; see the Makefile's `sanitize`.
    CFLAGS += ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
LDFLAGS = ["-fsanitize=address,undefined"] if os.environ.get("UVX_SANITIZE") else []

ffibuilder = FFI()
ffibuilder.cdef((CSRC / "uvx_cdef.h").read_text())
ffibuilder.set_source(
    "uvxlan._native",
    '#include "uvx.h"\n#include "fdb.h"\n#include "offload.h"',
    sources=[str(CSRC / s) for s in SOURCES],
    include_dirs=[str(CSRC)],
    define_macros=[
        ("UVX_BUILD_VERSION", f'"{package_version()}"'),
        ("UVX_SOURCE_DIGEST", f'"{source_digest()}"'),
    ],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT / "build" / "cffi"), verbose=True)
