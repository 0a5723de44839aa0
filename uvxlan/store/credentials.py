"""How uvxlan proves who it is to etcd: TLS (a CA to check the server, a
client certificate and key) and an etcd user with its password (RBAC).

Each setting is taken from the first of these that gives it:

1. a flag of the agent and of every cluster command (``--store-ca``, ...);
2. the store URL's query (``etcd://h:2379?ca=/etc/uvxlan/ca.pem&user=uvxlan``);
3. the environment (``UVXLAN_STORE_CA``, ...).

    setting        flag                   URL option      environment
    CA (PEM)       --store-ca FILE        ca=FILE         UVXLAN_STORE_CA
    client cert    --store-cert FILE      cert=FILE       UVXLAN_STORE_CERT
    client key     --store-key FILE       key=FILE        UVXLAN_STORE_KEY
    user           --store-user NAME      user=NAME       UVXLAN_STORE_USER
    password       --store-password-file  password_file=  UVXLAN_STORE_PASSWORD_FILE,
                                                          then UVXLAN_STORE_PASSWORD

A password is never taken from the command line or the URL: both show in
``ps`` and in shell history.  A file (first line; readable by its owner
only, else a warning) or the environment keeps it out of sight.

TLS is on for ``etcds://`` and whenever a CA, certificate or key is given;
without a CA, the system's trusted CAs check the server.  A password is
refused over plaintext unless every endpoint is on loopback.  The files are
read once, when the store is opened: restart the agent after replacing them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from uvxlan.errors import ConfigError

log = logging.getLogger("uvxlan.store")

# (field, flag, environment variable); the URL option is the field's name.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("ca", "--store-ca", "UVXLAN_STORE_CA"),
    ("cert", "--store-cert", "UVXLAN_STORE_CERT"),
    ("key", "--store-key", "UVXLAN_STORE_KEY"),
    ("user", "--store-user", "UVXLAN_STORE_USER"),
    ("password_file", "--store-password-file", "UVXLAN_STORE_PASSWORD_FILE"),
)
ENV_PASSWORD = "UVXLAN_STORE_PASSWORD"
URL_OPTIONS = frozenset(name for name, _, _ in SETTINGS)


@dataclass(frozen=True)
class StoreAuth:
    """The settings as given by flags (None: not given)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None

    def given(self) -> list[str]:
        """The flags that were given."""
        return [flag for name, flag, _ in SETTINGS if getattr(self, name) is not None]


@dataclass(frozen=True)
class EtcdCredentials:
    """What the etcd client presents; each file already read.  The
    ``*_file`` fields name where each came from, for error messages."""

    tls: bool = False
    ca: bytes | None = None
    ca_file: str | None = None
    cert: bytes | None = None
    cert_file: str | None = None
    key: bytes | None = field(default=None, repr=False)
    key_file: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    password_from: str | None = None


def resolve(url: str, *, tls: bool, hosts: Sequence[str], given: StoreAuth,
            query: Mapping[str, str], env: Mapping[str, str]) -> EtcdCredentials:
    """The credentials for an etcd store URL, from flags, the URL's query
    and the environment (in that order).  A missing, unreadable or empty
    file, a certificate without its key, a user without a password or a
    password over plaintext to another machine is a one-line ConfigError."""
    where = f"store {url}"
    chosen: dict[str, tuple[str, str]] = {}           # field -> (value, where from)
    for name, flag, var in SETTINGS:
        if getattr(given, name) is not None:
            chosen[name] = (str(getattr(given, name)), flag)
        elif name in query:
            chosen[name] = (query[name], f"URL option {name}")
        elif env.get(var):
            chosen[name] = (env[var], f"${var}")
    for value, source in chosen.values():
        if not value:
            raise ConfigError(f"{where}: {source} is empty")

    def read(name: str, what: str) -> tuple[bytes | None, str | None]:
        if name not in chosen:
            return None, None
        path, source = chosen[name]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {what} {path} ({source}): "
                              f"{exc.strerror}") from None
        if not data.strip():
            raise ConfigError(f"{where}: {what} {path} ({source}) is empty")
        return data, path

    ca, ca_file = read("ca", "CA file")
    cert, cert_file = read("cert", "client certificate")
    key, key_file = read("key", "client key")
    if (cert is None) != (key is None):
        have, missing = ("certificate", "key") if key is None else ("key", "certificate")
        raise ConfigError(f"{where}: a client {have} needs its {missing} too "
                          "(--store-cert and --store-key)")
    tls = tls or ca is not None or cert is not None

    user = chosen["user"][0] if "user" in chosen else None
    password, password_from = None, None
    if "password_file" in chosen:
        data, path = read("password_file", "password file")
        assert data is not None and path is not None
        password = data.decode("utf-8", "replace").splitlines()[0]
        password_from = f"file {path}"
        _warn_if_shared(path)
    elif env.get(ENV_PASSWORD):
        password, password_from = env[ENV_PASSWORD], f"${ENV_PASSWORD}"
    if user is not None and password is None:
        raise ConfigError(f"{where}: user {user!r} needs a password: --store-password-file, "
                          f"${SETTINGS[4][2]} or ${ENV_PASSWORD}")
    if password is not None and user is None:
        raise ConfigError(f"{where}: a password ({password_from}) without a user: "
                          "--store-user, URL option user or $UVXLAN_STORE_USER")
    if password is not None and not tls and not all(_loopback(h) for h in hosts):
        raise ConfigError(f"{where}: the password would cross the network in clear: "
                          "use TLS (etcds://, or a CA with --store-ca)")
    return EtcdCredentials(tls=tls, ca=ca, ca_file=ca_file, cert=cert, cert_file=cert_file,
                           key=key, key_file=key_file, user=user, password=password,
                           password_from=password_from)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _warn_if_shared(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("store: password file %s can be read by others (mode %o): "
                    "chmod 600 it", path, stat.S_IMODE(mode))
