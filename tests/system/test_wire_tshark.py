"""tshark decodes the datagrams both codecs build (C and the Python
reference): VNI, inner and outer addresses, and our UDP checksums."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from tests.conftest import root
from tests.support.codec_vectors import IMPLS, SRC_MAC, UNDER_DST, UNDER_SRC, zero_sum_frame
from uvxlan.reference import wire

# --- tshark: offline decode of our bytes --------------------------------------

TSHARK = shutil.which("tshark")


def tshark_fields(pcap: Path, port: int) -> list[list[str]]:
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), "-T", "fields", "-e", "vxlan.vni", "-e", "eth.src",
         "-e", "ip.dst", "-d", f"udp.port=={port},vxlan"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


CASES = [
    (42, "0a:00:00:00:00:01", "10.1.0.1", False),
    (4789, "0a:00:00:00:00:02", "10.2.0.2", True),
    (0xABCDEF, "0a:00:00:00:00:03", "10.3.0.3", False),
    (wire.VNI_MAX, "0a:00:00:00:00:04", "10.4.0.4", True),
    (1, "0a:00:00:00:00:05", "10.5.0.5", True),
]


@root
@pytest.mark.skipif(TSHARK is None, reason="needs tshark")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("port", [4789, 8472])
def test_tshark_decodes_our_datagrams(impl: Any, port: int, tmp_path: Path) -> None:
    pkts = []
    for i, (vni, src, dst, csum) in enumerate(CASES):
        inner = Ether(src=src, dst="0a:ff:00:00:00:01") / IP(src="10.0.0.1", dst=dst) \
            / UDP(sport=1000 + i, dport=53) / Raw(b"hello")
        dgram = impl.build_datagram(vni, bytes(inner), 50000 + i, port,
                                    UNDER_SRC, UNDER_DST, csum=csum)
        pkts.append(Ether(src="02:00:00:00:aa:01", dst="02:00:00:00:aa:02")
                    / IP(src=UNDER_SRC, dst=UNDER_DST, proto=17) / Raw(dgram))
    # And one whose computed checksum is zero, so it goes out as 0xffff.
    zvni, zsport = 77, 50123
    zframe = zero_sum_frame(UNDER_SRC, UNDER_DST, zvni, zsport, port)
    zdgram = impl.build_datagram(zvni, zframe, zsport, port, UNDER_SRC, UNDER_DST, csum=True)
    assert zdgram[6:8] == b"\xff\xff"
    pkts.append(Ether(src="02:00:00:00:aa:01", dst="02:00:00:00:aa:02")
                / IP(src=UNDER_SRC, dst=UNDER_DST, proto=17) / Raw(zdgram))
    pcap = tmp_path / f"ours-{port}.pcap"
    wrpcap(str(pcap), pkts)
    rows = tshark_fields(pcap, port)
    assert len(rows) == len(CASES) + 1
    for row, (vni, src, dst, _) in zip(rows, CASES, strict=False):
        vni_field, eth_src, ip_dst = row
        assert vni_field == str(vni)
        # Outer then inner occurrence of each field.
        assert eth_src.split(",") == ["02:00:00:00:aa:01", src]
        assert ip_dst.split(",") == [UNDER_DST, dst]
    assert rows[-1] == [str(zvni), f"02:00:00:00:aa:01,{SRC_MAC}", UNDER_DST]
    # tshark also checks our UDP checksums when asked to.
    assert TSHARK is not None
    verdicts = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), "-o", "udp.check_checksum:TRUE", "-T", "fields",
         "-e", "udp.checksum.status", "-d", f"udp.port=={port},vxlan"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    # Wireshark's checksum status: 1 = good, 3 = not present (zero); the
    # first occurrence is the outer UDP header, ours.
    expect = ["1" if csum else "3" for *_, csum in CASES] + ["1"]
    assert [v.split(",")[0] for v in verdicts] == expect
