"""Where the store's TLS and user settings come from (flags, then the URL,
then the environment), what is refused before any connection, and the
SQLite file's permissions whatever the umask.  No root, no etcd."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uvxlan.errors import ConfigError, StoreDenied
from uvxlan.store import StoreAuth, open_store
from uvxlan.store.credentials import resolve


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca", "ca2", "cert", "key", "pw", "pw2"):
        p = tmp_path / name
        p.write_text(f"{name}-content\n")
        p.chmod(0o600)
        files[name] = str(p)
    return files


def test_flag_wins_over_url_wins_over_environment(pem: dict[str, str]) -> None:
    env = {"UVXLAN_STORE_CA": pem["ca2"], "UVXLAN_STORE_USER": "envuser",
           "UVXLAN_STORE_PASSWORD": "envpw"}
    c = resolve("etcd://a:1", tls=False, hosts=["a"], given=StoreAuth(),
                query={}, env=env)
    assert (c.tls, c.ca_file, c.user, c.password, c.password_from) == (
        True, pem["ca2"], "envuser", "envpw", "$UVXLAN_STORE_PASSWORD")
    c = resolve("etcd://a:1", tls=False, hosts=["a"], given=StoreAuth(),
                query={"ca": pem["ca"], "user": "urluser", "password_file": pem["pw"]},
                env=env)
    assert (c.ca, c.user, c.password) == (b"ca-content\n", "urluser", "pw-content")
    c = resolve("etcd://a:1", tls=False, hosts=["a"],
                given=StoreAuth(user="flaguser", password_file=pem["pw2"]),
                query={"user": "urluser", "password_file": pem["pw"]}, env=env)
    assert (c.user, c.password, c.password_from) == ("flaguser", "pw2-content",
                                                     f"file {pem['pw2']}")


def test_tls_on_for_etcds_or_any_certificate(pem: dict[str, str]) -> None:
    def tls(scheme_tls: bool, **given: str) -> bool:
        return resolve("etcd://a:1", tls=scheme_tls, hosts=["a"], given=StoreAuth(**given),
                       query={}, env={}).tls

    assert not tls(False)
    assert tls(True)
    assert tls(False, ca=pem["ca"])
    assert tls(False, cert=pem["cert"], key=pem["key"])


@pytest.mark.parametrize(("given", "env", "hosts", "says"), [
    ({"cert": "cert"}, {}, ["a"], "a client certificate needs its key too"),
    ({"key": "key"}, {}, ["a"], "a client key needs its certificate too"),
    ({"user": "u"}, {}, ["a"], "user 'u' needs a password"),
    ({}, {"UVXLAN_STORE_PASSWORD": "p"}, ["a"], "a password ($UVXLAN_STORE_PASSWORD) "
                                               "without a user"),
    ({"user": "u", "password_file": "pw"}, {}, ["192.0.2.1"], "cross the network in clear"),
    ({"ca": "missing"}, {}, ["a"], "cannot read CA file"),
    ({"user": ""}, {}, ["a"], "--store-user is empty"),
])
def test_refused_before_connecting(pem: dict[str, str], given: dict[str, str],
                                   env: dict[str, str], hosts: list[str], says: str) -> None:
    paths = {k: (pem.get(v, "/nonexistent/" + v) if k != "user" else v)
             for k, v in given.items()}
    with pytest.raises(ConfigError, match=None) as exc:
        resolve("etcd://a:1", tls=False, hosts=hosts, given=StoreAuth(**paths),
                query={}, env=env)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_password_over_plaintext_to_loopback_is_allowed(pem: dict[str, str]) -> None:
    for host in ("127.0.0.1", "localhost", "[::1]"):
        c = resolve("etcd://x", tls=False, hosts=[host],
                    given=StoreAuth(user="u", password_file=pem["pw"]), query={}, env={})
        assert c.password == "pw-content"


def test_password_file_others_can_read_is_warned(pem: dict[str, str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    os.chmod(pem["pw"], 0o644)
    resolve("etcd://x", tls=True, hosts=["a"],
            given=StoreAuth(user="u", password_file=pem["pw"]), query={}, env={})
    assert "can be read by others" in caplog.text


def test_open_store_refusals() -> None:
    with pytest.raises(ConfigError, match="only apply to an etcd store"):
        open_store("sqlite:///x.db", StoreAuth(ca="/x"))
    with pytest.raises(ConfigError, match="no password in the URL") as exc:
        open_store("etcd://a:1?password=hunter2", env={})
    assert "hunter2" not in str(exc.value)
    with pytest.raises(ConfigError, match="no user or password in the URL") as exc:
        open_store("etcd://u:hunter2@a:1", env={})
    assert "hunter2" not in str(exc.value)
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        open_store("etcds://a:1?colour=blue", env={})
    # The environment is ignored by the embedded store.
    open_store("sqlite:///x.db", env={"UVXLAN_STORE_CA": "/nonexistent"})


# The SQLite file -----------------------------------------------------------

@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _touch(url: str, while_open: Callable[[], None] = lambda: None) -> None:
    async def run() -> None:
        s = open_store(url)
        try:
            await s.put("/k", b"v")
            while_open()
        finally:
            await s.close()

    asyncio.run(run())


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_sqlite_made_for_its_owner_only_under_umask_000(tmp_path: Path,
                                                        umask_000: None) -> None:
    db = tmp_path / "a" / "b" / "state.db"
    seen: dict[str, int] = {}
    # SQLite's -wal and -shm files exist while the database is open.
    _touch(f"sqlite://{db}", lambda: seen.update({p.name: mode(p)
                                                  for p in db.parent.iterdir()}))
    assert mode(tmp_path / "a") == 0o700 and mode(db.parent) == 0o700
    assert seen == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}


def test_sqlite_file_others_can_read_is_tightened(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "state.db"
    _touch(f"sqlite://{db}")
    os.chmod(db, 0o644)
    caplog.set_level(logging.WARNING, logger="uvxlan.store")
    _touch(f"sqlite://{db}")
    assert mode(db) == 0o600
    assert "could be read or written by others (mode 644): now 0600" in caplog.text


def test_sqlite_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(StoreDenied, match="can be written by others"):
        _touch(f"sqlite://{shared}/state.db")
    assert not (shared / "state.db").exists()


@pytest.mark.parametrize("argv", [
    ["network", "ls"], ["network", "inspect", "net1"], ["endpoint", "ls"], ["host", "ls"],
    ["check"], ["detach", "net1", "c1"], ["network", "rm", "net1"]])
def test_a_command_that_only_reads_never_makes_the_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """A missing SQLite file made anew and empty by a listing would make
    every agent remove its endpoints: one line instead, and no file."""
    from uvxlan.cli import main

    db = tmp_path / "state" / "state.db"
    assert main([*argv, "--store", f"sqlite://{db}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"uvxlan: error: store {db}: store file missing (")
    assert err.count("\n") == 1
    assert not db.exists()


def test_a_command_that_adds_makes_the_store(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from uvxlan.cli import main

    db = tmp_path / "state" / "state.db"
    url = f"sqlite://{db}"
    assert main(["network", "create", "net1", "--subnet", "10.0.0.0/24", "--store", url]) == 0
    assert db.exists()
    assert main(["network", "ls", "--store", url]) == 0
    assert "net1" in capsys.readouterr().out
