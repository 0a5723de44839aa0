"""A real etcd for tests: one member on 127.0.0.1 with free ports and its
own data dir, stopped by pid.  Test modules reuse the fixture with

    from tests.support import etcdserver
    etcd_server = etcdserver.etcd_server      # module-scoped: one per module

and skip with ``etcdserver.needs_etcd`` where /usr/bin/etcd is missing.

``EtcdServer(base, pki=Pki(...), jwt_ttl=2, lab=..., netns=...)`` is the
secured kind: TLS with client certificates the test made (openssl CLI),
JWT auth tokens that end after ``jwt_ttl`` seconds, and ``enable_auth()``
for a root user and RBAC users limited to a prefix; optionally inside a
lab host's netns (on its loopback).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from uvxlan.lab.netns import Lab, terminate
from uvxlan.lab.overlay import ETCD as ETCD_PATH
from uvxlan.lab.overlay import etcd_argv

ETCD = Path(ETCD_PATH)

needs_etcd = pytest.mark.skipif(not ETCD.exists(),
                                reason=f"needs {ETCD} (Debian package etcd-server)")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


class Pki:
    """Certificates made for one test etcd with the openssl CLI, in dir:
    a CA; the server's (subjectAltName IP ``ip``, for serving and for
    etcd's own gateway client); a client's (CN uvxlan); and a second CA with
    a client certificate of its own, which the server must refuse.  A JWT
    signing key pair too.  One day valid; EC P-256 (fast to make)."""

    def __init__(self, base: Path, ip: str = "127.0.0.1") -> None:
        self.dir = base
        base.mkdir(parents=True, exist_ok=True)
        self.ca, self.other_ca = base / "ca.pem", base / "other-ca.pem"
        self._ca("ca", "uvxlan test CA")
        self._ca("other-ca", "another CA")
        self.server_cert, self.server_key = self._issue(
            "server", "ca", "etcd", f"subjectAltName=IP:{ip}", "serverAuth,clientAuth")
        self.client_cert, self.client_key = self._issue("client", "ca", "uvxlan", None,
                                                        "clientAuth")
        self.other_cert, self.other_key = self._issue("other-client", "other-ca", "uvxlan",
                                                      None, "clientAuth")
        self.jwt_key, self.jwt_pub = base / "jwt.key", base / "jwt.pub"
        _openssl("genrsa", "-out", self.jwt_key, "2048")
        _openssl("rsa", "-in", self.jwt_key, "-pubout", "-out", self.jwt_pub)

    _EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def _ca(self, name: str, cn: str) -> None:
        _openssl("req", "-x509", *self._EC, "-keyout", self.dir / f"{name}.key",
                 "-out", self.dir / f"{name}.pem", "-days", "1", "-subj", f"/CN={cn}")

    def _issue(self, name: str, ca: str, cn: str, san: str | None,
               usage: str) -> tuple[Path, Path]:
        key, csr, cert = (self.dir / f"{name}{x}" for x in (".key", ".csr", ".pem"))
        ext = ["-addext", f"extendedKeyUsage={usage}"] + (["-addext", san] if san else [])
        _openssl("req", "-new", *self._EC, "-keyout", key, "-out", csr,
                 "-subj", f"/CN={cn}", *ext)
        _openssl("x509", "-req", "-in", csr, "-CA", self.dir / f"{ca}.pem",
                 "-CAkey", self.dir / f"{ca}.key", "-CAcreateserial", "-out", cert,
                 "-days", "1", "-copy_extensions", "copy")
        return cert, key


class EtcdServer:
    """One etcd member on ``ip`` (127.0.0.1), free ports, its own data dir.
    Short heartbeat and election times make its minimum lease TTL 1 s.

    With ``pki``: TLS only, client certificates required
    (``--client-cert-auth``).  With ``jwt_ttl``: JWT auth tokens that end
    after that many seconds.  With ``lab`` and ``netns``: run in that lab
    namespace (ready when its log says so, as the test cannot reach it)."""

    def __init__(self, base: Path, *, pki: Pki | None = None, jwt_ttl: float | None = None,
                 lab: Lab | None = None, netns: str | None = None) -> None:
        self.name = "uvx" + secrets.token_hex(4)
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.data_dir = base / "etcd-data"
        self.logfile = base / "etcd.log"
        self.client_port, self.peer_port = free_ports(2)
        self.pki, self.jwt_ttl, self.lab, self.netns = pki, jwt_ttl, lab, netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.passwords: dict[str, str] = {}

    @property
    def client_url(self) -> str:
        scheme = "https" if self.pki else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def store_url(self) -> str:
        """The uvxlan store URL of this server (etcds:// with TLS; the
        credentials are the test's to add)."""
        return f"etcd{'s' if self.pki else ''}://127.0.0.1:{self.client_port}?timeout=2"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = etcd_argv(self.name, self.data_dir, self.client_url, peer)
        if self.pki:
            args += ["--cert-file", str(self.pki.server_cert),
                     "--key-file", str(self.pki.server_key),
                     "--trusted-ca-file", str(self.pki.ca), "--client-cert-auth"]
        if self.jwt_ttl:
            assert self.pki, "JWT keys come with the Pki"
            args += ["--auth-token", f"jwt,pub-key={self.pki.jwt_pub},"
                     f"priv-key={self.pki.jwt_key},sign-method=RS256,ttl={self.jwt_ttl:g}s"]
        with open(self.logfile, "ab") as log:
            if self.lab is not None:
                assert self.netns is not None
                self.proc = self.lab.spawn(self.netns, args, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            else:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_ready(20.0)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{tail}")
            if self.pki or self.lab:
                if "ready to serve client requests" in self.logfile.read_text(errors="replace"):
                    return
            else:
                try:
                    with urllib.request.urlopen(self.client_url + "/health", timeout=1) as r:
                        if json.loads(r.read()).get("health") == "true":
                            return
                except (OSError, ValueError):
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"etcd did not answer on {self.client_url} in {timeout} s")

    def password_file(self, user: str, password: str | None = None) -> Path:
        """A 0600 file holding user's password (or the one given)."""
        path = self.base / f"{user}-{secrets.token_hex(2)}.pw"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write((password if password is not None else self.passwords[user]) + "\n")
        return path

    def _auth_script(self, spec: dict[str, object]) -> None:
        if self.pki:
            spec |= {"ca": str(self.pki.ca), "cert": str(self.pki.client_cert),
                     "key": str(self.pki.client_key)}
        argv = [sys.executable, str(Path(__file__).with_name("etcd_auth.py")),
                f"127.0.0.1:{self.client_port}", json.dumps(spec)]
        if self.lab is not None:
            assert self.netns is not None
            done = self.lab.run(self.netns, argv, timeout=60)
        else:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"etcd auth setup failed: {done.stderr[-2000:]}")

    def enable_auth(self) -> None:
        """Users root, uvxlan (readwrite on /uvxlan/) and outsider
        (readwrite on /elsewhere/ only), random passwords in
        self.passwords; then auth on."""
        self.passwords = {u: secrets.token_urlsafe(12) for u in ("root", "uvxlan", "outsider")}
        self._auth_script({"setup": {"root": self.passwords["root"], "users": {
            "uvxlan": [self.passwords["uvxlan"], "/uvxlan/"],
            "outsider": [self.passwords["outsider"], "/elsewhere/"]}}})

    def change_password(self, user: str, password: str) -> None:
        """As root: user's password is now ``password``."""
        self._auth_script({"root": self.passwords["root"], "passwd": [user, password]})
        self.passwords[user] = password

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; by pid."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, 5)


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd server for the module using it; stopped at its end."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
