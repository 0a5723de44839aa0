"""The parsers (VXLAN, ARP, offloads) and the FDB under AddressSanitizer and
UBSan, fed random and
half-valid VXLAN inputs (csrc/fuzz/fuzz_vxlan.c).  libFuzzer runs the same
target with `make fuzz` where clang is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("seed", ["0x9e3779b97f4a7c15", "12345"])
def test_parsers_and_fdb_clean_under_asan_ubsan(tmp_path: Path, seed: str) -> None:
    exe = tmp_path / "fuzz_vxlan"
    subprocess.run(
        ["gcc", "-std=gnu11", "-D_GNU_SOURCE", "-DUVX_FUZZ_STANDALONE", "-g", "-O1",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-Wall", "-Wextra", "-Werror", f"-I{CSRC}",
         str(CSRC / "fuzz" / "fuzz_vxlan.c"), str(CSRC / "vxlan.c"), str(CSRC / "fdb.c"),
         str(CSRC / "csum.c"), str(CSRC / "arp.c"), str(CSRC / "offload.c"),
         str(CSRC / "capring.c"), "-o", str(exe)],
        check=True, timeout=120,
    )
    run = subprocess.run([str(exe), "300000", seed], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no findings" in run.stdout
