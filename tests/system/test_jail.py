"""The Linux 3.10 jail (tests/support/jail) answers as 3.10 would.

Each check runs the same probe twice, inside the jail and outside it: the
outside run must succeed, or a jail that does nothing would pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.jail import REPO, build_jail, jailed

IS_ROOT = os.geteuid() == 0

# Run in a child python; prints {check: "ok" | errno name}.  Each check is
# (name, callable); a callable raising OSError records the errno's name.
PROBE = r"""
import ctypes, errno, fcntl, json, os, secrets, socket, struct, sys

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

libc = ctypes.CDLL(None, use_errno=True)

def raw_syscall(nr, *args):
    if libc.syscall(nr, *args) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def sockopt(family, kind, level, opt, value=1, get=False):
    def run():
        with socket.socket(family, kind) as s:
            if get:
                s.getsockopt(level, opt)
            else:
                s.setsockopt(level, opt, value)
    return run

def memfd():
    os.close(os.memfd_create("jail-test"))

def pidfd():
    os.close(os.pidfd_open(os.getpid()))

buf = ctypes.create_string_buffer(8)
U, T = socket.SOCK_DGRAM, socket.SOCK_STREAM
A = socket.AF_INET
out = {
    "pipe2": attempt(lambda: [os.close(f) for f in os.pipe2(0)]),       # 2.6.27
    "memfd_create": attempt(memfd),                                     # 3.17
    "pidfd_open": attempt(pidfd),                                       # 5.3
    "getrandom(318)": attempt(lambda: raw_syscall(318, buf, 8, 0)),     # 3.17
    "set UDP_SEGMENT": attempt(sockopt(A, U, socket.SOL_UDP, 103, 1400)),
    "set UDP_GRO": attempt(sockopt(A, U, socket.SOL_UDP, 104)),
    "get UDP_GRO": attempt(sockopt(A, U, socket.SOL_UDP, 104, get=True)),
    "set UDP_CORK": attempt(sockopt(A, U, socket.SOL_UDP, 1)),          # old
    "set SO_INCOMING_CPU": attempt(sockopt(A, U, socket.SOL_SOCKET, 49, 0)),
    "set SO_ZEROCOPY": attempt(sockopt(A, T, socket.SOL_SOCKET, 60)),
    "set SO_REUSEPORT": attempt(sockopt(A, U, socket.SOL_SOCKET, socket.SO_REUSEPORT)),
    "set SO_RCVBUF": attempt(sockopt(A, U, socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)),
    "set NETLINK_EXT_ACK": attempt(sockopt(socket.AF_NETLINK, socket.SOCK_RAW, 270, 11)),
    "set NETLINK_PKTINFO": attempt(sockopt(socket.AF_NETLINK, socket.SOCK_RAW, 270, 3)),
}

TUNSETIFF, TUNGETFEATURES, TUNSETOFFLOAD = 0x400454CA, 0x800454CF, 0x400454D0
TUNSETVNETLE, TUNSETSTEERINGEBPF = 0x400454DC, 0x800454E0
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
CSUM, TSO4, TSO6, USO4, USO6 = 0x01, 0x02, 0x04, 0x20, 0x40

if "--tap" in sys.argv:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        name = ("jl" + secrets.token_hex(6)).encode()
        ifr = struct.pack("16sH22x", name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, ifr)   # not persistent: gone at close
        out["TUNGETFEATURES"] = attempt(lambda: fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4))
        out["TUNSETOFFLOAD CSUM|TSO4|TSO6"] = attempt(
            lambda: fcntl.ioctl(fd, TUNSETOFFLOAD, CSUM | TSO4 | TSO6))
        # 6.2+ takes USO4 only together with USO6.
        out["TUNSETOFFLOAD CSUM|USO4|USO6"] = attempt(
            lambda: fcntl.ioctl(fd, TUNSETOFFLOAD, CSUM | USO4 | USO6))
        out["TUNSETVNETLE"] = attempt(
            lambda: fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 0)))
        # -1 detaches (nothing attached): succeeds on any kernel that has it.
        out["TUNSETSTEERINGEBPF"] = attempt(
            lambda: fcntl.ioctl(fd, TUNSETSTEERINGEBPF, struct.pack("i", -1)))
    finally:
        os.close(fd)
print(json.dumps(out))
"""


def run_probe(*, jail: bool, tap: bool = False) -> dict[str, str]:
    argv = [sys.executable, "-c", PROBE, *(["--tap"] if tap else [])]
    if jail:
        argv = jailed(argv)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, f"probe failed (jail={jail}):\n{res.stderr}"
    result: dict[str, str] = json.loads(res.stdout)
    return result


@pytest.fixture(scope="module")
def outside() -> dict[str, str]:
    return run_probe(jail=False)


@pytest.fixture(scope="module")
def inside() -> dict[str, str]:
    return run_probe(jail=True)


def test_jail_builds_and_lists_its_rules() -> None:
    res = subprocess.run([str(build_jail()), "--log", "--", "true"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    print(res.stderr)
    assert "ENOSYS for syscall numbers >= " in res.stderr
    assert "TUNSETSTEERINGEBPF" in res.stderr


def test_jail_refuses_a_bad_command_line() -> None:
    res = subprocess.run([str(build_jail()), "python3"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 127
    assert "usage" in res.stderr


def test_ordinary_programs_run_in_the_jail() -> None:
    """glibc and python fall back from clone3, getrandom, rseq and friends."""
    script = ("import subprocess, threading, os\n"
              "t = threading.Thread(target=print); t.start(); t.join()\n"
              "print(len(os.urandom(16)), subprocess.run(['true']).returncode)")
    res = subprocess.run(jailed([sys.executable, "-c", script]),
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-2:] == ["16", "0"]
    if shutil.which("ip"):
        res = subprocess.run(jailed(["ip", "link", "show", "lo"]), capture_output=True,
                             text=True, timeout=30, check=False)
        assert res.returncode == 0 and "lo:" in res.stdout, res.stderr
    # pyroute2 sets NETLINK_EXT_ACK and friends, and must cope without them.
    res = subprocess.run(jailed([sys.executable, "-c",
                                 "from pyroute2 import IPRoute\n"
                                 "with IPRoute() as ipr: print(ipr.link_lookup(ifname='lo'))"]),
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "[1]", res.stderr


@pytest.mark.parametrize("call", ["memfd_create", "pidfd_open", "getrandom(318)"])
def test_syscalls_after_310_fail_with_enosys(call: str, inside: dict[str, str],
                                              outside: dict[str, str]) -> None:
    assert outside[call] == "ok"
    assert inside[call] == "ENOSYS"


@pytest.mark.parametrize("call", ["set UDP_SEGMENT", "set UDP_GRO", "get UDP_GRO",
                                  "set SO_INCOMING_CPU", "set SO_ZEROCOPY",
                                  "set NETLINK_EXT_ACK"])
def test_socket_options_after_310_fail_with_enoprotoopt(call: str, inside: dict[str, str],
                                                        outside: dict[str, str]) -> None:
    assert outside[call] == "ok"
    assert inside[call] == "ENOPROTOOPT"


@pytest.mark.parametrize("call", ["pipe2", "set UDP_CORK", "set SO_REUSEPORT", "set SO_RCVBUF",
                                  "set NETLINK_PKTINFO"])
def test_what_310_had_still_works(call: str, inside: dict[str, str]) -> None:
    assert inside[call] == "ok"


@pytest.fixture(scope="module")
def tap_results() -> tuple[dict[str, str], dict[str, str]]:
    if not IS_ROOT or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun for a TAP")
    return run_probe(jail=True, tap=True), run_probe(jail=False, tap=True)


def test_tap_offloads_310_had_are_accepted(
        tap_results: tuple[dict[str, str], dict[str, str]]) -> None:
    inside, outside = tap_results
    for call in ("TUNGETFEATURES", "TUNSETOFFLOAD CSUM|TSO4|TSO6"):
        assert inside[call] == "ok" and outside[call] == "ok", call


@pytest.mark.parametrize("call", ["TUNSETOFFLOAD CSUM|USO4|USO6", "TUNSETVNETLE",
                                  "TUNSETSTEERINGEBPF"])
def test_tap_features_after_310_fail_with_einval(
        call: str, tap_results: tuple[dict[str, str], dict[str, str]]) -> None:
    inside, outside = tap_results
    if outside[call] != "ok":
        pytest.skip(f"this host kernel refuses {call} too ({outside[call]}): "
                    "cannot tell the jail from the kernel")
    assert inside[call] == "EINVAL"


# uvxlan's own start-up probe ---------------------------------------------

OFFLOAD_PROBE = (
    "import dataclasses, json, logging\n"
    "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
    "from uvxlan import offload\n"
    "print(json.dumps(dataclasses.asdict(offload.probe('auto'))))\n"
)


def uvxlan_probe(*, jail: bool) -> tuple[dict[str, bool], list[str]]:
    argv = [sys.executable, "-c", OFFLOAD_PROBE]
    res = subprocess.run(jailed(argv) if jail else argv, cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    features: dict[str, bool] = json.loads(res.stdout)
    return features, res.stderr.splitlines()


def test_uvxlan_probe_falls_back_under_the_jail() -> None:
    out_features, out_log = uvxlan_probe(jail=False)
    in_features, in_log = uvxlan_probe(jail=True)
    print("outside:", out_features, *out_log, sep="\n  ")
    print("jailed: ", in_features, *in_log, sep="\n  ")
    assert out_features["udp_gso"] and out_features["udp_gro"]
    assert not in_features["udp_gso"] and not in_features["udp_gro"]
    # TAP super-frames are 3.10's: the jail must leave them (needs root
    # to open /dev/net/tun at all).
    assert in_features["tap_vnet_hdr"] == out_features["tap_vnet_hdr"]
    if IS_ROOT:
        assert in_features["tap_vnet_hdr"]
    # One line per missing feature, saying what is used instead.
    assert any("UDP_SEGMENT" in line for line in in_log), in_log
    assert any("UDP_GRO" in line for line in in_log), in_log
    assert not any("UDP_" in line for line in out_log), out_log
