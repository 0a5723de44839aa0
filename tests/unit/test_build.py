"""The compiled fast path refuses to load when it is stale."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _import_native(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import uvxlan.native"], cwd=tree,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_a_build_from_other_sources_fails_loudly(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "uvxlan", tmp_path / "uvxlan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    assert _import_native(tmp_path).returncode == 0
    with open(tmp_path / "csrc" / "vxlan.c", "a") as f:
        f.write("/* an edit not yet compiled */\n")
    done = _import_native(tmp_path)
    assert done.returncode != 0
    assert "StaleBuildError" in done.stderr and "make build" in done.stderr


def test_a_changed_cdef_generator_makes_the_build_stale(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "uvxlan", tmp_path / "uvxlan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    with open(tmp_path / "csrc" / "build_ffi.py", "a") as f:
        f.write("# an edit to the cdef generator, not yet built\n")
    done = _import_native(tmp_path)
    assert done.returncode != 0
    assert "StaleBuildError" in done.stderr and "make build" in done.stderr


def test_a_library_of_another_version_fails_loudly(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "uvxlan", tmp_path / "uvxlan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "uvxlan" / "_version.py").write_text('__version__ = "9.9.9"\n')
    done = _import_native(tmp_path)
    assert done.returncode != 0
    assert "version" in done.stderr and "make build" in done.stderr


def test_a_stale_test_module_fails_loudly(tmp_path: Path) -> None:
    for part in ("uvxlan", "csrc", "tests/support"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests" / "__init__.py").touch()
    imports = "import uvxlan.native, tests.support.native_testing"
    run = [sys.executable, "-c", imports]
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "csrc" / "testing" / "bench.c", "a") as f:
        f.write("/* an edit not yet compiled */\n")
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert "StaleBuildError" in done.stderr and "test module" in done.stderr


def test_protocol_constants_that_differ_from_c_fail_loudly(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "uvxlan", tmp_path / "uvxlan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proto = tmp_path / "uvxlan" / "proto.py"
    proto.write_text(proto.read_text().replace("VXLAN_HLEN = 8", "VXLAN_HLEN = 9"))
    done = _import_native(tmp_path)
    assert done.returncode != 0
    assert "StaleBuildError" in done.stderr and "VXLAN_HLEN" in done.stderr


def test_config_bounds_that_differ_from_c_fail_loudly(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "uvxlan", tmp_path / "uvxlan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "uvxlan" / "config.py"
    text = config.read_text()
    assert "send_sockets: int = setting(8, Bounds(1, 64))" in text
    config.write_text(text.replace("send_sockets: int = setting(8, Bounds(1, 64))",
                                   "send_sockets: int = setting(8, Bounds(1, 65))"))
    done = _import_native(tmp_path)
    assert done.returncode != 0
    assert "StaleBuildError" in done.stderr and "UVX_POOL_MAX" in done.stderr


def test_the_cdef_reader_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("uvx_build_ffi", ROOT / "csrc" / "build_ffi.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    api, inc = tmp_path / "api.h", tmp_path / "inc.h"
    refused = [
        ('#define NAME "text"\n', "", "api.h:1"),
        ("#define MAX(a, b) a\n", "", "api.h:1"),
        ('#include "inc.h"\n', "\ntypedef enum e { A } e_t;\n", "inc.h:2"),
        ('#include "inc.h"\n', "enum { A, B };\n", "inc.h:1"),
        ('#include "inc.h"\n', "enum e {\n\tA = 1,\n\tB = F(1, 2),\n};\n", "inc.h:3"),
        ('#include "inc.h"\n', '#define E(id, n) id,\nenum e { L(E) };\n#define L(X) X(A, "a")\n',
         "inc.h:2"),
    ]
    for api_text, inc_text, where in refused:
        api.write_text(api_text)
        inc.write_text(inc_text)
        with pytest.raises(RuntimeError, match=where):
            build.cdef_of(api)
    inc.write_text('#define L(X) X(A, "a") \\\n\tX(B, "b")\n#define E(id, n) id,\n'
                   "enum e {\n\tL(E)\n\tC = 1u << 3,\n};\n#undef E\n")
    api.write_text('#include "inc.h"\n#define N (C + 1)\nint f(void);\n')
    assert build.cdef_of(api).split("\n") == [
        "enum e { A, B, C, ... };", "#define N ...", "int f(void);", ""]
