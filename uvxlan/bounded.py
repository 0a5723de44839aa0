"""One bounded request-reply server on the agent's event loop.

The metrics endpoint and Docker's plugin socket both answer one request
per connection with one reply, and both must never let a client hold the
agent: at most ``connections_max`` connections at once (the next gets the
subclass's "busy" reply and is closed), a reply not taken within
``send_s`` seconds ends the connection, and every connection is ended
when the server closes.  Each counts the connections a limit ended, by
limit, in ``refused``.  The request is read within ``IDLE_S`` and a head
of at most the ``head_max`` given to ``serve``; a read a limit ended gets
the subclass's ``refusal`` (408, 431, 400), in its own format.  The
subclass reads the request in ``read`` and answers it in ``reply``.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import suppress
from typing import Any

IDLE_S = 5.0            # for a client to send its request (head and body)
LISTEN_BACKLOG = 16     # a scraper or dockerd connects rarely; the kernel holds a burst


class BoundedServer:
    """Serve ``respond(reader) -> bytes`` on a listening socket, bounded."""

    connections_max = 16    # at once; more are refused at once
    send_s = 10.0           # for a client to take the whole reply
    incomplete = "the request ended early"   # what the 400 for a cut-off request says

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head_max = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        # Connections ended by a limit, by limit.
        self.refused = {"busy": 0, "too_long": 0, "idle": 0, "slow_reader": 0}

    async def read(self, reader: asyncio.StreamReader) -> Any:
        """The connection's one request, as ``reply`` takes it (the
        StreamReader's own errors are the limits: see ``respond``)."""
        raise NotImplementedError

    async def reply(self, request: Any) -> bytes:
        """The reply to a request ``read`` returned."""
        raise NotImplementedError

    def refusal(self, status: int, why: str) -> bytes:
        """A reply refusing the request with an HTTP status, saying why."""
        raise NotImplementedError

    def busy(self) -> bytes:
        """The reply to a connection over ``connections_max``."""
        return self.refusal(503, f"busy: {self.connections_max} connections at once")

    async def respond(self, reader: asyncio.StreamReader) -> bytes:
        """The reply to the connection's one request, or the refusal of a
        read a limit ended (counted in ``refused``)."""
        try:
            request = await asyncio.wait_for(self.read(reader), IDLE_S)
        except TimeoutError:
            self.refused["idle"] += 1
            return self.refusal(408, f"no complete request within {IDLE_S:g} s")
        except asyncio.LimitOverrunError:
            self.refused["too_long"] += 1
            return self.refusal(431, f"request head longer than {self.head_max} bytes")
        except asyncio.IncompleteReadError:
            return self.refusal(400, self.incomplete)
        return await self.reply(request)

    async def serve(self, head_max: int) -> None:
        """Start accepting; a request head longer than head_max ends its
        connection (431)."""
        self.head_max = head_max
        if self.sock.family == socket.AF_UNIX:
            self._server = await asyncio.start_unix_server(self._handle, sock=self.sock,
                                                           limit=head_max)
        else:
            self._server = await asyncio.start_server(self._handle, sock=self.sock,
                                                      limit=head_max)

    async def stop(self) -> None:
        """Stop accepting and end every connection (within a second)."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        for w in self._clients.values():
            w.transport.abort()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=1.0)

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.connections_max:
            self.refused["busy"] += 1
            writer.write(self.busy())
            writer.close()
            return
        me = asyncio.current_task()
        assert me is not None
        self._clients[me] = writer
        try:
            writer.write(await self.respond(reader))
            await asyncio.wait_for(writer.drain(), self.send_s)
        except TimeoutError:
            self.refused["slow_reader"] += 1
            writer.transport.abort()
        except ConnectionError:
            pass                         # the client went away
        finally:
            del self._clients[me]
            with suppress(ConnectionError):
                writer.close()
