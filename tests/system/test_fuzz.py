"""A short libFuzzer run of each packet-path target (csrc/fuzz/fuzz_rcv.c,
fuzz_xmit.c) under ASan and UBSan: built with clang as `make fuzz-build`
does, started from the seeds of csrc/fuzz/seeds.py and the past findings
of csrc/fuzz/regress-*, 20,000 executions each.  The long runs are
`make fuzz-rcv` / `make fuzz-xmit` (FUZZ_RUNS, FUZZ_SECONDS).  Root: the
transmit target's raw socket.  Skipped only where clang or its fuzzer
runtime (Debian: libclang-rt-14-dev) is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import root

pytestmark = root

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
FLAGS = ["-std=gnu11", "-D_GNU_SOURCE", "-g", "-O1", "-Wall", "-Wextra",
         "-Wno-unused-parameter", "-Werror",
         "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", f"-I{CSRC}"]


def fuzzer_runtime() -> bool:
    if shutil.which("clang") is None:
        return False
    lib = subprocess.run(["clang", "-print-file-name=libclang_rt.fuzzer-x86_64.a"],
                         capture_output=True, text=True).stdout.strip()
    return Path(lib).is_file()


@pytest.mark.skipif(not fuzzer_runtime(), reason="needs clang and libclang-rt-14-dev")
@pytest.mark.parametrize("target", ["rcv", "xmit"])
def test_packet_path_target_runs_clean(tmp_path: Path, target: str) -> None:
    exe = tmp_path / f"fuzz_{target}"
    sources = [CSRC / "fuzz" / f"fuzz_{target}.c", CSRC / "fuzz" / "fuzz_dp.c",
               *sorted(CSRC.glob("*.c"))]
    subprocess.run(["clang", *FLAGS, *map(str, sources), "-lpthread", "-o", str(exe)],
                   check=True, timeout=300)
    seeds = tmp_path / "seeds"
    subprocess.run([sys.executable, str(CSRC / "fuzz" / "seeds.py"), target, str(seeds)],
                   check=True, timeout=60)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    regress = CSRC / "fuzz" / f"regress-{target}"
    dirs = [corpus, seeds, *([regress] if regress.is_dir() else [])]
    run = subprocess.run(
        [str(exe), "-runs=20000", "-max_len=65600", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/", *map(str, dirs)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "stat::number_of_executed_units: 20000" in run.stderr
    assert not list(tmp_path.glob("crash-*"))
