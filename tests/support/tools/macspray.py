"""Spray VXLAN frames with a new source MAC each at a VXLAN port, for
tests/system/test_admission.py (a learning-table exhaustion attack).

Run inside a lab host's namespace; sends from a socket bound to ``--bind``
(an ephemeral port) to ``--to``: ``--count`` broadcast frames in VNI
``--vni``, source MACs 06:00:00:00:00:00 + i (locally administered,
unicast), in bursts of ``--burst`` with a short pause between them so the
receiver's socket buffer is not what stops them.  Prints ``{"sent": N}``.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time


def datagram(vni: int, i: int) -> bytes:
    header = struct.pack("!II", 0x08000000, vni << 8)        # RFC 7348: I flag, VNI
    src = (0x06 << 40 | i).to_bytes(6, "big")
    return header + b"\xff" * 6 + src + b"\x08\x00" + bytes(46)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--to", required=True, help="IP:PORT")
    ap.add_argument("--bind", required=True, help="local IP to send from")
    ap.add_argument("--vni", type=int, required=True)
    ap.add_argument("--count", type=int, default=70_000)
    ap.add_argument("--burst", type=int, default=500)
    args = ap.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((args.bind, 0))
    s.connect((host, int(port)))
    sent = 0
    for i in range(args.count):
        s.send(datagram(args.vni, i))
        sent += 1
        if i % args.burst == args.burst - 1:
            time.sleep(0.005)
    s.close()
    print(json.dumps({"sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
