"""The commands the documentation uses exist after the set-up and run from
anywhere: ``uvxlan`` and ``uvxlan-cni`` in .venv/bin (scripts/setup.sh), and
for root on the PATH through /usr/local/bin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from uvxlan import __version__

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
CLEAN = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

pytestmark = pytest.mark.skipif(not (BIN / "uvxlan").exists(),
                                reason="scripts/setup.sh has not written .venv/bin/uvxlan")


def test_uvxlan_runs_from_any_directory_without_pythonpath(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "uvxlan"), "--version"], cwd=tmp_path, env=CLEAN,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert __version__ in done.stdout


@pytest.mark.parametrize("name", ["uvxlan", "uvxlan-cni"])
def test_a_module_planted_in_the_working_directory_never_runs(tmp_path: Path,
                                                              name: str) -> None:
    """root runs these from wherever it stands (a runtime, from a user's
    directory): nothing there is imported in place of ours."""
    for module in ("uvxlan", "json", "argparse"):
        planted = tmp_path / module
        planted.mkdir()
        (planted / "__init__.py").write_text("raise SystemExit('planted code ran')\n")
    (tmp_path / "uvxlan" / "__main__.py").write_text("raise SystemExit('planted code ran')\n")
    done = subprocess.run([str(BIN / name), "--help"] if name == "uvxlan" else [str(BIN / name)],
                          cwd=tmp_path, env={**CLEAN, "CNI_COMMAND": "VERSION"},
                          input='{"cniVersion": "1.0.0"}', capture_output=True, text=True,
                          timeout=60)
    assert "planted" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr


def test_uvxlan_cni_answers_version_as_a_runtime_calls_it(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "uvxlan-cni")], cwd=tmp_path,
                          env={**CLEAN, "CNI_COMMAND": "VERSION"},
                          input='{"cniVersion": "1.0.0"}', capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1.1.0" in json.loads(done.stdout)["supportedVersions"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the set-up links the commands for root only")
def test_root_finds_both_on_the_path() -> None:
    for name in ("uvxlan", "uvxlan-cni"):
        found = shutil.which(name, path=CLEAN["PATH"])
        assert found is not None, f"{name} is not on root's PATH (scripts/setup.sh links it)"
