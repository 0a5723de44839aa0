"""Watch the underlay while traffic flows: tshark decodes VXLAN on a lab
host's interface during a ping between containers (the interop tests)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from uvxlan.lab.netns import Lab, terminate


def ping_run(lab: Lab, netns: str, dst: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return lab.run(netns, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", dst],
                   timeout=count + 15)


def capture_vxlan(lab: Lab, netns: str, iface: str, port: int, workdir: Path, src_ns: str,
             dst: str) -> tuple[list[list[str]], str]:
    """tshark on netns's iface while src_ns pings dst; rows of (vni, eth.src, eth.dst)."""
    errpath = workdir / "tshark.err"
    count = 6
    with open(errpath, "w") as err:
        tshark = lab.spawn(
            netns,
            ["tshark", "-n", "-l", "-i", iface, "-f", f"udp port {port}",
             "-d", f"udp.port=={port},vxlan", "-a", "duration:20", "-c", str(count),
             "-T", "fields", "-E", "separator=/t",
             "-e", "vxlan.vni", "-e", "eth.src", "-e", "eth.dst"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
    try:
        deadline = time.monotonic() + 15
        while "Capturing on" not in errpath.read_text():
            assert tshark.poll() is None, f"tshark exited: {errpath.read_text().strip()}"
            assert time.monotonic() < deadline, "tshark did not start capturing"
            time.sleep(0.05)
        ping = ping_run(lab, src_ns, dst, count=4)
        try:
            out, _ = tshark.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("tshark did not finish")
    finally:
        terminate(tshark)
    assert ping.returncode == 0, f"ping during capture failed: {ping.stdout}"
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return rows, errpath.read_text()
