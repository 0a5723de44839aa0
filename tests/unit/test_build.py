"""The compiled fast path refuses to load when it is stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
