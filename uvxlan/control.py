"""A client for an agent's control socket: one request, one JSON answer.

A running agent (``uvxlan.daemon``) listens on a Unix socket,
``CONTROL_DIR/HOST.sock`` by default.  A request is one line of JSON,
``{"cmd": "stats"}`` (or ``"fdb"``, ``"status"``, ``"refused"``, ``"control"``,
``"faults"``, ``"hooks"``, which only read; ``"leave"``, which stops the agent
and removes its endpoints, and ``"fault"``, which sets or clears an injected
fault: root's alone; ``"policy"`` shows a network's group policy, and changes
it live with ``"op"``: root's alone too, see uvxlan.gbp.answer); the answer is
one line of JSON, ``{"error": "..."}`` when the agent refuses.  A ``"hook"``
request (root's) turns the connection into a hook session (``uvxlan.hooks``),
a ``"capture"`` request (root's) into a stream of frames (``uvxlan.capture``).

This module imports nothing that loads the C fast path: ``uvxlan stats``
and ``uvxlan fdb`` only read a socket.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import socket
import stat
from typing import Any

from uvxlan.errors import UvxlanError

# Where agents put their control sockets (HOST.sock): the default of
# [host] control_dir, and where the commands look.
CONTROL_DIR = "/run/uvxlan"


def socket_for(name: str | None) -> str:
    """The control socket of agent ``name`` (or a path); without a name,
    the one agent running on this machine."""
    if name:
        return name if "/" in name else f"{CONTROL_DIR}/{name}.sock"
    found = sorted(glob.glob(f"{CONTROL_DIR}/*.sock"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UvxlanError(f"no agent runs here (no control socket in {CONTROL_DIR});"
                          " name one with --agent")
    names = ", ".join(os.path.basename(p)[:-5] for p in found)
    raise UvxlanError(f"several agents run here ({names}): name one with --agent")


def who_may_connect(control_socket: str) -> str:
    """Advice for a user the socket refused: root, or the group the agent
    opened it to (``control_group``)."""
    try:
        st = os.stat(control_socket)
    except OSError:       # not even the directory is open to this user
        return "run as root"
    if st.st_gid == 0 or st.st_mode & (stat.S_IRGRP | stat.S_IWGRP) == 0:
        return "run as root"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"run as root or as a member of group {group}"


# Seconds to wait for an answer.  A whole forwarding table (65,536 learned
# entries and the static ones) takes the agent seconds of Python to turn
# into JSON on a busy machine, at the low priority its loop runs at.
QUERY_TIMEOUT = 5.0
QUERY_TIMEOUTS = {"fdb": 30.0}


def agent_error(control_socket: str, exc: OSError, timeout: float | None = None
                ) -> UvxlanError:
    """The one line for a failure to reach or hear the agent at
    control_socket (for every client of the control socket)."""
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return UvxlanError(f"no agent answers at {control_socket}")
    if isinstance(exc, PermissionError):
        return UvxlanError(f"permission denied: {control_socket}; "
                           f"{who_may_connect(control_socket)}")
    if isinstance(exc, TimeoutError) and timeout is not None:
        return UvxlanError(f"agent at {control_socket}: no answer within {timeout:g} s")
    return UvxlanError(f"agent at {control_socket}: {exc.strerror or exc}")


def query_agent(control_socket: str, cmd: str, timeout: float | None = None,
                args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask a running agent over its control socket (args: the request's
    other fields).  Every failure to get an answer is a UvxlanError of one
    line."""
    if timeout is None:
        timeout = QUERY_TIMEOUTS.get(cmd, QUERY_TIMEOUT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(control_socket)
        except OSError as exc:
            raise agent_error(control_socket, exc, timeout) from None
        try:
            s.sendall(json.dumps({**(args or {}), "cmd": cmd}).encode() + b"\n")
            chunks: list[bytes] = []
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        except OSError as exc:   # a timeout, or reset or broken pipe: the agent went away
            raise agent_error(control_socket, exc, timeout) from None
    if data and not data.endswith(b"\n"):
        # The agent ends a connection mid-reply when the reader is slower
        # than its limit (daemon.SEND_S).
        raise UvxlanError(f"agent at {control_socket}: the answer was cut off after "
                          f"{len(data)} bytes (too slow to read it)")
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise UvxlanError(f"agent at {control_socket}: not an answer: {data[:80]!r}")
    if "error" in reply:
        raise UvxlanError(f"agent: {reply['error']}")
    return reply
