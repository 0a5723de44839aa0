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
from its X-macro list.  The reader is strict: anything else (a constant
that is not an integer expression, a function-like macro in ``uvx.h``, a
typedef'd or anonymous enum, an enum item it cannot read, an X-list used
before it is defined, another directive) is a RuntimeError naming the file
and line.  The test-only module (csrc/testing/build_testing.py) imports this
file and reads its header the same way.

The digest is ``uvxlan/_stamp.py``'s (loaded here by its path): it covers
the C sources and this script, so a change to the cdef makes a build stale.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn

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


def _load_stamp() -> ModuleType:
    """uvxlan/_stamp.py, by its path: the package is not built (or importable)
    yet, and the module needs nothing but the standard library."""
    spec = importlib.util.spec_from_file_location("uvxlan_build_stamp",
                                                  ROOT / "uvxlan" / "_stamp.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load uvxlan/_stamp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_stamp = _load_stamp()


def source_digest(*dirs: Path) -> str:
    """Digest of the sources in dirs (csrc/ by default): uvxlan/_stamp.py's,
    the one uvxlan.native checks."""
    return str(_stamp.source_digest(*(dirs or (CSRC,))))


# --- The cdef, from the header --------------------------------------------
#
# A strict reader: what it does not understand is a RuntimeError naming the
# file and line, never a constant or enum item silently dropped or mangled.

# One token of C text: a comment (or an unterminated one), a continuation,
# a newline, a string literal, a run of anything else, or one character.
_TOKEN = re.compile(r'/\*.*?\*/|/\*|//[^\n]*|\\\n|\n|"(?:[^"\\\n]|\\.)*"|[^/\\\n"]+|.', re.S)
# One token of an integer constant expression: a literal, a name, an operator.
_INT_TOKEN = re.compile(
    r"\s*(?:((?:0[xX][0-9a-fA-F]+|\d+)[uUlL]*)(?!\w)|(\w+)|(<<|>>|[-+*/%|&^~()]))")
# drop.h's X-macro lists: X(id, "name", "doc"), arguments without parentheses.
_X_ITEM = re.compile(r'\s*X\(\s*(\w+)\s*(?:,\s*(?:"(?:[^"\\]|\\.)*"|[^,()"]+)\s*)*\)')


def _where(path: Path, line: int) -> str:
    try:
        return f"{path.relative_to(ROOT)}:{line}"
    except ValueError:
        return f"{path}:{line}"


def _fail(path: Path, line: int, what: str) -> NoReturn:
    raise RuntimeError(f"{_where(path, line)}: {what} (csrc/build_ffi.py cannot show it to cffi)")


def _lines(path: Path) -> list[tuple[int, str]]:
    """The logical lines of a header, each with the number of its first
    line: comments out (one space each), continuation lines joined."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    line = start = 1
    for m in _TOKEN.finditer(path.read_text()):
        t = m.group()
        if t == "\n":
            out.append((start, "".join(buf)))
            buf = []
            line += 1
            start = line
        elif t == "\\\n":
            buf.append(" ")
            line += 1
        elif t == "/*":
            _fail(path, line, "a comment that is never closed")
        elif t.startswith(("/*", "//")):
            buf.append(" ")
            line += t.count("\n")
        else:
            buf.append(t)
    if buf:
        out.append((start, "".join(buf)))
    return out


def _int_problem(expr: str, known: set[str]) -> str | None:
    """Why expr is not an integer constant expression made of literals,
    operators and the names in known; None if it is one."""
    pos, depth, operands, prev_name = 0, 0, 0, False
    while expr[pos:].strip():
        m = _INT_TOKEN.match(expr, pos)
        if not m:
            return f"{expr!r} is not an integer expression"
        literal, name, op = m.groups()
        if name is not None:
            if name not in known:
                return f"{name!r} in {expr!r} is not an integer constant defined before"
            operands += 1
        elif literal is not None:
            operands += 1
        elif op == "(":
            if prev_name:
                return f"{expr!r} calls a macro"
            depth += 1
        elif op == ")":
            depth -= 1
            if depth < 0:
                return f"{expr!r} has unbalanced parentheses"
        prev_name = name is not None
        pos = m.end()
    if depth:
        return f"{expr!r} has unbalanced parentheses"
    if not operands:
        return f"{expr!r} is not an integer expression"
    return None


class _Reader:
    """Reads an API header and, for what it includes, their constants and
    enums; one reader per cdef."""

    def __init__(self) -> None:
        self.seen: set[Path] = set()
        self.names: set[str] = set()        # integer constants and enum items so far
        self.x_lists: dict[str, list[str]] = {}                 # NAME(X): the ids
        self.macros: dict[str, tuple[list[str], str]] = {}      # other NAME(params): body

    def read(self, path: Path, api: bool) -> list[str]:
        """The cdef lines of a header: for the API header (api) its own
        declarations as written; for an included one, its constants and
        enums only.  Either way, each constant as `...`."""
        path = path.resolve()
        if path in self.seen:
            return []
        self.seen.add(path)
        out: list[str] = []
        pending: list[tuple[int, str]] = []     # an included header's C text
        guard: str | None = None
        closed = False
        for lineno, line in _lines(path):
            s = line.strip()
            if not s.startswith("#"):
                if api:
                    out.append(line)
                else:
                    pending.append((lineno, line))
                continue
            out += self._enums(path, pending)
            pending = []
            m = re.fullmatch(r"#\s*(\w+)\s*(.*)", s)
            word, rest = m.groups() if m else ("", "")
            if word == "include":
                if inc := re.fullmatch(r'"([^"]+)"', rest):
                    out += self.read(path.parent / inc.group(1), api=False)
                elif not re.fullmatch(r"<[^>]+>", rest):
                    _fail(path, lineno, f"cannot read {s!r}")
            elif word == "ifndef" and guard is None and re.fullmatch(r"\w+", rest):
                guard = rest                            # the include guard
            elif word == "endif" and guard is not None and not closed and not rest:
                closed = True
            elif word == "define":
                out += self._define(path, lineno, rest, guard, api)
            elif word == "undef" and not api and re.fullmatch(r"\w+", rest):
                if rest in self.names or rest in self.x_lists:
                    _fail(path, lineno, f"#undef of {rest}, which cffi already has")
                self.macros.pop(rest, None)
            else:
                _fail(path, lineno, f"cannot read {s!r}")
        return out + self._enums(path, pending)

    def _define(self, path: Path, lineno: int, rest: str, guard: str | None,
                api: bool) -> list[str]:
        m = re.match(r"\w+", rest)
        if not m:
            _fail(path, lineno, f"cannot read '#define {rest}'")
        name, after = m.group(), rest[m.end():]
        if after.startswith("("):                       # function-like
            if api:
                _fail(path, lineno, f"function-like macro {name}() in the API header")
            close = after.find(")")
            if close < 0:
                _fail(path, lineno, f"cannot read the parameters of {name}()")
            params = [p.strip() for p in after[1:close].split(",")]
            body = after[close + 1:].strip()
            if params == ["X"]:
                self.x_lists[name] = self._x_items(path, lineno, name, body)
            else:
                self.macros[name] = (params, body)
            return []
        if after and not after[0].isspace():
            _fail(path, lineno, f"cannot read '#define {rest}'")
        value = after.strip()
        if not value:
            if name == guard:
                return []
            _fail(path, lineno, f"#define {name} has no value")
        if problem := _int_problem(value, self.names):
            _fail(path, lineno, f"#define {name}: {problem}")
        self.names.add(name)
        return [f"#define {name} ..."]

    def _x_items(self, path: Path, lineno: int, name: str, body: str) -> list[str]:
        """The ids of an X-macro list: a body of X(id, ...) and nothing else."""
        ids, pos = [], 0
        while body[pos:].strip():
            m = _X_ITEM.match(body, pos)
            if not m:
                _fail(path, lineno, f"X-list {name}: cannot read {body[pos:].strip()[:40]!r},"
                                    " expected X(id, ...)")
            ids.append(m.group(1))
            pos = m.end()
        if not ids:
            _fail(path, lineno, f"X-list {name} is empty")
        return ids

    def _enums(self, path: Path, chunk: list[tuple[int, str]]) -> list[str]:
        """The enums defined in a stretch of an included header's C text
        (between two directives), each `enum NAME { items, ... };`."""
        text = "\n".join(line for _, line in chunk)

        def line_at(pos: int) -> int:
            return chunk[text.count("\n", 0, pos)][0]

        out = []
        for m in re.finditer(r"\benum\b", text):
            at = line_at(m.start())
            if re.search(r"\btypedef\s*$", text[:m.start()]):
                _fail(path, at, "a typedef enum (write `enum NAME { ... };`)")
            head = re.compile(r"\s*(\w+)?\s*(\{)?").match(text, m.end())
            assert head
            name, brace = head.groups()
            if not brace:
                if name:
                    continue                            # a use: `enum NAME x`
                _fail(path, at, "an enum without a name")
            if not name:
                _fail(path, at, "an anonymous enum (name it)")
            close = text.find("}", head.end())
            if close < 0:
                _fail(path, at, f"enum {name} does not end before the next directive")
            if not re.match(r"\s*;", text[close + 1:]):
                _fail(path, at, f"enum {name} must end with '}};'")
            first = text.count("\n", 0, head.end())
            items = self._enum_items(path, text[head.end():close],
                                     [n for n, _ in chunk[first:]].__getitem__)
            out.append(f"enum {name} {{ {', '.join(items)}, ... }};")
        return out

    def _enum_items(self, path: Path, body: str, line: Callable[[int], int]) -> list[str]:
        """The item names of an enum body, X-lists expanded; line(k) is the
        number of the body's k-th line."""
        def line_at(text: str, pos: int) -> int:
            return line(text.count("\n", 0, pos))

        def expand(m: re.Match[str]) -> str:
            x_list, x = m.groups()
            if x_list not in self.x_lists:
                return m.group()                        # not an X-list: refused below
            ids = self._x_expand(path, line_at(body, m.start()), x_list, x)
            return " ".join(f"{i}," for i in ids)

        # Expanding adds no newline: line numbers stay those of the header.
        text = re.sub(r"(\w+)[ \t]*\([ \t]*(\w+)[ \t]*\)", expand, body)
        # Split at the commas outside parentheses.
        parts, depth, at = [], 0, 0
        for i, c in enumerate(text):
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "," and depth == 0:
                parts.append((at, text[at:i]))
                at = i + 1
        parts.append((at, text[at:]))
        if not parts[-1][1].strip():
            parts.pop()                                 # after a trailing comma
        items: list[str] = []
        for pos, part in parts:
            item = " ".join(part.split())
            where = line_at(text, pos + len(part) - len(part.lstrip()))
            if not item:
                _fail(path, where, "an empty enum item")
            if m := re.fullmatch(r"(\w+) ?\(.*", item):
                _fail(path, where, f"enum item {item!r}: {m.group(1)} is not an X-list"
                                   " defined before this line")
            m = re.fullmatch(r"(\w+)(?: ?= ?(.+))?", item)
            if not m:
                _fail(path, where, f"cannot read the enum item {item!r}")
            if m.group(2) is not None and (problem := _int_problem(m.group(2), self.names)):
                _fail(path, where, f"enum item {m.group(1)}: {problem}")
            items.append(m.group(1))
            self.names.add(m.group(1))
        if not items:
            _fail(path, line(0), "an empty enum")
        return items

    def _x_expand(self, path: Path, line: int, x_list: str, x: str) -> list[str]:
        """`LIST(X)` in an enum: LIST's ids, if X expands to its first argument
        and a comma."""
        params, body = self.macros.get(x, ([], ""))
        if not params or not re.fullmatch(rf"{re.escape(params[0])}\s*,", body):
            _fail(path, line, f"{x_list}({x}): {x} is not defined before as `{x}(id, ...) id,`")
        return self.x_lists[x_list]


def cdef_of(header: Path) -> str:
    """The cdef for an API header: its own declarations as written, each
    constant as `...`, and the constants and enums of what it includes."""
    return "\n".join(_Reader().read(header, api=True)) + "\n"


CFLAGS = ["-std=gnu11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"]
# Sanitizer builds for the test suite: UVX_SANITIZE=1, ASan + UBSan (the
# Makefile's `sanitize`); UVX_SANITIZE=thread, ThreadSanitizer (`tsan`).
_SANITIZE = os.environ.get("UVX_SANITIZE")
_SANITIZERS = "thread" if _SANITIZE == "thread" else "address,undefined"
if _SANITIZE:
    CFLAGS += ["-O1", "-fno-omit-frame-pointer", f"-fsanitize={_SANITIZERS}"]
LDFLAGS = [f"-fsanitize={_SANITIZERS}"] if _SANITIZE else []



def stamp_comment(version: str, digest: str) -> str:
    """A line for the generated C source that carries the stamp: cffi
    rewrites that file when the stamp changes, and so the whole library is
    compiled again, even when only a header or this script changed (the
    compiler would otherwise see no source newer than the library)."""
    return f"/* uvxlan {version}, sources {digest} */"


VERSION, DIGEST = package_version(), source_digest()
ffibuilder = FFI()
ffibuilder.cdef(cdef_of(CSRC / "uvx.h"))
ffibuilder.set_source(
    "uvxlan._native",
    '#include "uvx.h"\n' + stamp_comment(VERSION, DIGEST),
    sources=[str(CSRC / s) for s in SOURCES],
    include_dirs=[str(CSRC)],
    define_macros=[
        ("UVX_BUILD_VERSION", f'"{VERSION}"'),
        ("UVX_SOURCE_DIGEST", f'"{DIGEST}"'),
    ],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT / "build" / "cffi"), verbose=True)
