"""The shape of uvxlan's imports, read from the source (ast), not by
importing: every ``import`` and ``from ... import`` of a uvxlan module,
at module level, under ``if TYPE_CHECKING:`` or inside a function.

- No cycle: no module imports one that imports it back, however far
  round and however late (a type-only or a function-level import counts).
  Edges are the names written; the parent package Python runs first when
  a submodule is imported is not counted as an edge of its own.
- The product (all of uvxlan/ but uvxlan/lab/ and uvxlan/reference/) never
  imports the tooling (lab) or the reference models.  One exception: the
  CLI is the entry point that dispatches to the tooling, so uvxlan/cli.py
  may import uvxlan.lab inside the functions of its lab, demo and bench
  commands (never at module level).
- The control plane reaches the datapath only through NodePort, and the
  commands that read an agent's socket load no C.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "uvxlan"
TOOLING = ("uvxlan.lab", "uvxlan.reference")
C_FAST_PATH = {"uvxlan.native", "uvxlan._native"}


@dataclass(frozen=True)
class Import:
    target: str          # a uvxlan module (or package)
    deferred: bool       # inside a function or under TYPE_CHECKING
    line: int


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def add(name: str, deferred: bool, line: int) -> None:
        if name == "uvxlan" or name.startswith("uvxlan."):
            found.append(Import(name, deferred, line))

    def visit(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, deferred, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # from uvxlan import cluster: the module; from uvxlan.cluster
                # import X: the module X is defined in.
                add(sub if sub in MODULES else base, deferred, node.lineno)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, True)
            for stmt in node.orelse:
                visit(stmt, deferred)
            return
        late = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                             ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, late)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


def _edges(*, deferred: bool) -> dict[str, set[str]]:
    """module -> the uvxlan modules it imports (deferred ones too, if asked)."""
    return {m: {i.target for i in imps if deferred or not i.deferred} - {m}
            for m, imps in IMPORTS.items()}


def _reach(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one (depth-first)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}              # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for nxt in sorted(edges.get(m, set())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            dfs(m)
    return found


def _is_tooling(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TOOLING)


def test_the_walk_sees_every_kind_of_import() -> None:
    # Guards the test itself: a module-level, a type-only and a
    # function-level import are all found, and told apart.
    cli = {(i.target, i.deferred) for i in IMPORTS["uvxlan.cli"]}
    assert ("uvxlan.errors", False) in cli
    assert ("uvxlan.store", True) in cli               # under TYPE_CHECKING
    assert ("uvxlan.lab.netns", True) in cli           # in _cmd_lab
    assert ("uvxlan.control", True) in cli             # in _cmd_stats
    assert len(MODULES) > 20


def test_no_import_cycles() -> None:
    assert _cycles(_edges(deferred=True)) == []


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_product_does_not_import_the_tooling() -> None:
    bad = []
    for module, imps in IMPORTS.items():
        if _is_tooling(module):
            continue
        for i in imps:
            if not _is_tooling(i.target):
                continue
            if module == "uvxlan.cli" and i.deferred and i.target.startswith("uvxlan.lab"):
                continue                # the lab, demo and bench commands dispatch to it
            bad.append(f"{MODULES[module].name}:{i.line} imports {i.target}")
    assert bad == []


def test_the_controller_reaches_the_datapath_only_through_its_node_port() -> None:
    reach = _reach("uvxlan.controller", _edges(deferred=True))
    assert not reach & (C_FAST_PATH | {"uvxlan.node", "uvxlan.daemon", "uvxlan.endpoint"})


def test_only_the_node_holds_the_datapath() -> None:
    users = {m for m, imps in IMPORTS.items()
             if any(i.target in C_FAST_PATH for i in imps)} - C_FAST_PATH
    assert users <= {"uvxlan.node", "uvxlan.reference.fdb"}, users
    for module, path in MODULES.items():
        if module != "uvxlan.native":
            assert "._dp" not in path.read_text(), path


def test_reading_an_agents_socket_loads_no_c() -> None:
    loaded = _edges(deferred=False)
    for start in ("uvxlan.cli", "uvxlan.control"):
        assert not _reach(start, loaded) & C_FAST_PATH, start
    # What `uvxlan stats` and `uvxlan fdb show` import when they run.
    assert _reach("uvxlan.control", _edges(deferred=True)) <= {"uvxlan.errors"}
