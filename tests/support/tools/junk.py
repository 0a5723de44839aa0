"""Send hostile UDP datagrams at a VXLAN port, for tests/system/test_badinput.py.

Run inside a lab host's namespace (``ip netns exec``); it sends plain UDP
from a socket bound to ``--bind`` (an ephemeral port, never the VXLAN one)
to ``--to``.  Two modes:

``send HEX [HEX ...]``
    one datagram per argument, its payload given in hex ("" or "-" is the
    empty datagram), in order.  Prints ``{"sent": N}``.

``blast --count N --seed S --max-len L --time-limit T``
    N datagrams of random length 0..L and random bytes, from a seeded
    generator (same seed, same datagrams), as fast as one socket can send
    them, stopping early after T seconds.  Everything random is made before
    the clock starts.  Prints ``go`` when it starts sending, then
    ``{"sent": N, "errors": E, "seconds": S}``.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time

POOL = 1 << 20        # random bytes datagrams are cut from


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _socket(bind: str, to: tuple[str, int]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((bind, 0))
    if s.getsockname()[1] == to[1]:
        raise SystemExit("junk: refusing to send from the VXLAN port itself")
    s.connect(to)
    return s


def send(s: socket.socket, payloads: list[str]) -> dict[str, int]:
    sent = 0
    for hx in payloads:
        s.send(b"" if hx in ("", "-") else bytes.fromhex(hx))
        sent += 1
    return {"sent": sent}


def plan(count: int, seed: int, max_len: int) -> tuple[memoryview, list[tuple[int, int]]]:
    """The blast's datagrams: pool[a:b] for each (a, b), in sending order.
    Tests call this to know what was sent."""
    rng = random.Random(seed)
    pool = memoryview(rng.randbytes(POOL + max_len))
    cuts = [(off, off + ln) for off, ln in
            ((rng.randrange(POOL), rng.randrange(max_len + 1)) for _ in range(count))]
    return pool, cuts


def blast(s: socket.socket, count: int, seed: int, max_len: int,
          time_limit: float) -> dict[str, float]:
    pool, cuts = plan(count, seed, max_len)
    print("go", flush=True)
    sent = errors = 0
    start = time.monotonic()
    deadline = start + time_limit
    send_ = s.send
    for i, (a, b) in enumerate(cuts):
        try:
            send_(pool[a:b])
            sent += 1
        except OSError:        # ENOBUFS, ECONNREFUSED from an ICMP error: keep going
            errors += 1
        if i & 1023 == 1023 and time.monotonic() > deadline:
            break
    return {"sent": sent, "errors": errors, "seconds": time.monotonic() - start}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--to", required=True, help="IP:PORT to attack")
    ap.add_argument("--bind", required=True, help="local IP to send from")
    sub = ap.add_subparsers(dest="mode", required=True)
    p_send = sub.add_parser("send")
    p_send.add_argument("payloads", nargs="*")
    p_blast = sub.add_parser("blast")
    p_blast.add_argument("--count", type=int, default=200_000)
    p_blast.add_argument("--seed", type=int, default=0)
    p_blast.add_argument("--max-len", type=int, default=1500)
    p_blast.add_argument("--time-limit", type=float, default=10.0)
    args = ap.parse_args(argv)

    to = _addr(args.to)
    with _socket(args.bind, to) as s:
        if args.mode == "send":
            result: dict[str, float] | dict[str, int] = send(s, args.payloads)
        else:
            result = blast(s, args.count, args.seed, args.max_len, args.time_limit)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
