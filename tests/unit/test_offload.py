"""Segmentation and coalescing: the C fast path beside the pure-Python
reference (uvxlan/reference/offload.py), byte for byte, on super-frames scapy
builds; and every segment checked by scapy's own checksum code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.support import native_testing as native
from uvxlan.errors import NativeError
from uvxlan.reference import offload as offload_ref

ETH = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")


def superframe(v6: bool, payload: bytes, flags: str = "PA", options: bool = True,
               seq: int = 1000, ip_id: int = 7, sport: int = 40000, ack: int = 99) -> bytes:
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (123, 456))] if options else []
    tcp = TCP(sport=sport, dport=5201, seq=seq, ack=ack, flags=flags, window=512,
              options=opts)
    ip = (IPv6(src="fd00::1", dst="fd00::2") if v6
          else IP(src="10.0.0.1", dst="10.0.0.2", id=ip_id, flags="DF"))
    return bytes(ETH / ip / tcp / payload)


def scapy_valid(seg: bytes, v6: bool) -> bool:
    """Do scapy's checksums agree with the ones in seg?"""
    pkt = Ether(seg)
    l3 = pkt[IPv6] if v6 else pkt[IP]
    tcp = pkt[TCP]
    fresh = Ether(seg)
    if not v6:
        del fresh[IP].chksum
    del fresh[TCP].chksum
    fresh = Ether(bytes(fresh))
    ok_tcp = fresh[TCP].chksum == tcp.chksum
    ok_ip = v6 or fresh[IP].chksum == l3.chksum
    return bool(ok_tcp and ok_ip)


@settings(max_examples=60, deadline=None)
@given(v6=st.booleans(), size=st.integers(1, 64000), mss=st.integers(64, 1460),
       flags=st.sampled_from(["A", "PA", "FPA", "CA", "CPA"]), options=st.booleans(),
       seq=st.integers(0, 2**32 - 1), ip_id=st.integers(0, 65535))
def test_segmentation_c_matches_python_and_scapy(v6: bool, size: int, mss: int, flags: str,
                                                 options: bool, seq: int, ip_id: int) -> None:
    payload = bytes((i * 7 + size) & 0xFF for i in range(size))
    frame = superframe(v6, payload, flags, options, seq, ip_id)
    c = native.tso_frames(frame, mss, v6=v6)
    py = offload_ref.tso_segment(frame, mss)
    assert c == py
    assert len(c) == -(-size // mss)
    assert b"".join(Ether(s)[TCP].payload.original for s in c) == payload
    for i, s in enumerate(c):
        assert scapy_valid(s, v6), f"segment {i}"
        t = Ether(s)[TCP]
        assert t.seq == (seq + i * mss) & 0xFFFFFFFF
        last = i == len(c) - 1
        assert bool(t.flags & 0x01) == ("F" in flags and last)       # FIN on the last only
        assert bool(t.flags & 0x08) == ("P" in flags and last)       # PSH on the last only
        assert bool(t.flags & 0x80) == ("C" in flags and i == 0)     # CWR on the first only
        if not v6:
            assert Ether(s)[IP].id == (ip_id + i) & 0xFFFF


@settings(max_examples=40, deadline=None)
@given(v6=st.booleans(), size=st.integers(1, 60000), mss=st.integers(536, 1448),
       psh=st.booleans(), options=st.booleans())
def test_coalescing_c_matches_python_and_restores_the_stream(
        v6: bool, size: int, mss: int, psh: bool, options: bool) -> None:
    payload = bytes((i * 13) & 0xFF for i in range(size))
    frame = superframe(v6, payload, "PA" if psh else "A", options)
    segs = offload_ref.tso_segment(frame, mss)[:64]       # what one flow slot holds
    c = native.gro_join(segs)
    py = offload_ref.gro_join(segs)
    assert c == py
    joined = Ether(c.frame)
    assert joined[TCP].payload.original == payload[:mss * 64]
    assert joined[TCP].seq == 1000
    if len(segs) > 1:
        assert c.flags == offload_ref.F_NEEDS_CSUM and c.gso_size == mss


def test_coalescing_refuses_what_it_must_not_join() -> None:
    frame = superframe(False, bytes(4000), "A")
    segs = offload_ref.tso_segment(frame, 1000)
    cases = {
        "out of order": [segs[0], segs[2]],
        "bad checksum": [segs[0], segs[1][:-1] + bytes([segs[1][-1] ^ 1])],
        "short one not last": [segs[0][:-10], segs[1]],
        "another flow": [segs[0], superframe(False, bytes(1000), "A", seq=2000, sport=40001)],
        "another ACK": [segs[0], superframe(False, bytes(1000), "A", seq=2000, ack=100)],
        "SYN": [superframe(False, bytes(100), "SA")],
    }
    for why, parts in cases.items():
        with pytest.raises(ValueError):
            offload_ref.gro_join(parts)
        with pytest.raises(NativeError):
            native.gro_join(parts)
        assert why


def test_segmentation_refuses_what_is_not_a_tcp_superframe() -> None:
    udp = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / (b"x" * 100))
    for bad in (udp, udp[:20], b""):
        with pytest.raises(ValueError):
            offload_ref.tso_segment(bad, 1000)
        with pytest.raises(NativeError):
            native.tso_frames(bad, 1000)


def test_socket_buffers_pass_the_sysctl_limit_for_root_else_stop_at_it() -> None:
    """A stock kernel's net.core.rmem_max (212992) holds a few hundred
    datagrams: the agent, root, asks past it; anyone else gets the limit
    and no error."""
    import os
    import socket
    import subprocess
    import sys

    from uvxlan.offload import set_socket_buffers

    with open("/proc/sys/net/core/rmem_max") as f:
        limit = int(f.read())
    want = 2 * limit
    if os.geteuid() == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            set_socket_buffers(s, want)
            # The kernel doubles what it grants (its bookkeeping overhead).
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * want
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * want
    probe = ("import socket; from uvxlan.offload import set_socket_buffers; "
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"set_socket_buffers(s, {want}); "
             "print(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))")
    # root without CAP_NET_ADMIN (gone from the bounding set, so from exec
    # on): the *BUFFORCE options are refused as for any user.
    drop = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"
            ] if os.geteuid() == 0 else []
    done = subprocess.run([*drop, sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=30, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 2 * limit
