"""The store over TLS with client certificates and etcd users (RBAC), against
a real etcd started with ``--client-cert-auth``, auth enabled and JWT tokens
that end every 2 s, with certificates these tests make.

- store operations, a lease kept alive and a watch, across several token
  expiries (each renewal logged, so the test sees that expiries happened);
- ``uvxlan network create/ls``, ``host ls`` with flags and with environment
  variables;
- each wrong credential gives one line naming it and a non-zero exit, at
  once (no retry loop);
- an agent in a lab host, with its credentials in the store URL: a wrong
  password ends it at start with one line; with the right one it registers,
  realises attached endpoints, keeps its lease and watch across token
  expiries; a password changed under it is logged while forwarding goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import needs, root
from tests.support import etcdserver
from uvxlan.control import query_agent
from uvxlan.errors import StoreDenied
from uvxlan.lab.netns import Lab
from uvxlan.lab.overlay import ClusterOverlay
from uvxlan.store import StoreAuth, open_store

pytestmark = [etcdserver.needs_etcd, needs("openssl")]

JWT_TTL = 2.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[etcdserver.EtcdServer]:
    """etcd on 127.0.0.1: TLS, client certificates required, auth on."""
    base = tmp_path_factory.mktemp("etcd-tls")
    server = etcdserver.EtcdServer(base, pki=etcdserver.Pki(base / "pki"), jwt_ttl=JWT_TTL)
    server.start()
    try:
        server.enable_auth()
        yield server
    finally:
        server.stop()


def good_auth(server: etcdserver.EtcdServer, user: str = "uvxlan") -> StoreAuth:
    assert server.pki is not None
    return StoreAuth(ca=str(server.pki.ca), cert=str(server.pki.client_cert),
                     key=str(server.pki.client_key), user=user,
                     password_file=str(server.password_file(user)))


def test_store_over_tls_and_auth_across_token_expiries(
        secure_etcd: etcdserver.EtcdServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="uvxlan.store")

    async def run() -> None:
        s = open_store(secure_etcd.store_url, good_auth(secure_etcd), env={})
        try:
            rev = await s.put("/uvxlan/tls/a", b"1")
            assert (await s.get("/uvxlan/tls/a")).value == b"1"  # type: ignore[union-attr]
            assert await s.cas("/uvxlan/tls/a", b"2", mod_revision=rev)
            assert await s.txn(compare=[("/uvxlan/tls/b", 0)],
                               put=[("/uvxlan/tls/b", b"x", 0)])
            lease = await s.lease_grant(5)
            await s.put("/uvxlan/tls/leased", b"l", lease=lease)
            kvs, listed = await s.list("/uvxlan/tls/")
            assert [kv.key for kv in kvs] == ["/uvxlan/tls/a", "/uvxlan/tls/b",
                                              "/uvxlan/tls/leased"]
            events = s.watch("/uvxlan/tls/", start_revision=listed + 1)
            # Several token lifetimes: the lease kept alive, the watch open.
            for i in range(4):
                await asyncio.sleep(JWT_TTL * 0.75)
                await s.lease_keepalive(lease)
                await s.put(f"/uvxlan/tls/n{i}", b"%d" % i)
            for i in range(4):
                ev = await asyncio.wait_for(anext(events), 5)
                assert (ev.type, ev.key) == ("put", f"/uvxlan/tls/n{i}")
            await events.aclose()  # type: ignore[attr-defined]  # a generator
            # A watch made with a token that has ended: renewed, not refused.
            await asyncio.sleep(JWT_TTL + 0.5)
            events = s.watch("/uvxlan/tls/", start_revision=0)
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.5)
            await s.delete("/uvxlan/tls/a")
            ev = await asyncio.wait_for(first, 5)
            assert (ev.type, ev.key) == ("delete", "/uvxlan/tls/a")
            await events.aclose()  # type: ignore[attr-defined]  # a generator
            kvs, _ = await s.list("/uvxlan/tls/")
            assert "/uvxlan/tls/leased" in [kv.key for kv in kvs]   # the lease held
        finally:
            await s.close()

    asyncio.run(run())
    renewals = [r for r in caplog.records if "auth token renewed" in r.getMessage()]
    assert len(renewals) >= 2, "the tokens never ended: is etcd running with JWT ttl?"


def test_store_refuses_a_user_without_permission(secure_etcd: etcdserver.EtcdServer) -> None:
    async def run() -> None:
        s = open_store(secure_etcd.store_url, good_auth(secure_etcd, "outsider"), env={})
        try:
            with pytest.raises(StoreDenied, match="permission denied to user 'outsider'"):
                await s.put("/uvxlan/x", b"1")
            with pytest.raises(StoreDenied, match="permission denied to watch"):
                await anext(s.watch("/uvxlan/", start_revision=0))
        finally:
            await s.close()

    asyncio.run(run())


def uvxlan(*args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m uvxlan ARGS`` with only the given UVXLAN_STORE* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("UVXLAN_STORE")}
    return subprocess.run([sys.executable, "-m", "uvxlan", *args], capture_output=True,
                          text=True, timeout=timeout, env=base | (env or {}), cwd=REPO,
                          check=False)


def test_cli_over_tls_with_flags_and_environment(secure_etcd: etcdserver.EtcdServer) -> None:
    auth = good_auth(secure_etcd)
    flags = ["--store", secure_etcd.store_url, "--store-ca", str(auth.ca),
             "--store-cert", str(auth.cert), "--store-key", str(auth.key),
             "--store-user", "uvxlan", "--store-password-file", str(auth.password_file)]
    done = uvxlan("network", "create", "tlsnet", *flags)
    assert done.returncode == 0, done.stderr
    assert "tlsnet" in done.stdout
    env = {"UVXLAN_STORE": secure_etcd.store_url, "UVXLAN_STORE_CA": str(auth.ca),
           "UVXLAN_STORE_CERT": str(auth.cert), "UVXLAN_STORE_KEY": str(auth.key),
           "UVXLAN_STORE_USER": "uvxlan",
           "UVXLAN_STORE_PASSWORD": secure_etcd.passwords["uvxlan"]}
    done = uvxlan("network", "ls", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert [n["name"] for n in json.loads(done.stdout)] == ["tlsnet"]
    # A flag wins over the environment: a wrong user by flag is refused.
    bad = uvxlan("host", "ls", "--store-user", "outsider", env=env)
    assert bad.returncode == 1 and "user 'outsider'" in bad.stderr
    done = uvxlan("network", "rm", "tlsnet", env=env)
    assert done.returncode == 0, done.stderr


def wrong_credentials(server: etcdserver.EtcdServer) -> dict[str, tuple[list[str], str]]:
    """name -> (flags, what the one line must say)."""
    pki = server.pki
    assert pki is not None
    ca, cert, key = str(pki.ca), str(pki.client_cert), str(pki.client_key)
    pw = str(server.password_file("uvxlan"))
    wrong_pw = str(server.password_file("uvxlan", "not-the-password"))
    unreadable = server.base       # a directory: unreadable as a file, even for root

    def flags(ca: str = ca, cert: str | None = cert, key: str | None = key,
              user: str = "uvxlan", password_file: str = pw) -> list[str]:
        out = ["--store-ca", ca, "--store-user", user, "--store-password-file", password_file]
        if cert and key:
            out += ["--store-cert", cert, "--store-key", key]
        return out

    return {
        "wrong CA": (flags(ca=str(pki.other_ca)),
                     f"TLS: the server's certificate is not signed by CA {pki.other_ca}"),
        "no client certificate": (flags(cert=None, key=None),
                                  "TLS: the server requires a client certificate"),
        "client certificate of another CA": (
            flags(cert=str(pki.other_cert), key=str(pki.other_key)),
            f"TLS: the server refused client certificate {pki.other_cert}"),
        "wrong password": (flags(password_file=wrong_pw),
                           f"user 'uvxlan' or its password (file {wrong_pw}) refused"),
        "unknown user": (flags(user="nobody"), "user 'nobody' or its password"),
        "no permission on /uvxlan/": (
            flags(user="outsider", password_file=str(server.password_file("outsider"))),
            "permission denied to user 'outsider'"),
        "unreadable key file": (flags(key=str(unreadable)),
                                f"cannot read client key {unreadable} (--store-key)"),
    }


@pytest.mark.parametrize("case", ["wrong CA", "no client certificate",
                                  "client certificate of another CA", "wrong password",
                                  "unknown user", "no permission on /uvxlan/",
                                  "unreadable key file"])
def test_wrong_credential_one_line(secure_etcd: etcdserver.EtcdServer, case: str) -> None:
    flags, says = wrong_credentials(secure_etcd)[case]
    for command in (["network", "ls"], ["network", "create", "nope"]):
        done = uvxlan(*command, "--store", secure_etcd.store_url, *flags, timeout=30)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, done.stderr
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("uvxlan: error: ") and says in lines[0], lines[0]


def test_password_never_on_the_command_line(secure_etcd: etcdserver.EtcdServer) -> None:
    done = uvxlan("network", "ls", "--store", secure_etcd.store_url + "&password=hunter2")
    assert done.returncode == 1 and "no password in the URL" in done.stderr
    assert "hunter2" not in done.stderr
    done = uvxlan("network", "ls", "--store", "etcd://u:hunter2@192.0.2.1:2379")
    assert done.returncode == 1 and "hunter2" not in done.stderr
    # Nor over plaintext to another machine.
    done = uvxlan("network", "ls", "--store", "etcd://192.0.2.1:2379",
                  env={"UVXLAN_STORE_USER": "u", "UVXLAN_STORE_PASSWORD": "p"})
    assert done.returncode == 1 and "cross the network in clear" in done.stderr


# An agent on a lab host ------------------------------------------------------

@pytest.fixture
def lab_etcd(lab: Lab, tmp_path: Path) -> Iterator[etcdserver.EtcdServer]:
    """A one-host lab whose h1 runs the secured etcd on its own loopback."""
    lab.up(1)
    netns = lab.host("h1").netns
    server = etcdserver.EtcdServer(tmp_path / "etcd", pki=etcdserver.Pki(tmp_path / "pki"),
                                   jwt_ttl=JWT_TTL, lab=lab, netns=netns)
    server.start()
    try:
        server.enable_auth()
        yield server
    finally:
        server.stop()


def url_with(server: etcdserver.EtcdServer, password_file: Path) -> str:
    assert server.pki is not None
    return server.store_url + "&" + urlencode({
        "ca": server.pki.ca, "cert": server.pki.client_cert, "key": server.pki.client_key,
        "user": "uvxlan", "password_file": password_file})


@root
def test_agent_over_tls_and_auth(lab: Lab, lab_etcd: etcdserver.EtcdServer,
                                 tmp_path: Path) -> None:
    h1 = lab.host("h1").netns
    for name in ("c1", "c2"):
        lab.add_container(name)

    # A wrong password ends the agent at start, with one line.
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[host]\ncontrol_dir = "{tmp_path}"\nmtu = {lab.mtu}\n')
    bad_url = url_with(lab_etcd, lab_etcd.password_file("uvxlan", "wrong"))
    done = lab.run(h1, [sys.executable, "-m", "uvxlan", "agent", "--config", str(cfg),
                        "--store", bad_url, "--name", "h1",
                        "--advertise", lab.host("h1").underlay_ip], timeout=60)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("uvxlan: error: store etcds://") and "user 'uvxlan'" in last, last
    assert "Traceback" not in done.stderr

    # The right one: registered, endpoints realised, across token expiries.
    pw = lab_etcd.password_file("uvxlan")
    ov = ClusterOverlay(lab, tmp_path / "good", url_with(lab_etcd, pw))
    try:
        ov.start("h1")
        ov.cli("network", "create", "net1")
        ov.cli("attach", "net1", "--host", "h1", "--netns", lab.container_netns("c1"),
               "--name", "c1")
        lease = query_agent(ov.control_socket("h1"), "status")["lease"]
        time.sleep(JWT_TTL * 3.5)
        # The same lease, and the watch still delivers: a new endpoint is made.
        assert query_agent(ov.control_socket("h1"), "status")["lease"] == lease
        ov.cli("attach", "net1", "--host", "h1", "--netns", lab.container_netns("c2"),
               "--name", "c2")
        hosts = json.loads(ov.cli("host", "ls", "--json").stdout)
        assert [h["name"] for h in hosts] == ["h1"]
        log = ov.file("h1", ".log").read_text()
        assert "unreachable" not in log and "store refused us" not in log, log

        # The password changed under it: logged, forwarding goes on.
        lab_etcd.change_password("uvxlan", "changed-elsewhere")
        deadline = time.monotonic() + 30
        while "store refused us" not in ov.file("h1", ".log").read_text():
            assert time.monotonic() < deadline, ov.file("h1", ".log").read_text()
            time.sleep(0.2)
        assert query_agent(ov.control_socket("h1"), "stats")["networks"]
    finally:
        codes = ov.stop_all()
    assert codes == {"h1": 0}
