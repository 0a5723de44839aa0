"""The Quick start's demo, run as `make demo` runs it, under a lab name of
its own: it must pass and leave nothing behind."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest

from tests.conftest import root
from uvxlan.lab import demo
from uvxlan.lab.netns import Lab

pytestmark = root


def test_demo_passes_and_leaves_nothing_behind(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    name = "dm" + secrets.token_hex(3)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # where its work dir goes
    try:
        code = demo.run(lab_name=name)
    finally:
        out = capsys.readouterr().out
        leftovers = Lab(name).namespaces()
        Lab(name).down()      # even after a crash: its agents and namespaces
    assert code == 0, out
    assert "demo passed" in out and "FAILED" not in out
    for check in ("net1c1 reaches net1c2 across hosts", "net1c1 cannot reach net2c2 (isolated)",
                  "h1 knows net1c2's MAC from the store", "every namespace removed"):
        assert f"[ok] {check}" in out
    assert leftovers == []
    assert list(tmp_path.iterdir()) == []      # agent logs and the store file removed
