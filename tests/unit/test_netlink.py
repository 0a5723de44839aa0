"""uvxlan.netlink without root: what it does when opening a namespace fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uvxlan import netlink
from uvxlan.errors import NetlinkError


def test_run_in_netns_closes_the_target_when_home_cannot_be_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []

    def open_netns_fd(netns: str | None) -> int:
        if netns is None:              # the thread's own netns: EMFILE, say
            raise NetlinkError("cannot open this thread's netns: too many open files")
        fd = os.open(tmp_path, os.O_RDONLY)   # stands for /run/netns/NAME
        opened.append(fd)
        return fd

    monkeypatch.setattr(netlink, "_open_netns_fd", open_netns_fd)
    with pytest.raises(NetlinkError, match="too many open files"):
        netlink.run_in_netns("c1", lambda: None)
    (fd,) = opened
    with pytest.raises(OSError):       # closed: nothing leaks per failure
        os.fstat(fd)


def test_only_a_namespace_file_is_taken_for_a_netns(tmp_path: Path) -> None:
    # A path comes from a runtime or the store: a device, a FIFO or a plain
    # file must never be opened as a namespace (an open can block).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("")
    assert netlink.netns_exists("/proc/self/ns/net")
    assert netlink.netns_inode("/proc/self/ns/net") == (
        os.stat("/proc/self/ns/net").st_dev, os.stat("/proc/self/ns/net").st_ino)
    for path in ("/dev/null", str(fifo), str(plain), str(tmp_path / "missing"), "/proc/self"):
        assert not netlink.netns_exists(path), path
        assert netlink.netns_inode(path) is None, path
        with pytest.raises(NetlinkError, match="does not exist"):
            netlink._open_netns_fd(path)
