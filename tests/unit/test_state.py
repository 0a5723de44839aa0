"""NAME.state: what an agent leaves for the next agent of its name."""

from __future__ import annotations

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
