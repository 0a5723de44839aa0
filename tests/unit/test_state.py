"""NAME.state: what an agent leaves for the next agent of its name."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from uvxlan.state import AgentState, marker


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "h1.state")
    st = AgentState.load(path)
    assert (st.lease, st.endpoints) == (0, {})
    st.lease = 0x1234
    st.endpoints[("c1", "eth0")] = "net1"
    st.save()
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    again = AgentState.load(path)
    assert (again.lease, again.endpoints) == (0x1234, {("c1", "eth0"): "net1"})
    assert [p.name for p in tmp_path.iterdir()] == ["h1.state"]   # no temporary left
    again.remove()
    assert not Path(path).exists()
    assert AgentState.load(path).lease == 0


@pytest.mark.parametrize("text", ["{", "[]", '{"lease": "x"}', '{"endpoints": [{"netns": 1}]}'])
def test_an_unreadable_file_is_ignored_and_logged(tmp_path: Path, text: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h1.state"
    path.write_text(text)
    st = AgentState.load(str(path))
    assert (st.lease, st.endpoints) == (0, {})
    assert "unreadable" in caplog.text


def test_memory_only_state_writes_nothing(tmp_path: Path) -> None:
    st = AgentState(None)
    st.lease = 5
    st.save()
    st.remove()
    assert list(tmp_path.iterdir()) == []
    assert marker("h1") == "uvxlan:h1"


def test_save_fsyncs_the_new_file_before_renaming_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A power cut after the rename must not leave an empty file: the data
    # reaches the disk first.
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        events.append(f"rename {src}")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    path = tmp_path / "h1.state"
    st = AgentState(str(path))
    st.endpoints[("c1", "eth0")] = "net1"
    assert st.save()
    tmp = f"{path}.{os.getpid()}.tmp"
    assert events == [f"fsync {tmp}", f"rename {tmp}"]
    assert AgentState.load(str(path)).endpoints == {("c1", "eth0"): "net1"}


def test_a_failed_save_is_logged_once_per_episode_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # ENOSPC on /run is not to be had on demand; a missing directory fails
    # the same open() with another errno, which save() treats alike.
    where = tmp_path / "gone"
    st = AgentState(str(where / "h1.state"))
    st.endpoints[("c1", "eth0")] = "net1"
    with caplog.at_level(logging.INFO, logger="uvxlan.state"):
        assert not st.save()
        assert not st.save()
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "not written" in caplog.records[0].getMessage()
        where.mkdir()
        assert st.save()
        assert "written again" in caplog.records[-1].getMessage()
        where.joinpath("h1.state").unlink()
        where.rmdir()
        assert not st.save()                      # a new episode: told again
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO,
                                                   logging.WARNING]
    assert list(tmp_path.iterdir()) == []         # no temporary left behind
