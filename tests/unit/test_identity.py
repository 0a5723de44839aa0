"""One live agent per name, in the store: the controller's registration,
without root (the store is SQLite in a tmp dir, the node the in-memory
fake of test_controller).  Two agents of one name on different control
directories (or machines) never see each other's NAME.lock: the host
key's lease tells who is alive.  Real agents: tests/system/test_identity.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.test_controller import ME, VTEP, FakeNode, Rig, _typed, run
from uvxlan import cluster
from uvxlan.config import HostConfig
from uvxlan.controller import Controller
from uvxlan.errors import ClusterError
from uvxlan.state import AgentState


def another(rig: Rig, state: AgentState | None = None, underlay: str = "192.0.2.9",
            ttl: float = 10.0) -> Controller:
    """A second controller of our name, on its own state (control dir)."""
    return Controller(_typed(FakeNode()),
                      HostConfig(underlay=underlay, name=ME, lease_ttl=ttl),
                      rig.store, state)


def test_a_second_agent_of_a_live_name_is_refused_with_one_line(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        await rig.ctl._register()
        key = cluster.host_key(ME)
        first = await rig.store.get(key)
        assert first is not None and first.lease == rig.ctl.lease != 0
        second = another(rig)
        with pytest.raises(ClusterError) as exc:
            await second._register()
        msg = str(exc.value)
        assert "\n" not in msg
        assert msg.startswith(f"host {ME} is registered by a live agent (lease "
                              f"{first.lease:x}, underlay {VTEP[ME]}:4789, started ")
        assert "refused" in msg
        assert await rig.store.get(key) == first            # not taken over
        assert second.lease == 0
        # It ends the agent at start: run() raises it as itself.
        with pytest.raises(ClusterError, match="registered by a live agent"):
            async with asyncio.timeout(5):
                await another(rig).run()

    run(tmp_path, scenario)


def test_the_lease_in_the_state_file_is_the_same_agent(tmp_path: Path) -> None:
    """A restart after SIGKILL: the host key is still under the old
    agent's lease, which NAME.state hands to the new one: not refused,
    the same lease kept."""
    path = str(tmp_path / "h1.state")

    async def scenario(rig: Rig) -> None:
        rig.ctl = another(rig, AgentState.load(path), underlay=VTEP[ME])
        await rig.ctl._register()
        lease = rig.ctl.lease
        again = another(rig, AgentState.load(path), underlay=VTEP[ME])
        await again._register()
        assert again.lease == lease
        kv = await rig.store.get(cluster.host_key(ME))
        assert kv is not None and kv.lease == lease
        # Another control dir, no state: refused, still.
        with pytest.raises(ClusterError, match="registered by a live agent"):
            await another(rig, AgentState(str(tmp_path / "elsewhere.state")))._register()

    run(tmp_path, scenario)


def test_a_key_under_no_lease_or_a_dead_lease_is_taken(tmp_path: Path) -> None:
    """No lease: written by hand (it would outlive any agent); a lease that
    ended took the key with it: the name is free."""
    async def scenario(rig: Rig) -> None:
        key = cluster.host_key(ME)
        kv = await rig.store.get(key)
        assert kv is not None and kv.lease == 0               # as the rig wrote it
        await rig.ctl._register()
        kv = await rig.store.get(key)
        assert kv is not None and kv.lease == rig.ctl.lease != 0
        await rig.store.lease_revoke(rig.ctl.lease)           # as if it expired
        second = another(rig)
        await second._register()
        kv = await rig.store.get(key)
        assert kv is not None and kv.lease == second.lease
        assert cluster.decode(cluster.HostRecord, kv.value).underlay == "192.0.2.9"

    run(tmp_path, scenario)


def test_of_two_agents_starting_at_once_one_wins(tmp_path: Path) -> None:
    async def scenario(rig: Rig) -> None:
        await rig.store.delete(cluster.host_key(ME))
        a, b = another(rig, underlay="192.0.2.8"), another(rig)
        results = await asyncio.gather(a._register(), b._register(), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["ClusterError", "NoneType"]
        winner = a if results[0] is None else b
        kv = await rig.store.get(cluster.host_key(ME))
        assert kv is not None and kv.lease == winner.lease
        assert kv.value == cluster.encode(winner.record)

    run(tmp_path, scenario)


def test_our_host_key_deleted_is_back_at_once(tmp_path: Path) -> None:
    """Deleted by hand: put back on the delete event, under our lease, well
    before the next keepalive (TTL/3 = 20 s here)."""
    async def scenario(rig: Rig) -> None:
        rig.ctl = another(rig, underlay=VTEP[ME], ttl=60.0)
        task = asyncio.create_task(rig.ctl.run())
        try:
            async with asyncio.timeout(5):
                await rig.ctl.synced.wait()
            key = cluster.host_key(ME)
            assert await rig.store.delete(key)
            async with asyncio.timeout(3):
                while (kv := await rig.store.get(key)) is None:
                    await asyncio.sleep(0.02)
            assert kv.lease == rig.ctl.lease != 0
            assert kv.value == cluster.encode(rig.ctl.record)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await rig.ctl.close()

    run(tmp_path, scenario)


def test_a_live_lease_over_a_bad_record_still_refuses(tmp_path: Path) -> None:
    """What the line prints of the holder is checked first: a record
    that fails its checks is not printed (a forged line break, a terminal
    escape), and the name is still refused."""
    async def scenario(rig: Rig) -> None:
        lease = await rig.store.lease_grant(30)
        bad = b'{"name": "h1", "underlay": "1.2.3.4\\n\\u001b[2J", "port": 4789}'
        await rig.store.put(cluster.host_key(ME), bad, lease=lease)
        with pytest.raises(ClusterError) as exc:
            await rig.ctl._register()
        assert str(exc.value).startswith(f"host {ME} is registered by a live agent (lease "
                                          f"{lease:x}, its record unreadable): refused")
        kv = await rig.store.get(cluster.host_key(ME))
        assert kv is not None and kv.value == bad

    run(tmp_path, scenario)


def test_a_state_file_that_cannot_be_written_does_not_stop_registration(
        tmp_path: Path) -> None:
    # /run full (ENOSPC) is not to be had on demand; a missing control dir
    # fails the same write.  The lease is then only in memory: registered
    # all the same, and the agent goes on.
    async def scenario(rig: Rig) -> None:
        rig.ctl = another(rig, AgentState(str(tmp_path / "gone" / "h1.state")),
                          underlay=VTEP[ME])
        await rig.ctl._register()
        kv = await rig.store.get(cluster.host_key(ME))
        assert rig.ctl.lease and kv is not None and kv.lease == rig.ctl.lease

    run(tmp_path, scenario)
