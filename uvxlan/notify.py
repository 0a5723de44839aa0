"""Tell the service manager how the agent is doing: systemd's notify
protocol (``Type=notify``, sd_notify(3)), written here instead of linking
libsystemd.

systemd gives the agent an AF_UNIX datagram socket in ``$NOTIFY_SOCKET``:
a path, or an abstract name written with a leading ``@`` (a NUL byte on
the wire).  Each message is one datagram of ``KEY=value`` lines:
``READY=1`` once the agent answers on its control socket, ``STATUS=...``
for ``systemctl status``, ``STOPPING=1`` when it begins to stop.

Nothing here may stop the agent: without ``$NOTIFY_SOCKET`` (not run by
systemd) every call does nothing; a socket that cannot be reached, or an
address of a kind not handled here (systemd's ``vsock:``), is logged once
and then left alone; a message lost to a full queue is only that message.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

log = logging.getLogger("uvxlan.notify")

NOTIFY_ENV = "NOTIFY_SOCKET"
# sendto() errors that mean no manager listens there: give up.  Any other
# (a full queue: EAGAIN, ENOBUFS) loses one message only.
GONE = frozenset({errno.ECONNREFUSED, errno.ENOENT, errno.ENOTDIR})


def _address(value: str) -> str | None:
    """The socket address for a $NOTIFY_SOCKET value, or None for one we
    cannot use (sd_notify(3): an absolute path, or '@' for an abstract
    name)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """One agent's messages to its service manager."""

    def __init__(self, value: str | None = None) -> None:
        """value: the $NOTIFY_SOCKET to use (default: the environment's)."""
        self.where = os.environ.get(NOTIFY_ENV, "") if value is None else value
        self._addr: str | None = None
        self._sock: socket.socket | None = None
        self._losing = False        # messages lost to a full queue (logged)
        if not self.where:
            return
        self._addr = _address(self.where)
        if self._addr is None:
            self._give_up(f"not a path or an @abstract name: {self.where!r}")
            return
        # Non-blocking: a manager that stopped reading must not hold the
        # agent; such a datagram is lost, as sd_notify's would be.
        self._sock = socket.socket(socket.AF_UNIX,
                                   socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of KEY=value lines (keys in upper case, as systemd
        spells them); True if it left.  No manager there (GONE) is logged
        once, after which nothing more is sent; a message lost to a full
        queue is logged once per episode, and the next is tried."""
        if self._sock is None or self._addr is None:
            return False
        text = "".join(f"{key.upper()}={value}\n" for key, value in fields.items())
        try:
            self._sock.sendto(text.encode(), self._addr)
        except OSError as exc:
            if exc.errno in GONE:
                self._give_up(exc.strerror or str(exc))
            elif not self._losing:
                # A full queue (EAGAIN, ENOBUFS): this message is lost,
                # as sd_notify's would be; the next ones are still sent.
                self._losing = True
                log.warning("%s %s: %s; a message to the service manager was lost",
                            NOTIFY_ENV, self.where, exc.strerror or exc)
            return False
        self._losing = False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status)

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(stopping=1, status=status)

    def _give_up(self, why: str) -> None:
        log.warning("%s %s: %s; the service manager will not hear from this agent",
                    NOTIFY_ENV, self.where, why)
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
