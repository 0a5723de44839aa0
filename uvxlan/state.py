"""What an agent leaves for the next agent of its name: NAME.state.

The TAPs outlive the agent (they are persistent), so the next agent of
the same name must know which interfaces are its own, to adopt them or
to remove the ones no longer wanted (an endpoint dropped from the config
file, or detached while no agent ran), and which store lease it held, to
keep it alive so that the other hosts never see the host go.

The file sits beside the control socket, in the directory only root can
change, and is written whole (a new file renamed over the old), so a
crash leaves the old one or the new one.  Each TAP also carries the
alias ``uvxlan:NAME``: an interface of that name in the container that
lacks it is somebody else's and is never adopted or removed.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import suppress
from dataclasses import dataclass, field

log = logging.getLogger("uvxlan.state")


def marker(agent: str) -> str:
    """The alias uvxlan gives each TAP of agent ``agent``."""
    return f"uvxlan:{agent}"


@dataclass
class AgentState:
    path: str | None                       # None: kept in memory only (tests)
    lease: int = 0                         # the store lease last held, 0: none
    # (netns, ifname) of every TAP the agent holds -> its network's name
    endpoints: dict[tuple[str, str], str] = field(default_factory=dict)
    # save() failed last time: logged once per episode
    _failing: bool = field(default=False, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | None) -> AgentState:
        """The state a previous agent left at path; empty if none (or
        unreadable: logged, and then nothing is adopted by it)."""
        state = cls(path)
        if path is None:
            return state
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            state.lease = int(data.get("lease", 0))
            state.endpoints = {(str(e["netns"]), str(e["ifname"])): str(e["network"])
                               for e in data.get("endpoints", [])}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("state file %s unreadable (%s): starting without it", path, exc)
            state = cls(path)
        return state

    def save(self) -> bool:
        """Write the file whole: a new file, fsync'd, renamed over the old
        (a crash or power cut leaves the old one or the new one, never an
        empty one).  Best-effort: a failure (ENOSPC on /run) is logged once
        per episode and the agent goes on (the file is only what the next
        agent adopts; the TAPs carry our alias anyway).  Whether it was
        written."""
        if self.path is None:
            return True
        data = {"lease": self.lease,
                "endpoints": [{"netns": ns, "ifname": ifn, "network": net}
                              for (ns, ifn), net in sorted(self.endpoints.items())]}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, self.path)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning("state file %s not written (%s): the agent goes on; a restart"
                            " before it is written again may not adopt every TAP",
                            self.path, exc.strerror or exc)
            return False
        if self._failing:
            self._failing = False
            log.info("state file %s written again", self.path)
        return True

    def remove(self) -> None:
        """After a leave: nothing is left to adopt."""
        self.lease = 0
        self.endpoints.clear()
        if self.path is not None:
            with suppress(FileNotFoundError):
                os.unlink(self.path)
