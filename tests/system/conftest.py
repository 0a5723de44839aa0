"""Everything under tests/system/ is marked ``system``: it needs root and
builds real things (namespaces, TAP devices, raw sockets, etcd, Linux's
vxlan).  ``pytest -m "not system"`` or ``make test-unit`` leaves it out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import needs
from tests.support.cluster import Cluster
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ETCD

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=needs(ETCD))])
def cluster(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path
            ) -> Iterator[Callable[[int], Cluster]]:
    made: list[Cluster] = []

    def make(hosts: int) -> Cluster:
        c = Cluster(lab, tmp_path, request.param, hosts)
        made.append(c)
        c.start()
        return c

    try:
        yield make
    finally:
        codes: dict[str, int] = {}
        for c in made:
            codes.update(c.close())
        bad = {h: rc for h, rc in codes.items() if rc != 0}
        assert not bad, f"agents did not exit cleanly: {bad}"
