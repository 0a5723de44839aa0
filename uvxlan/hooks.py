"""Python hooks on a running agent: a function sees the frames of one
network that match (EtherType, MAC, direction) and says what becomes of
each.  The rest of the network's frames, and every other network's, never
leave the C fast path.

A hook is a plain function::

    from uvxlan.hooks import DROP, PASS, Frame, Verdict, rewrite

    def hook(frame: Frame) -> Verdict:
        if frame.ethertype == 0x0806 and frame.data[38:42] == bytes([10, 0, 0, 3]):
            return DROP               # nobody learns who has 10.0.0.3
        return PASS

and is attached from the command line (``uvxlan hook --agent H --network
N [--ethertype 0x0806] [--mac M] module:function``) or from Python
(``attach(hook, agent=..., network=...)``).  It runs in the attaching
process, never in the agent: the agent takes matching frames out of the
fast path (a bounded queue in C, csrc/punt.c), sends each over its control
socket, and the frame waits there for the verdict:

- ``PASS``: it goes on from where it was taken (ARP answering, learning,
  switching, encapsulation), as if never taken; ``None`` is taken as PASS;
- ``DROP``: counted as ``hook_drop`` (``uvxlan stats``);
- ``rewrite(data)``: the new bytes go on instead, checked as a frame
  from there would be;
- and, whatever the verdict, ``frame.inject(data, port=P, to=...)`` sends
  new frames: ``to="network"`` as if the container on port P had sent it,
  ``to="container"`` written to that container.

A frame with no verdict within the hook's ``timeout`` (0.25 s by
default), and those still waiting when the hook goes, get its ``fail``
verdict: ``drop`` by default (a hook may be a policy; what it did not see
must not pass it), or ``pass``.  When the queue is full (a slow hook), a
frame that matches is dropped and counted as ``hook_queue_full``;
frames that match nothing are never slowed.  When the attaching process
ends, its rules go and forwarding is as before.

Frames from a container's port with offloads may be TCP super-frames of
up to 64 KB (the TAP's segmentation offload), their TCP checksum left for
segmentation; frames from the wire are single datagrams.

This module imports nothing that loads C: the client needs only a socket.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from uvxlan.control import agent_error, socket_for
from uvxlan.errors import ConfigError, UvxlanError

# The stream after the JSON lines that start a hook session: messages of
# one header and `length` bytes of frame.  Network byte order.
#   kind   code                      seq        port        remote       length
HEADER = struct.Struct("!BBxxIiII")
MSG_FRAME = 1      # agent -> client: code = direction, seq, port, remote VTEP
MSG_VERDICT = 2    # client -> agent: code = VERDICT_*, seq; rewrite: bytes
MSG_INJECT = 3     # client -> agent: code = INJECT_*, port, bytes
VERDICT_PASS, VERDICT_DROP, VERDICT_REWRITE = 0, 1, 2
INJECT_NETWORK, INJECT_CONTAINER = 1, 2       # from the port / to its container
FROM_PORT, FROM_WIRE = 1, 2                   # a frame's direction; bits in a request
DIRECTIONS = {"both": FROM_PORT | FROM_WIRE, "from-port": FROM_PORT,
              "from-wire": FROM_WIRE}
FRAME_MAX = 65535
TIMEOUT_DEFAULT = 0.25     # seconds a frame waits for its verdict
TIMEOUT_MAX = 10.0
FAIL_MODES = ("drop", "pass")


@dataclass(frozen=True)
class Verdict:
    """What becomes of a frame: PASS, DROP, or rewrite(data)."""

    action: Literal["pass", "drop", "rewrite"]
    data: bytes | None = None


PASS = Verdict("pass")
DROP = Verdict("drop")


def rewrite(data: bytes) -> Verdict:
    """The frame goes on as these bytes instead (an Ethernet frame: 14 up
    to 65535 bytes)."""
    if not 14 <= len(data) <= FRAME_MAX:
        raise ValueError(f"a rewritten frame of {len(data)} bytes: expected 14..{FRAME_MAX}")
    return Verdict("rewrite", bytes(data))


@dataclass
class Frame:
    """One frame that matched the hook's rule."""

    data: bytes
    network: str
    direction: Literal["from-port", "from-wire"]
    port: int | None          # the port it came from (from-port), else None
    remote: str | None        # the VTEP that sent it (from-wire), else None
    _injected: list[tuple[int, int, bytes]] = field(default_factory=list, repr=False)

    @property
    def dst(self) -> str:
        return self.data[0:6].hex(":")

    @property
    def src(self) -> str:
        return self.data[6:12].hex(":")

    @property
    def ethertype(self) -> int:
        return int.from_bytes(self.data[12:14], "big")

    def inject(self, data: bytes, *, port: int | None = None,
               to: Literal["network", "container"] = "network") -> None:
        """Send a new frame, after this one's verdict: into the network as
        if the container on port had sent it, or to that container.  port:
        this frame's own, if it came from one."""
        port = self.port if port is None else port
        if port is None:
            raise ValueError("inject: name a port (a frame from the wire has none)")
        if to not in ("network", "container"):
            raise ValueError(f"inject to {to!r}: expected 'network' or 'container'")
        if not 14 <= len(data) <= FRAME_MAX:
            raise ValueError(f"inject: a frame of {len(data)} bytes: expected 14..{FRAME_MAX}")
        self._injected.append((INJECT_NETWORK if to == "network" else INJECT_CONTAINER,
                               port, bytes(data)))


Hook = Callable[[Frame], "Verdict | None"]


@dataclass
class HookStats:
    """What a hook did, counted by its client."""

    frames: int = 0
    passed: int = 0
    dropped: int = 0
    rewritten: int = 0
    injected: int = 0
    errors: int = 0             # the function raised: the fail verdict went


# Arguments ---------------------------------------------------------------


def parse_ethertype(value: object) -> int:
    """0x0806, 2054 or "0x0806"; 0 is any."""
    try:
        number = int(value, 0) if isinstance(value, str) else value
    except ValueError:
        number = None
    if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= 0xFFFF:
        raise ConfigError(f"ethertype {value!r}: expected a number 0..0xffff such as 0x0806")
    return number


def parse_mac(value: object) -> str:
    """Any MAC (broadcast and multicast too): the rule matches it as the
    source or the destination."""
    text = value.lower().replace("-", ":") if isinstance(value, str) else ""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        raise ConfigError(f"mac {value!r}: expected six hex bytes such as 02:42:0a:00:00:02")
    return text


def hook_request(network: str, *, ethertype: int = 0, mac: str | None = None,
                 direction: str = "both", timeout: float = TIMEOUT_DEFAULT,
                 fail: str = "drop") -> dict[str, Any]:
    """The request line that starts a session, checked as the agent will."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if fail not in FAIL_MODES:
        raise ConfigError(f"fail {fail!r}: expected drop or pass")
    if not isinstance(timeout, (int, float)) or not 0.001 <= timeout <= TIMEOUT_MAX:
        raise ConfigError(f"timeout {timeout!r}: expected 0.001..{TIMEOUT_MAX:g} seconds")
    return {"cmd": "hook", "network": network, "ethertype": parse_ethertype(ethertype),
            "mac": None if mac is None else parse_mac(mac), "direction": direction,
            "timeout": float(timeout), "fail": fail}


def load_hook(spec: str) -> Hook:
    """module:function (a module on sys.path or a file path.py:function)."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"hook {spec!r}: expected module:function")
    try:
        if module_name.endswith(".py"):
            spec_ = importlib.util.spec_from_file_location("uvxlan_user_hook", module_name)
            if spec_ is None or spec_.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as exc:
        raise ConfigError(f"hook {spec!r}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"hook {spec!r}: {module_name} has no function {func_name!r}")
    return func  # type: ignore[no-any-return]


# The client --------------------------------------------------------------


class Session:
    """A hook attached to an agent: frames in, verdicts out, on one socket.
    Frames are read as they come, in whatever batches the socket gives,
    and each batch's answers go back in one send."""

    RECV = 1 << 20

    def __init__(self, agent: str | None, request: dict[str, Any]) -> None:
        path = socket_for(agent)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buf = bytearray()
        try:
            self.sock.settimeout(5.0)
            self.sock.connect(path)
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            while b"\n" not in self._buf and self._fill():
                pass
        except OSError as exc:
            self.sock.close()
            raise agent_error(path, exc, 5.0) from None
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        try:
            hello = json.loads(line)
        except ValueError:
            hello = None
        if not isinstance(hello, dict):
            self.sock.close()
            raise UvxlanError(f"agent at {path}: not an answer: {line[:80]!r}")
        if "error" in hello:
            self.sock.close()
            raise UvxlanError(f"agent: {hello['error']}")
        self.hello = hello
        self.network = str(hello["network"])
        self.sock.settimeout(None)

    def _fill(self) -> bool:
        chunk = self.sock.recv(self.RECV)
        self._buf += chunk
        return bool(chunk)

    def batches(self) -> Iterator[list[tuple[int, Frame]]]:
        """The frames (seq, Frame) that have come, a batch at a time; ends
        when the agent closes."""
        while True:
            batch, at, buf = [], 0, self._buf
            while len(buf) - at >= HEADER.size:
                kind, code, seq, port, remote, length = HEADER.unpack_from(buf, at)
                if kind != MSG_FRAME:
                    return
                if len(buf) - at - HEADER.size < length:
                    break
                data = bytes(buf[at + HEADER.size:at + HEADER.size + length])
                at += HEADER.size + length
                from_port = code == FROM_PORT
                batch.append((seq, Frame(
                    data=data, network=self.network,
                    direction="from-port" if from_port else "from-wire",
                    port=port if from_port else None,
                    remote=None if from_port else socket.inet_ntoa(remote.to_bytes(4, "big")))))
            del buf[:at]
            if batch:
                yield batch
            try:
                if not self._fill():
                    return
            except OSError:
                return

    def answer(self, answers: list[tuple[int, Verdict, list[tuple[int, int, bytes]]]]) -> None:
        """(seq, verdict, injected) for each frame of a batch, in one send."""
        parts: list[bytes] = []
        for seq, verdict, injected in answers:
            code = {"pass": VERDICT_PASS, "drop": VERDICT_DROP,
                    "rewrite": VERDICT_REWRITE}[verdict.action]
            data = verdict.data or b""
            parts += [HEADER.pack(MSG_VERDICT, code, seq, 0, 0, len(data)), data]
            for to, port, frame in injected:
                parts += [HEADER.pack(MSG_INJECT, to, 0, port, 0, len(frame)), frame]
        self.sock.sendall(b"".join(parts))

    def close(self) -> None:
        self.sock.close()


def attach(hook: Hook, *, agent: str | None, network: str, ethertype: int = 0,
           mac: str | None = None, direction: str = "both",
           timeout: float = TIMEOUT_DEFAULT, fail: str = "drop",
           count: int | None = None, ready: Callable[[dict[str, Any]], None] | None = None,
           stats: HookStats | None = None) -> HookStats:
    """Run hook on the matching frames of network at agent (a name or a
    control socket's path), until the agent goes, count frames were seen,
    or KeyboardInterrupt (raised after the session is closed).  ready(hello)
    is called once the rules are in place."""
    request = hook_request(network, ethertype=ethertype, mac=mac, direction=direction,
                           timeout=timeout, fail=fail)
    session = Session(agent, request)
    stats = stats if stats is not None else HookStats()
    fail_verdict = DROP if fail == "drop" else PASS
    try:
        if ready is not None:
            ready(session.hello)
        for batch in session.batches():
            answers = []
            for seq, frame in batch:
                if count is not None and stats.frames >= count:
                    break
                stats.frames += 1
                try:
                    verdict = hook(frame) or PASS
                    if not isinstance(verdict, Verdict):
                        raise TypeError(f"returned {verdict!r}, not a Verdict")
                except Exception:  # noqa: BLE001 - the user's code; told, and the frame fails
                    stats.errors += 1
                    if stats.errors == 1:
                        print("uvxlan hook: the hook raised (its fail verdict, "
                              f"{fail}, goes for each frame it fails):", file=sys.stderr)
                        traceback.print_exc(file=sys.stderr)
                    verdict = fail_verdict
                stats.passed += verdict.action == "pass"
                stats.dropped += verdict.action == "drop"
                stats.rewritten += verdict.action == "rewrite"
                stats.injected += len(frame._injected)
                answers.append((seq, verdict, frame._injected))
            try:
                session.answer(answers)
            except OSError:
                break                  # the agent went
            if count is not None and stats.frames >= count:
                break
    finally:
        session.close()
    return stats


def wait_attached(agent: str, network: str, timeout: float = 5.0) -> None:
    """Until a hook is attached to network at agent (for scripts and tests
    that start a hook in another process)."""
    from uvxlan.control import query_agent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hooks = query_agent(socket_for(agent), "hooks").get("hooks", [])
        if any(h.get("network") == network for h in hooks):
            return
        time.sleep(0.02)
    raise UvxlanError(f"no hook attached to {network} at {agent} within {timeout:g} s")
