"""``uvxlan bench``: the computations behind its figures, its outputs, the
small-packet tools (the real run is tests/system/test_bench_run.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest

from tests.conftest import needs
from uvxlan.cli import build_parser
from uvxlan.errors import BenchError
from uvxlan.lab import bench
from uvxlan.lab.bench import Result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(name: str, **figures: float | list[float]) -> Result:
    r = Result(name)
    for key, vals in figures.items():
        for v in vals if isinstance(vals, list) else [vals]:
            r.add(key, v)
    return r


def _meta(**over: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "date": "2026-01-02 03:04", "command": "uvxlan bench --quick", "seconds": 3.0,
        "repeat": 1, "kernel": "6.1.0-test", "cpus": 2, "udp_offered_pps": 90_000,
        "udp_rate_source": "kernel"}
    meta.update(over)
    return meta


def _sample() -> list[Result]:
    return [
        _result("uvxlan-auto", tcp1_gbps=[7.0, 7.73, 9.0], tcp4_gbps=8.0,
                udp64_kpps=45.0, udp64_loss_pct=50.0, udp64_max_kpps=60.0,
                ping_p50_us=120.0, ping_p99_us=200.0, cpu_s_per_gbit=0.2),
        _result("kernel-vxlan", tcp1_gbps=12.8833, tcp4_gbps=16.0, udp64_kpps=90.0,
                udp64_loss_pct=0.0, udp64_max_kpps=100.0, ping_p50_us=30.0,
                ping_p99_us=50.0),
        _result("underlay", tcp1_gbps=16.0, tcp4_gbps=32.0, udp64_kpps=90.0,
                udp64_loss_pct=0.0, udp64_max_kpps=300.0, ping_p50_us=15.0,
                ping_p99_us=25.0),
    ]


# --- computations ---------------------------------------------------------------

def test_median_of_rounds_ignores_nan() -> None:
    r = _result("x", a=[3.0, 1.0, 2.0], b=[float("nan"), 4.0], c=[float("nan")])
    assert r.median("a") == 2.0
    assert r.median("b") == 4.0
    assert r.median("c") is None and r.median("missing") is None
    assert r.medians() == {"a": 2.0, "b": 4.0}


def test_percentile_nearest_rank() -> None:
    vals = [float(v) for v in range(1, 101)]
    assert bench.percentile(vals, 50) == 50.0
    assert bench.percentile(vals, 99) == 99.0
    assert bench.percentile(vals, 100) == 100.0
    assert bench.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_loss_counts_sent_minus_received() -> None:
    assert bench.loss_pct(1000, 1000) == 0.0
    assert bench.loss_pct(1000, 750) == 25.0
    assert bench.loss_pct(1000, 0) == 100.0
    assert bench.loss_pct(0, 0) == 0.0
    assert bench.loss_pct(10, 12) == 0.0      # never negative


def test_ratio_and_offered_rate() -> None:
    assert bench.ratio(6.0, 12.0) == 0.5
    assert bench.ratio(None, 1.0) is None
    assert bench.ratio(1.0, 0.0) is None
    assert bench.ratio(1.0, None) is None
    assert bench.ratio(1.0, float("nan")) is None
    assert bench.offered_rate(97_432.0) == 90_000
    assert bench.offered_rate(512_000.0) == 510_000
    assert bench.offered_rate(3_000.0) == 10_000


def test_variants_alias_and_order() -> None:
    assert bench.resolve_variants(["underlay", "uvxlan", "uvxlan-auto"]) == [
        "underlay", "uvxlan-auto"]
    assert set(bench.resolve_variants(list(bench.VARIANTS))) == set(bench.VARIANTS)
    with pytest.raises(BenchError, match="unknown variant"):
        bench.resolve_variants(["bogus"])


def test_cli_choices_match_bench() -> None:
    args = build_parser().parse_args(["bench"])
    assert args.variants == list(bench.VARIANTS)
    args = build_parser().parse_args(["bench", "--quick", "--variants", "uvxlan",
                                      "underlay", "--seconds", "1"])
    assert bench.command_line(args) == (
        "uvxlan bench --quick --variants uvxlan underlay --seconds 1")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--variants", "bogus"])


# --- outputs ----------------------------------------------------------------------

def test_table_ratios_to_kernel() -> None:
    md = bench.table(_sample())
    lines = md.splitlines()
    assert lines[0].startswith("| variant | TCP 1 stream Gbit/s |")
    assert len(lines) == 2 + 3
    ncols = len(bench.COLUMNS) + 1
    assert all(line.count("|") == ncols + 1 for line in lines)
    auto = lines[2]
    assert "| 7.73 (0.60×) |" in auto             # median of three rounds
    assert "| 8.00 (0.50×) |" in auto
    assert "| 45 (0.50×) | 50.0 | 60 (0.60×) |" in auto   # loss: no ratio
    assert "| 120 (4.00×) | 200 (4.00×) | 0.200 |" in auto
    kernel = lines[3]
    assert "×" not in kernel and kernel.endswith("| – |")  # no agents, no CPU
    assert "| 300 (3.00×) |" in lines[4]


def test_table_without_kernel_has_no_ratios() -> None:
    results = [r for r in _sample() if r.variant != "kernel-vxlan"]
    assert "×" not in bench.table(results)
    assert "no ratios" in bench.markdown(results, _meta(udp_rate_source="fixed"))


def test_markdown_header_states_how() -> None:
    md = bench.markdown(_sample(), _meta())
    head = md.splitlines()[0]
    for part in ("`uvxlan bench --quick`", "2026-01-02", "Linux 6.1.0-test", "2 CPUs",
                 "median of 1", "90 kpps", "kernel-vxlan's unpaced rate"):
        assert part in head


def test_chart_is_png(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "chart.png"
    bench.write_chart(_sample(), path, "title")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5000


def test_outputs_and_publish(tmp_path: Path) -> None:
    paths = bench.write_outputs(_sample(), _meta(), tmp_path / "results")
    assert [p.name for p in paths] == ["latest.json", "latest.md", "latest.png"]
    doc = json.loads(paths[0].read_text())
    assert doc["meta"]["cpus"] == 2
    assert doc["results"]["uvxlan-auto"]["median"]["tcp1_gbps"] == 7.73
    assert doc["results"]["uvxlan-auto"]["runs"]["tcp1_gbps"] == [7.0, 7.73, 9.0]
    assert "(0.60×)" in paths[1].read_text()
    copied = bench.publish(paths, tmp_path / "docs" / "perf")
    assert [p.read_bytes() for p in copied] == [p.read_bytes() for p in paths]


# --- the C tools ----------------------------------------------------------------

@needs("gcc")
def test_tools_count_by_sequence_number(tmp_path: Path) -> None:
    tools = bench.build_tools(tmp_path)
    assert bench.build_tools(tmp_path) == tools        # up to date: not rebuilt
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))            # a port free now (the sink takes it next)
        port = str(probe.getsockname()[1])
    sink = subprocess.Popen([str(tools["udpsink"]), "127.0.0.1", port, "10", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sink.stderr is not None and sink.stderr.readline().strip() == "ready"
        sent = json.loads(subprocess.run(
            [str(tools["udpblast"]), "127.0.0.1", port, "20000", "0.5"],
            capture_output=True, text=True, check=True, timeout=10).stdout)
        got = json.loads(sink.communicate(timeout=10)[0])
    finally:
        sink.kill()
        sink.wait()
    # 20 kpps paced for 0.5 s, in batches of 32: never above the pace; on
    # a loaded machine the sender may fall behind it (8,544 seen at load 15)
    assert 5000 <= sent["sent"] <= 10_000 and sent["target_pps"] == 20000
    assert got["received"] == sent["sent"] - got["rcvbuf_errors"]
    assert got["max_seq"] == sent["sent"] - 1 or got["rcvbuf_errors"] > 0
    assert got["duplicates"] == 0 and got["foreign"] == 0
    assert got["bytes"] == got["received"] * bench.UDP_PAYLOAD


@needs("gcc")
def test_wakeup_tool_times_real_wakeups(tmp_path: Path) -> None:
    exe = bench.build_tools(tmp_path, names=("wakeup",))["wakeup"]
    cpu = min(os.sched_getaffinity(0))
    done = subprocess.run([str(exe), str(cpu), str(cpu), "2000"],
                          capture_output=True, text=True, check=True, timeout=30)
    got = json.loads(done.stdout)
    assert got["rounds"] == 2000 and got["cpu_a"] == got["cpu_b"] == cpu
    # A wake-up is a context switch and two system calls: more than 0.1 µs,
    # and far less than the 30 s the run was allowed.
    assert 0.1 < got["wakeup_us"] < 10_000
    bad = subprocess.run([str(exe), str(cpu), "4096", "10"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "usable" in bad.stderr and bad.stdout == ""


def test_tools_need_gcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BenchError, match="need gcc"):
        bench.build_tools(tmp_path)


def test_bench_needs_root_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BenchError, match="needs root"):
        bench.run(["underlay"], 1, 1, 1)
    args = Namespace(quick=True, variants=["underlay"], seconds=None, repeat=None,
                     pings=None, pps=None, out=None, publish=False)
    with pytest.raises(BenchError):
        bench.main(args)
