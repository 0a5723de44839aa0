"""benchmarks/control_scale.py, reduced: one real agent (lab host h1, the
C datapath) follows a simulated cluster written straight to the embedded
store, at two sizes ten times apart.  It converges from start and after a
burst of attaches and one of detaches (read from its control socket), and
the work per store event (records re-screened, calls into the datapath)
is the same at both sizes: it follows the change, not the cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks.control_scale import measure
from tests.conftest import root
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay

pytestmark = root


def test_the_work_per_event_follows_the_change_not_the_cluster(lab: Lab, tmp_path: Path) -> None:
    lab.up(1)
    url = f"sqlite://{tmp_path}/state.db"
    ov = ClusterOverlay(lab, tmp_path / "agents", url, host_options={"resync": 3600})
    try:
        # measure() waits for each phase to converge (the whole cluster
        # programmed, nothing pending), or raises.
        small = asyncio.run(measure(ov, url, hosts=5, endpoints=50, n=40))
        large = asyncio.run(measure(ov, url, hosts=50, endpoints=500, n=40))
    finally:
        ov.stop_all()
    for r in (small, large):
        assert r["events"] == 80, r              # each attach and detach: one event
    # An attach re-screens its own record and programs an FDB and an ARP
    # entry; a detach removes them (its host's flood entry stays: other
    # endpoints there still want it).
    assert small["rescreened_per_event"] == large["rescreened_per_event"] == 1
    assert small["node_calls_per_event"] == large["node_calls_per_event"] == 2
