"""Everything under tests/system/ is marked ``system``: it needs root and
builds real things (namespaces, TAP devices, raw sockets, etcd, Linux's
vxlan).  ``pytest -m "not system"`` or ``make test-unit`` leaves it out."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.system)
