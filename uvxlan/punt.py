"""Thin typed wrapper over the fast path's punt queue (csrc/punt.c).

It keeps the C names (``uvx_hook_*``), converts arguments and turns
negative return codes into ``NativeError``.  Only the agent's event loop
calls it, from one thread: each ring it reads or writes has that thread at
one end.  The friendly layer above it is ``uvxlan.hookserver`` (the agent's
side of a hook) and ``uvxlan.hooks`` (the researcher's).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from uvxlan import native
from uvxlan.errors import NativeError
from uvxlan.native import ffi, lib
from uvxlan.proto import mac_to_bytes

FROM_PORT = int(lib.UVX_HOOK_FROM_PORT)
FROM_WIRE = int(lib.UVX_HOOK_FROM_WIRE)
TO_PORT = int(lib.UVX_HOOK_TO_PORT)
PASS = int(lib.UVX_HOOK_PASS)
DROP = int(lib.UVX_HOOK_DROP)
SLOTS = int(lib.UVX_HOOK_SLOTS)     # frames waiting for a verdict, per worker
RULES = int(lib.UVX_HOOK_RULES)


@dataclass(frozen=True)
class Punted:
    """A frame a rule took out of the fast path, waiting for its verdict."""

    token: int          # give it back to verdict(), once
    hook: int
    vni: int
    port: int           # the port it came from; -1 from the wire
    remote: str | None  # from the wire: the VTEP that sent it
    direction: int      # FROM_PORT or FROM_WIRE
    data: bytes


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise NativeError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


class Punt:
    """One datapath's hook rules and punt queue."""

    def __init__(self, dp: native.Datapath) -> None:
        self._dp = dp._dp          # the cdata: this module is the C area's wrapper
        self._out = ffi.new("struct uvx_punt[]", SLOTS)

    def add(self, hook: int, vni: int, *, ethertype: int = 0, mac: str | None = None,
            directions: int = FROM_PORT | FROM_WIRE) -> None:
        """A rule: frames of vni (of this EtherType, 0 any; to or from this
        MAC, None any; in these directions) go to hook."""
        cmac = ffi.NULL if mac is None else ffi.new("uint8_t[6]", mac_to_bytes(mac))
        _check(lib.uvx_hook_add(self._dp, hook, vni, ethertype, cmac, directions),
               f"adding a rule of hook {hook} for VNI {vni}")

    def delete(self, hook: int) -> int:
        """Remove hook's rules; how many there were."""
        return _check(lib.uvx_hook_del(self._dp, hook), f"removing hook {hook}")

    def fd(self) -> int:
        """The eventfd that is readable when frames wait (take() them)."""
        return _check(lib.uvx_hook_fd(self._dp), "the hook eventfd")

    def take(self) -> list[Punted]:
        """Every frame waiting, oldest first per worker."""
        got: list[Punted] = []
        while True:
            n = lib.uvx_hook_take(self._dp, self._out, SLOTS)
            for i in range(n):
                p = self._out[i]
                got.append(Punted(
                    token=p.token, hook=p.hook, vni=p.vni, port=p.port,
                    remote=socket.inet_ntoa(p.remote_ip.to_bytes(4, "little"))
                    if p.dir == FROM_WIRE else None,
                    direction=p.dir, data=ffi.buffer(p.data, p.len)[:]))
            if n < SLOTS:
                return got

    def verdict(self, token: int, verdict: int, data: bytes | None = None) -> None:
        """PASS (with data: rewritten) or DROP; the worker runs it at kick()."""
        if data is None:
            rc = lib.uvx_hook_verdict(self._dp, token, verdict, ffi.NULL, 0)
        else:
            rc = lib.uvx_hook_verdict(self._dp, token, verdict, data, len(data))
        _check(rc, "a hook's verdict")

    def inject(self, port: int, direction: int, data: bytes) -> bool:
        """A new frame from port (FROM_PORT: into its network) or to it
        (TO_PORT: to its container); False if the injection slots are all
        in flight (try after a kick())."""
        rc = lib.uvx_hook_inject(self._dp, port, direction, data, len(data))
        if rc == -errno.EAGAIN:
            return False
        _check(rc, f"injecting a frame {'to' if direction == TO_PORT else 'from'} port {port}")
        return True

    def kick(self) -> None:
        """Run the verdicts and injections given so far."""
        lib.uvx_hook_kick(self._dp)

    def punted(self) -> int:
        return int(lib.uvx_hook_punted(self._dp))
