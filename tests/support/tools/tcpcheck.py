"""A checked TCP transfer for the overlay tests; stdlib only.

    tcpcheck.py server ADDR PORT [TIMEOUT]
        Listen on ADDR:PORT, accept one connection, read until EOF and print
        one JSON line: {"sha256": ..., "bytes": N}.
    tcpcheck.py client ADDR PORT NBYTES SEED [TIMEOUT [RATE]]
        Connect (retrying until TIMEOUT while the server is not yet up), send
        NBYTES deterministic pseudo-random bytes made from SEED (at most RATE
        bytes a second, so the transfer spans some event), close the write
        side, wait for the server to close, and print the same JSON line for
        what was sent.

Every socket operation has a timeout; any failure exits non-zero with one
line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import time

CHUNK = 64 * 1024


def server(addr: str, port: int, timeout: float) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port))
        ls.listen(1)
        ls.settimeout(timeout)
        print("listening", file=sys.stderr, flush=True)
        conn, _ = ls.accept()
    digest = hashlib.sha256()
    total = 0
    with conn:
        conn.settimeout(timeout)
        while True:
            data = conn.recv(CHUNK)
            if not data:
                break
            digest.update(data)
            total += len(data)
    print(json.dumps({"sha256": digest.hexdigest(), "bytes": total}), flush=True)
    return 0


def client(addr: str, port: int, nbytes: int, seed: int, timeout: float,
           rate: float = 0.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=timeout)
            break
        except (ConnectionRefusedError, TimeoutError, OSError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    sent = 0
    start = time.monotonic()
    with conn:
        conn.settimeout(timeout)
        while sent < nbytes:
            data = rng.randbytes(min(CHUNK, nbytes - sent))
            conn.sendall(data)
            digest.update(data)
            sent += len(data)
            if rate:
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        conn.shutdown(socket.SHUT_WR)
        # the server closes after it has read everything
        while conn.recv(CHUNK):
            pass
    print(json.dumps({"sha256": digest.hexdigest(), "bytes": sent}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    try:
        if len(argv) in (3, 4) and argv[0] == "server":
            return server(argv[1], int(argv[2]), float(argv[3]) if len(argv) > 3 else 60.0)
        if len(argv) in (5, 6, 7) and argv[0] == "client":
            return client(argv[1], int(argv[2]), int(argv[3]), int(argv[4]),
                          float(argv[5]) if len(argv) > 5 else 60.0,
                          float(argv[6]) if len(argv) > 6 else 0.0)
    except (OSError, ValueError) as exc:
        print(f"tcpcheck {argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
