"""Pure-Python reference forwarding database, with the fast path's rules.

Keyed by (VNI, MAC).  Learned entries age out and are capped per VNI and,
all VNIs together, at the capacity; static entries are never moved by
learning and never refused for want of room: csrc/fdb.c grows its pool
for them, keeping room for ``capacity`` learned entries beside them.  csrc/fdb.c implements the
same rules; the tests run one suite against both.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvxlan.config import DatapathConfig
from uvxlan.native import LearnResult

__all__ = ["Dest", "Entry", "ReferenceFdb", "LearnResult"]


@dataclass(frozen=True)
class Dest:
    """A local port, or a remote VTEP (ip, udp_port)."""

    port: int | None = None
    remote: str | None = None
    remote_port: int | None = None


@dataclass
class Entry:
    dest: Dest
    static: bool
    updated_ms: int


class ReferenceFdb:
    def __init__(self, *, capacity: int = DatapathConfig.fdb_capacity,
                 learn_limit: int = DatapathConfig.learn_limit,
                 ageing_ms: int = DatapathConfig.ageing_ms) -> None:
        self.capacity = capacity
        self.learn_limit = learn_limit
        self.ageing_ms = ageing_ms
        self.entries: dict[tuple[int, str], Entry] = {}
        self.learned: dict[int, int] = {}

    def lookup(self, vni: int, mac: str) -> Entry | None:
        return self.entries.get((vni, mac))

    def learn(self, vni: int, mac: str, dest: Dest, now_ms: int) -> LearnResult:
        e = self.entries.get((vni, mac))
        if e is not None:
            if e.static:
                return LearnResult.STATIC
            e.updated_ms = now_ms
            if e.dest == dest:
                return LearnResult.REFRESHED
            e.dest = dest
            return LearnResult.MOVED
        if self.learn_limit and self.learned.get(vni, 0) >= self.learn_limit:
            return LearnResult.LIMIT
        if sum(self.learned.values()) >= self.capacity:
            return LearnResult.FULL
        self.entries[(vni, mac)] = Entry(dest, False, now_ms)
        self.learned[vni] = self.learned.get(vni, 0) + 1
        return LearnResult.NEW

    def add_static(self, vni: int, mac: str, dest: Dest, now_ms: int) -> None:
        e = self.entries.get((vni, mac))
        if e is not None and not e.static:
            self.learned[vni] -= 1
        self.entries[(vni, mac)] = Entry(dest, True, now_ms)

    def delete(self, vni: int, mac: str) -> bool:
        e = self.entries.pop((vni, mac), None)
        if e is not None and not e.static:
            self.learned[vni] -= 1
        return e is not None

    def age(self, now_ms: int) -> int:
        expired = [k for k, e in self.entries.items()
                   if not e.static and now_ms >= e.updated_ms + self.ageing_ms]
        for vni, mac in expired:
            self.delete(vni, mac)
        return len(expired)
