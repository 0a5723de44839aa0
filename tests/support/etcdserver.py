"""A real etcd for tests: one member on 127.0.0.1 with free ports and its
own data dir, stopped by pid.  Test modules reuse the fixture with

    from tests.support import etcdserver
    etcd_server = etcdserver.etcd_server      # module-scoped: one per module

and skip with ``etcdserver.needs_etcd`` where /usr/bin/etcd is missing.

``EtcdServer(base, pki=Pki(...), jwt_ttl=2, lab=..., netns=...)`` is the
secured kind: TLS with client certificates the test made (openssl CLI),
JWT auth tokens that end after ``jwt_ttl`` seconds, and ``enable_auth()``
for a root user and RBAC users limited to a prefix; optionally inside a
lab host's netns (on its loopback, or on ``ip``: its underlay address,
which every lab host reaches).  ``args`` adds etcd flags (a tiny
``--quota-backend-bytes``, say); ``etcdctl()`` runs etcdctl against it.

``etcd_cluster(base, 3, lab=..., netns=..., ip=...)`` starts three members
of one cluster, each an ``EtcdServer`` on its own ports, each stopped or
killed (``kill()``: SIGKILL) and started again on its own.
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
                 lab: Lab | None = None, netns: str | None = None, ip: str = "127.0.0.1",
                 args: tuple[str, ...] = ()) -> None:
        self.name = "uvx" + secrets.token_hex(4)
        self.ip, self.args = ip, list(args)
        # A member of a cluster: every member's name=peer URL, and its token.
        self.initial_cluster: str | None = None
        self.cluster_token = self.name
        self._ready_seen = 0
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
        return f"{scheme}://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.client_port}"

    @property
    def store_url(self) -> str:
        """The uvxlan store URL of this server (etcds:// with TLS; the
        credentials are the test's to add)."""
        return f"etcd{'s' if self.pki else ''}://{self.endpoint}?timeout=2"

    def start(self) -> None:
        self.launch()
        try:
            self.wait_ready(20.0)
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Start the process (on its data dir, if it has one already)."""
        args = etcd_argv(self.name, self.data_dir, self.client_url, self.peer_url)
        if self.initial_cluster is not None:
            args[args.index("--initial-cluster") + 1] = self.initial_cluster
            args[args.index("--initial-cluster-token") + 1] = self.cluster_token
        args += self.args
        if self.pki:
            args += ["--cert-file", str(self.pki.server_cert),
                     "--key-file", str(self.pki.server_key),
                     "--trusted-ca-file", str(self.pki.ca), "--client-cert-auth"]
        if self.jwt_ttl:
            assert self.pki, "JWT keys come with the Pki"
            args += ["--auth-token", f"jwt,pub-key={self.pki.jwt_pub},"
                     f"priv-key={self.pki.jwt_key},sign-method=RS256,ttl={self.jwt_ttl:g}s"]
        self._ready_seen = self._ready_lines()
        with open(self.logfile, "ab") as log:
            if self.lab is not None:
                assert self.netns is not None
                self.proc = self.lab.spawn(self.netns, args, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            else:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)

    def _ready_lines(self) -> int:
        try:
            return self.logfile.read_text(errors="replace").count("ready to serve client requests")
        except FileNotFoundError:
            return 0

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{tail}")
            if self.pki or self.lab:
                if self._ready_lines() > self._ready_seen:       # this run's, not the last
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
                self.endpoint, json.dumps(spec)]
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

    def etcdctl(self, *args: str, root: bool = False, timeout: float = 30
                ) -> subprocess.CompletedProcess[str]:
        """``etcdctl ARGS`` against this member (as root: with its
        password), in its netns; not checked."""
        argv = ["etcdctl", f"--endpoints={self.client_url}", "--command-timeout=10s"]
        if self.pki:
            argv += [f"--cacert={self.pki.ca}", f"--cert={self.pki.client_cert}",
                     f"--key={self.pki.client_key}"]
        if root:
            argv.append(f"--user=root:{self.passwords['root']}")
        argv += args
        env = {"ETCDCTL_API": "3"}
        if self.lab is not None:
            assert self.netns is not None
            return self.lab.run(self.netns, ["env", *(f"{k}={v}" for k, v in env.items()),
                                             *argv], timeout=timeout)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, **env})

    def role(self, user: str, grant: bool) -> None:
        """As root: give user back its role (grant), or take it away."""
        done = self.etcdctl("user", "grant-role" if grant else "revoke-role", user, user,
                            root=True)
        if done.returncode != 0:
            raise RuntimeError(f"etcdctl user role {user}: {done.stderr.strip()}")

    def kill(self) -> None:
        """SIGKILL now, by pid: a member that dies without a goodbye."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; by pid."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, 5)


def etcd_cluster(base: Path, members: int, *, lab: Lab | None = None,
                 netns: str | None = None, ip: str = "127.0.0.1") -> list[EtcdServer]:
    """``members`` etcd processes forming one cluster on ``ip`` (free ports,
    a data dir each), started together and ready; the caller stops them."""
    servers = [EtcdServer(base / f"m{i}", lab=lab, netns=netns, ip=ip) for i in range(members)]
    initial = ",".join(f"{s.name}={s.peer_url}" for s in servers)
    for s in servers:
        s.initial_cluster, s.cluster_token = initial, servers[0].name
    try:
        for s in servers:
            s.launch()
        for s in servers:
            s.wait_ready(30.0)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd server for the module using it; stopped at its end."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
