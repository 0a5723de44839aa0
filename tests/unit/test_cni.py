"""uvxlan-cni without root: the environment and the network config as the
spec defines them, each refusal's CNI code, the names it gives endpoints,
the ADD result per spec version, STATUS against a fake agent socket, DEL
and GC against a real SQLite store in tmp_path (hosts and endpoints
written as the agents and ``uvxlan attach`` write them).  The whole
plugin, executed by a libcni-exact runner with agents, netns and podman,
is tests/system/test_cni.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uvxlan import cluster, cni
from uvxlan import validate as rules
from uvxlan.cluster import HostRecord
from uvxlan.errors import (
    ClusterError,
    CniError,
    ConfigError,
    StoreDenied,
    StoreUnavailable,
)
from uvxlan.store import open_store

ROOT = Path(__file__).resolve().parents[2]
CID = "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755"


def conf(**extra: Any) -> bytes:
    return json.dumps({"cniVersion": "1.1.0", "name": "net1", "type": "uvxlan-cni",
                       "agent": "h1", **extra}).encode()


def env(command: str, **extra: str) -> dict[str, str]:
    base = {"CNI_COMMAND": command, "CNI_CONTAINERID": CID, "CNI_NETNS": "/run/netns/c1",
            "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": "/usr/lib/cni"}
    return {**base, **extra}


def code_of(command: str, data: bytes, **env_extra: str) -> tuple[int, dict[str, Any]]:
    rc, obj = cni.run_plugin(env(command, **env_extra), data)
    assert rc == 1 and obj is not None
    assert set(obj) <= {"cniVersion", "code", "msg", "details"}
    assert "\n" not in obj["msg"]
    return int(obj["code"]), obj


# --- The environment ------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "code", "names"), [
    ({"CNI_COMMAND": "ATTACH"}, 4, "CNI_COMMAND"),
    ({"CNI_COMMAND": ""}, 4, "CNI_COMMAND"),
    ({"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "-x"}, 4, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": "a-very-long-ifname"}, 4, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth/0"}, 4, "CNI_IFNAME"),
    ({"CNI_NETNS": ""}, 4, "CNI_NETNS"),
    ({"CNI_NETNS": "c1"}, 4, "CNI_NETNS"),
    ({"CNI_ARGS": "IP"}, 4, "CNI_ARGS"),
])
def test_a_bad_environment_is_code_4_naming_the_variable(
        extra: dict[str, str], code: int, names: str) -> None:
    got, obj = code_of("ADD", conf(), **extra)
    assert got == code and names in obj["msg"]


def test_del_needs_no_netns_and_version_status_gc_no_container() -> None:
    assert cni.parse_env(env("DEL", CNI_NETNS="")).netns == ""
    for command in ("VERSION", "STATUS", "GC"):
        inv = cni.parse_env({"CNI_COMMAND": command})
        assert inv.command == command and inv.container_id == ""


def test_cni_args_are_key_value_pairs_others_ignored() -> None:
    inv = cni.parse_env(env("ADD", CNI_ARGS="IgnoreUnknown=1;IP=10.0.0.9;K8S_POD_NAME=a"))
    assert inv.args == {"IgnoreUnknown": "1", "IP": "10.0.0.9", "K8S_POD_NAME": "a"}


# --- The network config -------------------------------------------------------------


def test_a_minimal_config_takes_the_defaults() -> None:
    c = cni.parse_config(json.dumps({"cniVersion": "1.0.0", "name": "net1",
                                     "type": "uvxlan-cni"}).encode(), "ADD")
    assert (c.network, c.agent, c.store, c.control_dir, c.timeout) == (
        "net1", None, "sqlite:///var/lib/uvxlan/state.db", "/run/uvxlan", 30.0)


def test_every_uvxlan_key_and_the_spec_keys_are_read() -> None:
    c = cni.parse_config(conf(network="web", store="etcd://127.0.0.1:2379",
                              controlDir="/tmp/x", timeout=5, disableCheck=False,
                              cniVersions=["1.0.0", "1.1.0"],
                              capabilities={"ips": True, "mac": True},
                              runtimeConfig={"ips": ["10.0.0.7/24"],
                                             "mac": "02:00:00:00:00:07"},
                              dns={"nameservers": ["10.0.0.1"]},
                              args={"cni": {}}, **{"cni.dev/future": 1}), "ADD")
    assert (c.network, c.agent, c.store, c.control_dir, c.timeout) == (
        "web", "h1", "etcd://127.0.0.1:2379", "/tmp/x", 5.0)
    assert (c.ip, c.mac, c.dns) == ("10.0.0.7/24", "02:00:00:00:00:07",
                                    {"nameservers": ["10.0.0.1"]})


def test_an_unknown_key_is_code_2_with_its_key_and_value() -> None:
    code, obj = code_of("ADD", conf(bridge="cni0"))
    assert code == 2 and "'bridge'" in obj["msg"] and '"cni0"' in obj["msg"]
    code, obj = code_of("ADD", conf(big="x" * 10000))
    assert code == 2 and len(obj["msg"]) < 200


def test_ipam_is_refused_the_store_hands_out_addresses() -> None:
    code, obj = code_of("ADD", conf(ipam={"type": "host-local"}))
    assert code == 2 and "ipam" in obj["msg"] and "host-local" in obj["msg"]


def test_a_capability_uvxlan_cannot_serve_is_code_2() -> None:
    code, obj = code_of("ADD", conf(capabilities={"portMappings": True}))
    assert code == 2 and "portMappings" in obj["msg"]
    # One switched off is no request.
    cni.parse_config(conf(capabilities={"portMappings": False}), "ADD")


@pytest.mark.parametrize("version", ["0.4.0", "1.2.0", None, 1])
def test_an_unsupported_version_is_code_1(version: object) -> None:
    code, obj = code_of("ADD", json.dumps({"cniVersion": version, "name": "n",
                                           "type": "uvxlan-cni"}).encode())
    assert code == 1 and "1.0.0, 1.1.0" in obj["msg"]


@pytest.mark.parametrize("data", [b"", b"{", b"[1]", b'"x"', b"[" * 100000])
def test_stdin_that_is_no_json_object_is_code_6(data: bytes) -> None:
    assert code_of("ADD", data)[0] == 6


@pytest.mark.parametrize("extra", [
    {"name": "a/b"}, {"name": 5}, {"network": "x y"}, {"agent": ""}, {"store": 1},
    {"controlDir": "run/uvxlan"}, {"timeout": 0}, {"timeout": "5"}, {"timeout": True},
    {"timeout": 1e9}, {"disableCheck": "no"}, {"dns": []}, {"prevResult": []},
    {"runtimeConfig": {"ips": "10.0.0.2"}}, {"runtimeConfig": {"ips": ["10.0.0.2",
                                                                       "10.0.0.3"]}},
    {"runtimeConfig": {"mac": 5}}, {"runtimeConfig": {"ips": ["fd00::2/64"]}}, {"type": 1},
])
def test_a_bad_value_is_code_7(extra: dict[str, Any]) -> None:
    code, obj = code_of("ADD", conf(**extra))
    assert code == 7, obj


def test_type_and_name_are_required() -> None:
    for key in ("name", "type"):
        data = json.loads(conf())
        del data[key]
        code, obj = code_of("ADD", json.dumps(data).encode())
        assert code == 7 and key in obj["msg"]


def test_gc_reads_valid_attachments_under_either_name_and_never_none() -> None:
    items = [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}]
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        c = cni.parse_config(conf(**{key: items}), "GC")
        assert c.valid_attachments == {("a", "eth0"), ("b", "net1")}
    assert cni.parse_config(conf(**{"cni.dev/valid-attachments": []}),
                            "GC").valid_attachments == frozenset()
    # A missing or malformed list must not mean "collect everything".
    for bad in ({}, {"cni.dev/valid-attachments": {}},
                {"cni.dev/valid-attachments": [{"containerID": "a"}]}):
        code, _ = code_of("GC", conf(**bad))
        assert code == 7


# --- Names and results --------------------------------------------------------------


def test_endpoint_names_are_stable_valid_and_tell_attachments_apart() -> None:
    name = cni.endpoint_name("net1", CID, "eth0")
    assert name == cni.endpoint_name("net1", CID, "eth0")
    assert rules.name(name) == name and name.startswith(f"cni-{cni.network_tag('net1')}-3f69")
    others = {cni.endpoint_name("net1", CID, "eth1"), cni.endpoint_name("net2", CID, "eth0"),
              cni.endpoint_name("net1", CID[:-1] + "6", "eth0")}
    assert name not in others and len(others) == 3
    longest = cni.endpoint_name("n" * 64, "c" * 1000, "e" * 15)
    assert rules.name(longest) == longest


def test_made_here_knows_this_networks_endpoints_only() -> None:
    assert cni.made_here("net1", cni.endpoint_name("net1", "abc", "eth0"))
    assert not cni.made_here("net2", cni.endpoint_name("net1", "abc", "eth0"))
    for other in ("c1", "web", f"cni-{cni.network_tag('net1')}-abc", "cni-net1-abc-eth0"):
        assert not cni.made_here("net1", other)


def test_netns_paths_under_run_netns_become_names() -> None:
    assert cni.netns_ref("/run/netns/c1") == "c1"
    assert cni.netns_ref("/var/run/netns/cni-1234") == "cni-1234"
    assert cni.netns_ref("/proc/42/ns/net") == "/proc/42/ns/net"
    assert cni.netns_ref("/run/netns/a/b") == "/run/netns/a/b"


def _result(version: str, **extra: Any) -> dict[str, Any]:
    c = cni.parse_config(conf(cniVersion=version, **extra), "ADD")
    inv = cni.parse_env(env("ADD"))
    return cni.build_result(c, inv, mac="02:42:0a:00:00:02", ip="10.0.0.2/24", mtu=1450)


def test_add_result_1_1_0_has_the_interface_with_mtu_and_its_address() -> None:
    assert _result("1.1.0") == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "02:42:0a:00:00:02", "mtu": 1450,
                        "sandbox": "/run/netns/c1"}],
        "ips": [{"address": "10.0.0.2/24", "interface": 0}],
        "routes": []}


def test_add_result_1_0_0_has_no_mtu_field_and_carries_dns() -> None:
    r = _result("1.0.0", dns={"nameservers": ["10.0.0.1"]})
    assert "mtu" not in r["interfaces"][0] and r["cniVersion"] == "1.0.0"
    assert r["dns"] == {"nameservers": ["10.0.0.1"]}


def test_add_after_another_plugin_keeps_its_result() -> None:
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "lo", "sandbox": "/run/netns/c1"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "routes": [{"dst": "192.0.2.0/24"}], "dns": {"search": ["lab"]}}
    r = _result("1.1.0", prevResult=prev)
    assert [i["name"] for i in r["interfaces"]] == ["lo", "eth0"]
    assert r["ips"][1] == {"address": "10.0.0.2/24", "interface": 1}
    assert r["routes"] == prev["routes"] and r["dns"] == prev["dns"]


@pytest.mark.parametrize(("exc", "code"), [
    (StoreUnavailable("down"), 11), (StoreDenied("no"), 5), (ConfigError("bad"), 7),
    (ClusterError("taken"), 100), (CniError(102, "x"), 102),
])
def test_uvxlan_errors_map_to_cni_codes(exc: Exception, code: int) -> None:
    assert cni.as_cni_error(exc).code == code   # type: ignore[arg-type]


def test_version_answers_in_the_version_asked_whatever_else() -> None:
    for asked in ("1.1.0", "0.4.0"):
        rc, obj = cni.run_plugin({"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy"},
                                 json.dumps({"cniVersion": asked}).encode())
        assert rc == 0 and obj == {"cniVersion": asked, "supportedVersions": ["1.0.0", "1.1.0"]}


# --- STATUS against a fake agent ----------------------------------------------------


class FakeAgent:
    """Answers "status" as an agent does, with the given fields."""

    def __init__(self, path: Path, status: dict[str, Any]) -> None:
        self.status = status
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.makefile("rb").readline()
                conn.sendall(json.dumps(self.status).encode() + b"\n")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "run"
    d.mkdir()
    yield d


def test_status_agent_down_is_51_not_synced_is_50(control: Path) -> None:
    data = conf(controlDir=str(control), store=f"sqlite://{control}/none.db")
    code, obj = code_of("STATUS", data)
    assert code == 51 and "agent h1 is not running" in obj["msg"]
    agent = FakeAgent(control / "h1.sock", {"ready": True, "name": "h1", "synced": False})
    try:
        code, obj = code_of("STATUS", data)
        assert code == 50 and "synced" in obj["msg"]
        agent.status = {"ready": True, "name": "h1"}          # config file only
        code, obj = code_of("STATUS", data)
        assert code == 50 and "without a store" in obj["msg"]
    finally:
        agent.close()


def test_without_agent_key_the_one_running_agent_is_used(control: Path) -> None:
    data = json.dumps({"cniVersion": "1.1.0", "name": "net1", "type": "uvxlan-cni",
                       "controlDir": str(control)}).encode()
    code, obj = code_of("STATUS", data)
    assert code == 7 and "no agent" in obj["msg"]
    agent = FakeAgent(control / "hx.sock", {"ready": True, "synced": False})
    other = None
    try:
        assert code_of("STATUS", data)[1]["msg"] == "agent hx has not synced with the store yet"
        other = FakeAgent(control / "hy.sock", {"ready": True})
        code, obj = code_of("STATUS", data)
        assert code == 7 and "several run here: hx, hy" in obj["msg"]
    finally:
        agent.close()
        if other is not None:
            other.close()


# --- DEL and GC on a real SQLite store ----------------------------------------------


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def _seed(url: str, attachments: list[tuple[str, str, str, str]]) -> None:
    """Network net1, hosts h1 and h2, and endpoints (name, host, cid, ifname);
    a cid of "" is an endpoint a user attached by name."""
    async def body() -> None:
        s = open_store(url)
        try:
            await cluster.create_network(s, "net1")
            for i, h in enumerate(("h1", "h2")):
                rec = HostRecord(name=h, underlay=f"192.0.2.{i + 1}", port=4789, mtu=1500,
                                 started=time.time())
                await s.put(cluster.host_key(h), cluster.encode(rec))
            for name, host, cid, ifname in attachments:
                ep = cni.endpoint_name("net1", cid, ifname) if cid else name
                await cluster.attach(s, "net1", host=host, netns=f"ns-{name}", name=ep)
        finally:
            await s.close()
    _run(body())


def _endpoints(url: str) -> set[str]:
    async def body() -> set[str]:
        s = open_store(url)
        try:
            return {r.name for r, _ in await cluster.list_endpoints(s, "net1")}
        finally:
            await s.close()
    return set(_run(body()))


def test_del_removes_the_attachment_and_again_is_success(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    _seed(url, [("a", "h1", "cid-a", "eth0"), ("b", "h1", "cid-b", "eth0")])
    data = conf(store=url)
    for _ in range(2):
        rc, obj = cni.run_plugin(env("DEL", CNI_CONTAINERID="cid-a", CNI_NETNS=""), data)
        assert (rc, obj) == (0, None)
        assert _endpoints(url) == {cni.endpoint_name("net1", "cid-b", "eth0")}
    # A store never made: nothing to delete, and nothing made by the DEL.
    none = tmp_path / "never" / "state.db"
    assert cni.run_plugin(env("DEL"), conf(store=f"sqlite://{none}")) == (0, None)
    assert not none.parent.exists()


def test_gc_removes_only_this_networks_stale_endpoints_on_this_host(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    _seed(url, [("keep", "h1", "cid-keep", "eth0"), ("stale", "h1", "cid-stale", "eth0"),
                ("stale2", "h1", "cid-keep", "net1"),      # same container, other ifname
                ("h2s", "h2", "cid-h2", "eth0"),           # another host's runtime's
                ("byhand", "h1", "", "")])                 # a user's `uvxlan attach`
    valid = [{"containerID": "cid-keep", "ifname": "eth0"}]
    rc, obj = cni.run_plugin({"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"},
                             conf(store=url, **{"cni.dev/valid-attachments": valid}))
    assert (rc, obj) == (0, None)
    assert _endpoints(url) == {cni.endpoint_name("net1", "cid-keep", "eth0"),
                               cni.endpoint_name("net1", "cid-h2", "eth0"), "byhand"}


def test_add_to_a_missing_netns_is_code_3(tmp_path: Path) -> None:
    code, obj = code_of("ADD", conf(store=f"sqlite://{tmp_path}/s.db"),
                        CNI_NETNS=str(tmp_path / "gone"))
    assert code == 3 and "gone" in obj["msg"]


# --- The executable -----------------------------------------------------------------


def test_the_launcher_runs_the_plugin_from_any_directory(tmp_path: Path) -> None:
    path = Path(cni.install(str(tmp_path / "bin")))
    assert path.name == "uvxlan-cni" and stat.S_IMODE(path.stat().st_mode) == 0o755
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    done = subprocess.run([str(path)], input=b'{"cniVersion":"1.0.0"}', cwd="/",
                          env={"CNI_COMMAND": "VERSION", "PATH": os.defpath},
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"cniVersion": "1.0.0",
                                       "supportedVersions": ["1.0.0", "1.1.0"]}


def test_an_error_is_json_on_stdout_and_one_line_on_stderr() -> None:
    done = subprocess.run([sys.executable, "-m", "uvxlan.cni"], input=b"{", cwd=ROOT,
                          env={**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x",
                               "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"},
                          capture_output=True, timeout=30)
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == 6
    assert done.stderr.decode().strip() == "uvxlan-cni: network config on stdin is not JSON"


def test_install_into_a_directory_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "uvxlan.cni", "install", "--dir",
                           str(blocker / "bin")], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and done.stderr.startswith("uvxlan-cni: error: cannot write")
    assert len(done.stderr.strip().splitlines()) == 1


def test_install_is_refused_where_another_user_could_change_what_root_runs(
        tmp_path: Path) -> None:
    # Runtimes run the plugin as root on every container start.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    with pytest.raises(ConfigError, match=r"not installed: .*shared is writable by its group"):
        cni.install(str(shared / "bin"))
    assert not (shared / "bin").exists()
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)                       # as /tmp: nobody replaces root's entries
    assert cni.unsafe_for_root([sticky]) is None
    if os.geteuid() == 0:                      # only root gives a file away
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        assert cni.unsafe_for_root([theirs / "uvxlan"]) == f"{theirs} belongs to uid 65534"
