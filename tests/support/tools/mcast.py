"""IPv4 multicast inside a container, for tests/system/test_overlay_users.py.

Run inside a container's namespace (``ip netns exec``).

``recv GROUP PORT SECONDS``
    join GROUP on eth0 (IGMP), listen on UDP PORT, and watch eth0 at
    layer 2 (AF_PACKET) for frames to the group's MAC (01:00:5e + its low
    23 bits, RFC 1112 section 6.4) that carry our UDP port, so a frame
    that reaches the interface counts even where the IP layer would drop
    it (a source outside the container's subnet, rp_filter).  Prints
    ``ready`` once joined, then after SECONDS
    ``{"udp": [payloads], "frames": N}``.

``send GROUP PORT COUNT TEXT``
    COUNT datagrams "TEXT-i" to GROUP:PORT out of eth0 (TTL 1), 0.1 s apart.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import select
import socket
import struct
import sys
import time

SIOCGIFADDR = 0x8915
ETH_P_ALL = 0x0003


def eth0_address(s: socket.socket) -> str:
    ifreq = struct.pack("256s", b"eth0")
    return socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, ifreq)[20:24])


def group_mac(group: str) -> bytes:
    low = int(ipaddress.IPv4Address(group)) & 0x7FFFFF
    return bytes([0x01, 0x00, 0x5E]) + low.to_bytes(3, "big")


def recv(group: str, port: int, seconds: float) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((group, port))
    mreq = socket.inet_aton(group) + socket.inet_aton(eth0_address(udp))
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.bind(("eth0", 0))
    mac, got, frames = group_mac(group), [], 0
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([udp, raw], [], [], left)
        if udp in readable:
            got.append(udp.recv(2048).decode(errors="replace"))
        if raw in readable:
            frame, addr = raw.recvfrom(2048)
            # Frames we receive only (not our own sends): IPv4, UDP, our port.
            if (addr[2] != socket.PACKET_OUTGOING and frame[:6] == mac
                    and frame[12:14] == b"\x08\x00" and frame[23] == 17):
                ihl = (frame[14] & 0x0F) * 4
                if struct.unpack_from("!H", frame, 14 + ihl + 2)[0] == port:
                    frames += 1
    print(json.dumps({"udp": got, "frames": frames}), flush=True)


def send(group: str, port: int, count: int, text: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(eth0_address(s)))
    for i in range(count):
        s.sendto(f"{text}-{i}".encode(), (group, port))
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    cmd, group, port = argv[0], argv[1], int(argv[2])
    if cmd == "recv":
        recv(group, port, float(argv[3]))
    elif cmd == "send":
        send(group, port, int(argv[3]), argv[4])
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
