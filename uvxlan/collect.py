"""Endpoints whose container is gone, collected.

An endpoint's netns deleted (``docker rm -f``, a runtime that crashed,
``ip netns del``) leaves its store record behind, holding its name, MAC
and address, with an error status: the agent waits for the netns to come
back (docs/operations.md, "Endpoints whose netns goes away").  A container
that is gone for good never comes back, and Docker's and flannel's users
found their address pools full of such leftovers.  So the agent of the
endpoint's host deletes the record once its netns has been gone for
``collect_after`` seconds ([host] setting, ``--collect-after``; 0: never),
and at once when the netns was a process' (``/proc/PID/ns/net``) and that
process is gone: such a path can never name that netns again (only
another process', once the pid is reused: the agent, which knows the
inode the netns had, takes that for gone too, and never makes an eth0
there; Node.gone_for_good).  A netns
back within the grace period keeps its endpoint (made again, as before).

The record is deleted with its address reservation only if it is still
the one the agent saw (``cluster.undo_attach``): an attach of the same
name meanwhile is never collected by mistake.  The store's delete event
then takes the endpoint out of the agent as a detach would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from uvxlan import cluster, netlink
from uvxlan.cluster import EndpointRecord, EndpointStatus
from uvxlan.errors import StoreError
from uvxlan.store import Store

log = logging.getLogger("uvxlan.collect")

GONE_AT_ONCE = "process gone"   # gone() for a process' netns whose process is gone


def gone(netns: str) -> str | None:
    """Why the netns is gone (GONE_AT_ONCE, or "deleted"), None while it
    exists: a name under /run/netns, or a namespace file's path."""
    if netlink.netns_exists(netns):
        return None
    # /proc/PID/ns/net that no longer opens: the process ended (or is a
    # zombie, whose namespaces are gone already).
    return GONE_AT_ONCE if netlink.is_process_netns(netns) else "deleted"


def not_ready(wanted: Mapping[str, EndpointRecord],
              statuses: Mapping[str, EndpointStatus]) -> dict[str, EndpointRecord]:
    """The endpoints asked of this host that do not forward (an error
    status, or none yet): only these can have lost their netns (a lost one
    gets an error status within the second), so a host of many containers
    costs a walk of its statuses a second, not a look at every netns."""
    return {k: r for k, r in wanted.items()
            if (st := statuses.get(k)) is None or st.state != "ready"}


class Collector:
    """Which of this host's endpoints are due for collection: their netns
    gone for ``grace`` seconds (0: never), or a process' netns whose
    process is gone.  Time counts from when this agent first saw it gone."""

    def __init__(self, grace: float, *, why_gone: Callable[[str], str | None] = gone,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._why_gone = why_gone
        self._clock = clock
        self.since: dict[str, float] = {}        # key -> when first seen gone
        self.collected = 0

    def due(self, wanted: Mapping[str, EndpointRecord]) -> list[tuple[str, EndpointRecord, str]]:
        """(key, record, why) of each endpoint to collect now; remembers
        since when the others' netns is gone, forgets those back."""
        if self.grace <= 0:
            return []
        now = self._clock()
        for key in [k for k in self.since if k not in wanted]:
            del self.since[key]
        out = []
        for key, rec in wanted.items():
            why = self._why_gone(rec.netns)
            if why is None:
                self.since.pop(key, None)
                continue
            first = self.since.setdefault(key, now)
            if why == GONE_AT_ONCE:
                out.append((key, rec, f"netns {rec.netns}: its process is gone"))
            elif now - first >= self.grace:
                out.append((key, rec, f"netns {rec.netns} gone for {now - first:.0f} s"))
        return out

    async def collect(self, store: Store, wanted: Mapping[str, EndpointRecord]) -> None:
        """Delete the records due (each logged once); a store that fails
        leaves them for the next call."""
        for key, rec, why in self.due(wanted):
            try:
                deleted = await cluster.undo_attach(store, rec)
            except StoreError as exc:
                log.debug("endpoint %s/%s: not collected yet: %s", rec.network, rec.name, exc)
                continue
            self.since.pop(key, None)
            if deleted:
                self.collected += 1
                log.warning("endpoint %s/%s: %s: collected (its record deleted, address %s "
                            "free)", rec.network, rec.name, why, rec.address.ip)
