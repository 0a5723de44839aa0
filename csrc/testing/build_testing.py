"""cffi build of the test-only module ``tests.support._uvx_testing``.

The hooks declared in testing.h (the codec one call at a time,
segmentation and coalescing with whole frames, the micro benchmarks' C
timing loops) are built beside the tests, never into ``uvxlan._native``,
and never installed.  scripts/setup.sh runs this after the product build:

    .venv/bin/python csrc/testing/build_testing.py

Like the product library, the module is stamped with the package version
and a digest of its sources (csrc/ and csrc/testing/, build scripts
included), and ``tests/support/native_testing.py`` refuses a stale one.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from cffi import FFI

TESTING = Path(__file__).resolve().parent
CSRC = TESTING.parent
ROOT = CSRC.parent
OUT = ROOT / "tests" / "support"

# The product's build script: the same cdef reader, digest and flags.
_spec = importlib.util.spec_from_file_location("uvx_build_ffi", CSRC / "build_ffi.py")
assert _spec and _spec.loader
product = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(product)

# The test hooks, and the product sources they call (not dp.c and the
# packet path: nothing here needs a datapath).
SOURCES = [TESTING / "testing.c", TESTING / "bench.c",
           *(CSRC / s for s in ("vxlan.c", "csum.c", "fdb.c", "offload.c", "peers.c", "pmtud.c",
                                "capring.c", "fault.c"))]

VERSION, DIGEST = product.package_version(), product.source_digest(CSRC, TESTING)
ffibuilder = FFI()
ffibuilder.cdef(product.cdef_of(TESTING / "testing.h"))
ffibuilder.set_source(
    "_uvx_testing",
    '#include "testing.h"\n' + product.stamp_comment(VERSION, DIGEST),
    sources=[str(p) for p in SOURCES],
    include_dirs=[str(TESTING)],
    define_macros=[
        ("UVX_BUILD_VERSION", f'"{VERSION}"'),
        ("UVX_SOURCE_DIGEST", f'"{DIGEST}"'),
    ],
    extra_compile_args=product.CFLAGS,
    extra_link_args=product.LDFLAGS,
)


def main() -> None:
    built = ffibuilder.compile(tmpdir=str(ROOT / "build" / "cffi-testing"),
                               verbose="-v" in sys.argv)
    for old in OUT.glob("_uvx_testing*.so"):
        old.unlink()
    shutil.copy2(built, OUT / Path(built).name)


if __name__ == "__main__":
    main()
