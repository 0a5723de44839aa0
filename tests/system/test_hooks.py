"""Python hooks on running agents in a lab overlay (issue 14, part 4):
`uvxlan hook` attaches a function from another process; matching frames
come to it, the rest never leave C.  The examples in docs/examples run as
a user would run them."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OverlayFactory, ping, root
from uvxlan.hooks import wait_attached
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import Overlay, Placement

pytestmark = root

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
NETS = {"net1": 100, "net2": 200}
PLACE = [
    Placement("c1", "h1", "net1", "10.0.0.1/24"),
    Placement("c2", "h2", "net1", "10.0.0.2/24"),
    Placement("c3", "h2", "net1", "10.0.0.3/24"),
    Placement("d1", "h1", "net2", "10.0.1.1/24"),
    Placement("d2", "h2", "net2", "10.0.1.2/24"),
]


class Hooks:
    """`uvxlan hook` processes started in h1's namespace, ended by the test
    (or, on failure, here and by the lab)."""

    def __init__(self, lab: Lab, ov: Overlay) -> None:
        self.lab, self.ov = lab, ov
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, function: str, network: str = "net1", *args: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        sock = self.ov.control_socket("h1")
        argv = [sys.executable, "-m", "uvxlan", "hook", "--agent", sock,
                "--network", network, *args, function]
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        proc = self.lab.spawn(self.lab.host("h1").netns, argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.procs.append(proc)
        try:
            wait_attached(sock, network, timeout=10)
        except Exception:
            proc.kill()
            raise AssertionError(f"hook did not attach: {proc.communicate()}") from None
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        """Ctrl-C: it detaches and prints its summary."""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        return out, err

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(params=[True, False], ids=["threads", "loop"])
def hooked(request: pytest.FixtureRequest, lab: Lab,
           overlay: OverlayFactory) -> Iterator[tuple[Lab, Overlay, Hooks]]:
    """The overlay, its datapath on its two threads or on the agent's loop."""
    ov = overlay(NETS, PLACE, host_options={"threads": request.param})
    h = Hooks(lab, ov)
    try:
        yield lab, ov, h
    finally:
        h.close()


def ns(lab: Lab, container: str) -> str:
    return lab.container_netns(container)


def hook_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "userhook.py"
    path.write_text("from uvxlan.hooks import DROP, PASS, Frame, Verdict, rewrite\n"
                    + textwrap.dedent(body))
    return f"{path}:hook"


def drops(ov: Overlay, reason: str) -> int:
    return int(ov.query("h1", "stats")["drops"].get(reason, 0))


def test_arp_policy_example_makes_one_address_unreachable(
        hooked: tuple[Lab, Overlay, Hooks]) -> None:
    lab, ov, h = hooked
    proc = h.start(f"{EXAMPLES / 'arp_policy.py'}:hook", "net1", "--ethertype", "0x0806",
                   env={"ARP_DENY": "10.0.0.3"})
    assert ping(lab, ns(lab, "c1"), "10.0.0.3", count=3) == 0
    assert ping(lab, ns(lab, "c1"), "10.0.0.2", count=3) == 3
    assert drops(ov, "hook_drop") >= 1
    [status] = ov.query("h1", "hooks")["hooks"]
    assert status["network"] == "net1" and status["ethertype"] == 0x0806
    assert status["dropped"] >= 1 and status["passed"] >= 1

    # The client gone (killed: no goodbye), its rule goes: forwarding as before.
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 10
    while ov.query("h1", "hooks")["hooks"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ov.query("h1", "hooks")["hooks"] == []
    assert ping(lab, ns(lab, "c1"), "10.0.0.3", count=3) == 3


def test_a_hook_rewrites_frames_from_the_wire(hooked: tuple[Lab, Overlay, Hooks],
                                              tmp_path: Path) -> None:
    lab, _, h = hooked
    # UDP to port 7777: "hello" becomes "HELLO"; the UDP checksum is
    # zeroed ("none", valid over IPv4) rather than computed again.
    proc = h.start(hook_file(tmp_path, """
        def hook(frame: Frame) -> Verdict:
            d = bytearray(frame.data)
            ihl = (d[14] & 15) * 4
            udp = 14 + ihl
            if d[23] != 17 or d[udp + 2:udp + 4] != (7777).to_bytes(2, "big"):
                return PASS
            d[udp + 6:udp + 8] = b"\\0\\0"
            d[udp + 8:] = bytes(d[udp + 8:]).upper()
            return rewrite(bytes(d))
        """), "net1", "--ethertype", "0x0800", "--direction", "from-wire")
    server = lab.spawn(ns(lab, "c1"), [sys.executable, "-c", textwrap.dedent("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.0.0.1", 7777)); s.settimeout(20)
        print(s.recv(100).decode(), flush=True)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        for _ in range(3):
            lab.run(ns(lab, "c2"), [sys.executable, "-c",
                                    "import socket; socket.socket(socket.AF_INET, "
                                    "socket.SOCK_DGRAM).sendto(b'hello', ('10.0.0.1', 7777))"],
                    check=True)
            if server.poll() is not None:
                break
            time.sleep(0.3)
        out, _ = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert out.strip() == "HELLO"
    summary, _ = h.stop(proc)
    counts = dict(part.split() for part in summary.split(": ", 1)[1].split(", "))
    assert int(counts["rewritten"]) >= 1


def test_a_hook_on_net1_never_sees_net2(hooked: tuple[Lab, Overlay, Hooks],
                                        tmp_path: Path) -> None:
    lab, ov, h = hooked
    proc = h.start(hook_file(tmp_path, """
        def hook(frame: Frame) -> Verdict:
            print(frame.network, frame.direction, frame.data[26:34].hex(), flush=True)
            return PASS
        """), "net1", "--ethertype", "0x0800")
    assert ping(lab, ns(lab, "d1"), "10.0.1.2", count=5) == 5
    assert ov.query("h1", "hooks")["hooks"][0]["frames"] == 0
    assert ping(lab, ns(lab, "c1"), "10.0.0.2", count=3) == 3
    out, _ = h.stop(proc)
    lines = out.splitlines()
    seen = {line.split()[1] for line in lines if line.startswith("net1 ")}
    assert seen == {"from-port", "from-wire"}
    # Only net1's addresses (10.0.0.x = 0a0000xx), never net2's.
    assert all(line.split()[2].startswith("0a0000") for line in lines
               if line.startswith("net1 "))
    assert not any("0a0001" in line for line in lines)


def test_a_slow_hook_fills_its_queue_and_leaves_other_frames_alone(
        hooked: tuple[Lab, Overlay, Hooks], tmp_path: Path) -> None:
    lab, ov, h = hooked
    # Frames of a local experimental EtherType (IEEE 802 88b5) go to a hook
    # that takes a second over each: the queue fills, the rest is dropped
    # and counted, and IPv4 (no rule) goes on as before.
    proc = h.start(hook_file(tmp_path, """
        import time
        def hook(frame: Frame) -> Verdict:
            time.sleep(1)
            return PASS
        """), "net1", "--ethertype", "0x88b5", "--timeout", "0.5")
    flood = lab.spawn(ns(lab, "c1"), [sys.executable, "-c", textwrap.dedent("""
        import socket, time
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("eth0", 0))
        me = s.getsockname()[4]
        frame = b"\\xff" * 6 + me + b"\\x88\\xb5" + b"x" * 46
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for _ in range(100):
                try:
                    s.send(frame)
                except BlockingIOError:
                    pass
            time.sleep(0.005)
        """)])
    try:
        time.sleep(0.5)
        assert ping(lab, ns(lab, "c1"), "10.0.0.2", count=10, interval=0.2) == 10
    finally:
        flood.wait(20)
    assert drops(ov, "hook_queue_full") > 0
    assert drops(ov, "hook_drop") > 0          # timed out: the fail verdict, drop
    h.stop(proc)


def test_flow_counter_example_counts_a_ping(hooked: tuple[Lab, Overlay, Hooks]) -> None:
    lab, _, h = hooked
    proc = h.start(f"{EXAMPLES / 'flow_counter.py'}:hook", "net1", "--ethertype", "0x0800")
    assert ping(lab, ns(lab, "c1"), "10.0.0.2", count=4) == 4
    out, _ = h.stop(proc)
    rows = [line.split() for line in out.splitlines()]
    # Requests from c1 (from its port) and replies from c2 (from the wire).
    request = next(r for r in rows if r[:3] == ["10.0.0.1:0", "10.0.0.2:0", "icmp"])
    reply = next(r for r in rows if r[:3] == ["10.0.0.2:0", "10.0.0.1:0", "icmp"])
    assert int(request[3]) == 4 and int(reply[3]) == 4
    assert int(request[4]) == 4 * 98


def test_a_hook_answers_arp_itself_by_injecting(hooked: tuple[Lab, Overlay, Hooks],
                                                tmp_path: Path) -> None:
    lab, ov, h = hooked
    # A responder in Python: who-has 10.0.0.99 is answered with a made-up
    # MAC, written to the asking container, and goes nowhere else.
    proc = h.start(hook_file(tmp_path, """
        FAKE = bytes.fromhex("020000000099")
        def hook(frame: Frame) -> Verdict:
            d = frame.data
            if d[20:22] != b"\\0\\1" or d[38:42] != bytes([10, 0, 0, 99]):
                return PASS
            asker_mac, asker_ip = d[22:28], d[28:32]
            reply = (asker_mac + FAKE + b"\\x08\\x06" + bytes.fromhex("0001080006040002")
                     + FAKE + bytes([10, 0, 0, 99]) + asker_mac + asker_ip)
            frame.inject(reply, to="container")
            return DROP
        """), "net1", "--ethertype", "0x0806", "--direction", "from-port")
    lab.run(ns(lab, "c1"), ["ping", "-c", "1", "-W", "1", "10.0.0.99"])
    neigh = lab.run(ns(lab, "c1"), ["ip", "neigh", "show", "10.0.0.99"]).stdout
    assert "02:00:00:00:00:99" in neigh
    [status] = ov.query("h1", "hooks")["hooks"]
    assert status["injected"] >= 1 and status["dropped"] >= 1
    summary, _ = h.stop(proc)
    assert "injected" in summary
