"""One real, short ``uvxlan bench`` run on a lab: every figure finite, the
chart and table written, no namespace left behind."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import needs, root
from uvxlan.lab import bench

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# --- one real run -----------------------------------------------------------------

@root
@needs("iperf3", "gcc")
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split())
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "uvxlan", "bench", "--quick", "--variants", "underlay",
         "uvxlan-none", "--seconds", "1", "--pings", "20", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    print(f"\nbench --quick: {time.monotonic() - t0:.0f} s")
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["meta"]["udp_rate_source"] == "fixed"
    assert doc["meta"]["udp_offered_pps"] == bench.FALLBACK_PPS
    for name in ("underlay", "uvxlan-none"):
        med = doc["results"][name]["median"]
        for key in bench.FIGURES:
            if key == "cpu_s_per_gbit" and name == "underlay":
                assert key not in med           # no agents to count
                continue
            val = med[key]
            assert isinstance(val, float) and math.isfinite(val), (name, key)
            assert val >= 0 if key == "udp64_loss_pct" else val > 0, (name, key, val)
    assert (tmp_path / "latest.png").read_bytes()[:8] == PNG_MAGIC
    assert "uvxlan-none" in (tmp_path / "latest.md").read_text()
    assert "[2/2] uvxlan-none: iperf3 1 stream …" in done.stderr
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=True).stdout.split())
    assert not {ns for ns in after - before if ns.startswith("uvx-b")}
