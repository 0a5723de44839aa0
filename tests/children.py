"""Child processes for async tests, started without running Python in the
child.

The tests run their bodies on uvloop, whose subprocess spawn runs Python's
after-fork hooks in the child before exec.  In a process that has threads
(the SQLite store's, gRPC's for etcd) CPython 3.11's threading hook can
spin forever in the child (seen here: a test hung at 100 % CPU in
``threading._after_fork``).  ``subprocess.Popen`` forks and execs in C and
runs no Python in the child; threads drive its pipes for asyncio.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any


class Child:
    """The part of asyncio.subprocess.Process the tests use."""

    def __init__(self, *argv: str, **popen_kwargs: Any) -> None:
        self._p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, **popen_kwargs)

    @property
    def returncode(self) -> int | None:
        return self._p.poll()

    async def readline(self) -> bytes:
        assert self._p.stdout is not None
        return await asyncio.to_thread(self._p.stdout.readline)

    async def send(self, data: bytes) -> None:
        assert self._p.stdin is not None
        stdin = self._p.stdin

        def write() -> None:
            stdin.write(data)
            stdin.flush()

        await asyncio.to_thread(write)

    async def communicate(self) -> tuple[bytes, bytes]:
        return await asyncio.to_thread(self._p.communicate)

    async def kill(self) -> None:
        """End it (by pid, we started it) if it still runs, and reap it."""
        if self._p.poll() is None:
            self._p.kill()
        await asyncio.to_thread(self._p.wait)
