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


class Racers:
    """Children that each print "ready", wait for "go" on stdin, race, and
    print their result.  ``async with`` starts them and waits until every
    one is ready; at the end of the block any still running is killed."""

    def __init__(self, argvs: list[list[str]], **popen_kwargs: Any) -> None:
        self._argvs = argvs
        self._kwargs = popen_kwargs
        self.procs: list[Child] = []

    async def __aenter__(self) -> Racers:
        try:
            for argv in self._argvs:
                self.procs.append(Child(*argv, **self._kwargs))
            for p in self.procs:
                line = await asyncio.wait_for(p.readline(), 20)
                assert line == b"ready\n", line
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for p in self.procs:
            await p.kill()

    async def go(self) -> None:
        for p in self.procs:
            await p.send(b"go\n")

    async def results(self, timeout: float) -> list[bytes]:
        """Each one's standard output, once it has exited with 0."""
        outs = []
        for p in self.procs:
            out, err = await asyncio.wait_for(p.communicate(), timeout)
            assert p.returncode == 0, err.decode()[-3000:]
            outs.append(out)
        return outs
