"""cffi build script for uvxlan._native (out-of-line API mode).

setup.py names it in ``cffi_modules``.  The library is stamped with the
package version and a digest of its sources, and ``uvxlan.native`` refuses
to load a library whose stamp does not match: a stale build fails loudly.

What cffi sees is made from ``uvx.h``, the one declaration of the C API
(``cdef_of``): comments and include guards go; ``#define NAME value``
becomes ``#define NAME ...`` and each enum of an included header gets a
trailing ``...``, so the compiler fills every value in and Python never
repeats one; a header ``uvx.h`` includes (``"drop.h"``, ``"vxlan.h"``, …)
shows cffi its constants and enums only, and ``drop.h``'s enum is expanded
from its X-macro list.  The test-only module (csrc/testing/build_testing.py)
reads its header the same way.
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


def source_digest(*dirs: Path) -> str:
    """Digest of every C source and header in dirs (csrc/ by default), as
    uvxlan.native computes it."""
    h = hashlib.sha256()
    for d in dirs or (CSRC,):
        for path in sorted(d.glob("*.[ch]")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


# --- The cdef, from the header --------------------------------------------

_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_DEFINE = re.compile(r"#define\s+(\w+)[ \t]+\S")        # object-like, with a value
_INCLUDE = re.compile(r'#include\s+"([^"]+)"')
_ENUM = re.compile(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_X_ITEM = re.compile(r"^\s*X\((\w+),", re.M)              # drop.h: X(id, name, doc)


def _clean(text: str) -> str:
    """Comments out, continuation lines joined."""
    return _COMMENT.sub("", text).replace("\\\n", " ")


def _enum_items(body: str, x_lists: dict[str, list[str]]) -> list[str]:
    for macro, items in x_lists.items():
        body = re.sub(rf"{macro}\(\w+\)", ", ".join(items) + ",", body)
    names = [re.match(r"\s*(\w+)", item) for item in body.split(",")]
    return [m.group(1) for m in names if m]


def _x_lists(raw: str) -> dict[str, list[str]]:
    """X-macro lists defined in a header: {"UVX_DROP_REASONS": [ids]}."""
    out = {}
    for m in re.finditer(r"#define\s+(\w+)\(X\)((?:[^\n]*\\\n)*[^\n]*)", raw):
        out[m.group(1)] = _X_ITEM.findall(m.group(2).replace("\\\n", "\n"))
    return out


def _constants(header: Path, seen: set[Path], x_lists: dict[str, list[str]]) -> list[str]:
    """What cffi sees of a header the API header includes: its constants
    and enums (and those of the headers it includes), values left to the
    compiler."""
    if header in seen:
        return []
    seen.add(header)
    raw = header.read_text()
    x_lists.update(_x_lists(raw))
    text = _clean(raw)
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if m := _INCLUDE.match(line):
            out += _constants(header.parent / m.group(1), seen, x_lists)
        elif m := _DEFINE.match(line):
            out.append(f"#define {m.group(1)} ...")
    for m in _ENUM.finditer(text):
        items = _enum_items(m.group(2), x_lists)
        out.append(f"enum {m.group(1)} {{ {', '.join(items)}, ... }};")
    return out


def cdef_of(header: Path) -> str:
    """The cdef for an API header: its own declarations as written, each
    constant as `...`, and the constants and enums of what it includes."""
    seen = {header}
    x_lists: dict[str, list[str]] = {}
    out: list[str] = []
    for line in _clean(header.read_text()).splitlines():
        s = line.strip()
        if m := _INCLUDE.match(s):
            out += _constants(header.parent / m.group(1), seen, x_lists)
        elif s.startswith(("#include", "#ifndef", "#endif")):
            continue
        elif m := _DEFINE.match(s):
            out.append(f"#define {m.group(1)} ...")
        elif s.startswith("#define"):
            continue                                   # the include guard
        elif s.startswith("#"):
            raise RuntimeError(f"{header.name}: cffi cannot read {s!r}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


CFLAGS = ["-std=gnu11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"]
if os.environ.get("UVX_SANITIZE"):
    # ASan + UBSan build for the test suite; see the Makefile's `sanitize`.
    CFLAGS += ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
LDFLAGS = ["-fsanitize=address,undefined"] if os.environ.get("UVX_SANITIZE") else []

ffibuilder = FFI()
ffibuilder.cdef(cdef_of(CSRC / "uvx.h"))
ffibuilder.set_source(
    "uvxlan._native",
    '#include "uvx.h"',
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
