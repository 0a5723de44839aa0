"""Shared fixtures.  Tests that need namespaces, TAPs or raw sockets are
marked ``root`` and skip cleanly without it; every lab they make has a
unique name and is removed even when the test fails."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uvxlan.lab import Lab
from uvxlan.overlay import Overlay, Placement

IS_ROOT = os.geteuid() == 0

root = pytest.mark.skipif(not IS_ROOT, reason="needs root (namespaces, TAP, raw sockets)")


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A lab with a unique name; the test calls lab.up(n).  Always removed."""
    if not IS_ROOT:
        pytest.skip("needs root")
    the_lab = Lab("t" + secrets.token_hex(4))
    try:
        yield the_lab
    finally:
        the_lab.down()
        assert not the_lab.namespaces(), "lab left namespaces behind"


OverlayFactory = Callable[..., Overlay]


@pytest.fixture
def overlay(lab: Lab, tmp_path: Path) -> Iterator[OverlayFactory]:
    """Build an overlay on the lab: hosts, containers, agents.  The agents
    are stopped (SIGTERM) at the end and must exit cleanly."""
    made: list[Overlay] = []

    def make(networks: dict[str, int], placements: list[Placement], *,
             hosts: int = 2, run: list[str] | None = None, **kw: object) -> Overlay:
        lab.up(hosts)
        for p in placements:
            lab.add_container(p.container)
        names = [f"h{i + 1}" for i in range(hosts)]
        ov = Overlay(lab, tmp_path, networks, placements,
                     hosts=names if run is None else run, **kw)  # type: ignore[arg-type]
        made.append(ov)
        ov.start_all()
        return ov

    try:
        yield make
    finally:
        codes: dict[str, int] = {}
        for ov in made:
            codes.update(ov.stop_all())
        bad = {h: c for h, c in codes.items() if c != 0}
        assert not bad, f"agents did not exit cleanly: {bad}"
