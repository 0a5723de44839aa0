"""benchmarks/soak.py, short: one minute of churn, iperf3, ping and agent
restarts (one per host) on three real lab hosts.  A correctness check
only: no stale delivery, no fd or TAP left behind, pings mostly answered,
everything removed, also on Ctrl-C.  The figures are the benchmark's
(docs/operations.md, "Soak")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import needs, root
from uvxlan.lab.netns import Lab

pytestmark = [root, needs("iperf3", "ping")]

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def run_soak(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, str(SOAK), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:          # ours: Ctrl-C first, so it cleans up
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_removed(lab_name: str) -> None:
    lab = Lab(lab_name)
    assert lab.namespaces() == [], "the soak left namespaces behind"
    assert not os.path.exists(lab.state_path), "the soak left its lab state behind"


def test_a_minute_of_churn_and_restarts_delivers_nothing_stale_and_leaks_nothing(
        tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = run_soak(["--minutes", "1", "--restart-every", "15", "--json", str(out)],
                    timeout=600)
    assert out.exists(), done.stderr[-3000:]
    r: dict[str, Any] = json.loads(out.read_text())
    assert_removed(r["lab"])
    # The detector sees what it is for, and had traffic to see.
    assert r["detector_check"] == 1
    assert r["churn"]["attached"] >= 6 and r["churn"]["ip_reused"] >= 1, r["churn"]
    assert r["probe_reach"]["new_address"]["reached_by_all"] >= 1, r["probe_reach"]
    assert r["churn"]["failures"] == 0, r["churn"]["errors"]
    assert r["probes_delivered_to_churned"] > 0
    assert r["stale"] == 0, r["stale_by_container"][:3]
    # Every host's agent was restarted and came back.
    assert sorted(x["host"] for x in r["restarts"]) == ["h1", "h2", "h3"]
    assert all(x["new_pid"] for x in r["restarts"])
    for host, v in r["hosts"].items():
        d = v["delta"]
        assert d is not None, f"{host}: no start or end sample"
        assert d["fds"] <= 0 and d["tun_fds"] <= 0 and d["taps"] <= 0, (host, v["start"],
                                                                         v["end"])
        assert v["end"]["taps"] == 1, (host, v["end"])
        assert v["end"]["rss_mb"] < 1.25 * v["start"]["rss_mb"], (host, v["start"], v["end"])
    for p in r["pings"]:
        assert p["sent"] > 0 and p["lost"] <= 0.2 * p["sent"], p
    assert r["iperf"]["ok"] >= 1, r["iperf"]["detail"]
    assert r["passed"] and done.returncode == 0, done.stdout[-2000:]
    assert "PASSED" in done.stdout and "stale deliveries: 0" in done.stdout


def test_ctrl_c_removes_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(SOAK), "--minutes", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lab_name = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "soak running" in line:
                lab_name = line.split("lab ")[1].split(":")[0]
                break
        assert lab_name, "the soak never started"
        assert Lab(lab_name).namespaces(), "no lab while it runs"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        assert "removing everything" in err
        assert_removed(lab_name)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if lab_name:
            Lab(lab_name).down()
