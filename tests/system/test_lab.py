"""Lab and netlink wrapper against real network namespaces (root only).

Every test uses its own lab name, so its namespaces are ``uvx-t<hex>-*``;
the fixture tears the lab down even when the test fails and then checks
that nothing of it is left. Traffic goes only to addresses inside
namespaces these tests made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import root, unique_name
from uvxlan import netlink
from uvxlan.errors import ConfigError, LabError, NetlinkError
from uvxlan.lab import netns as labmod

pytestmark = root


def _ping(the_lab: labmod.Lab, netns: str, address: str, *extra: str) -> bool:
    assert shutil.which("ping"), "ping (Debian package iputils-ping) is required"
    done = the_lab.run(netns, ["ping", "-c1", "-W1", *extra, address], timeout=10)
    return done.returncode == 0


def _ul0_ipv4(netns: str) -> list[tuple[str, int]]:
    # ul0 also has an IPv6 link-local address; the lab assigns only IPv4
    return [(a, p) for ifname, a, p in netlink.addresses(netns) if ifname == "ul0" and ":" not in a]


# --- up / down ----------------------------------------------------------------


def test_up_builds_hosts_on_one_bridge(lab: labmod.Lab) -> None:
    hosts = lab.up(3)

    assert [h.name for h in hosts] == ["h1", "h2", "h3"]
    assert [h.underlay_ip for h in hosts] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    assert sorted(lab.namespaces()) == sorted(
        [lab.underlay_netns] + [f"{lab.prefix}h{i}" for i in (1, 2, 3)]
    )
    for h in hosts:
        assert h.netns == f"{lab.prefix}{h.name}"
        assert _ul0_ipv4(h.netns) == [(h.underlay_ip, 24)]
        info = netlink.link_info("ul0", h.netns)
        assert info["mtu"] == 1500
        assert info["up"] is True
        assert netlink.link_info("lo", h.netns)["up"] is True
        assert lab.host(h.name) == h
    # the bridge-side ends sit on br0 in the underlay, not in the root netns
    for i in (1, 2, 3):
        assert netlink.link_index(f"veth-h{i}", lab.underlay_netns) is not None
        assert netlink.link_index(f"tmp-h{i}", lab.underlay_netns) is None
    assert netlink.link_info("br0", lab.underlay_netns)["up"] is True

    assert _ping(lab, hosts[0].netns, hosts[1].underlay_ip)
    assert _ping(lab, hosts[1].netns, hosts[2].underlay_ip)
    assert _ping(lab, hosts[2].netns, hosts[0].underlay_ip)

    # the ping check can fail: with h2's ul0 down h2 is unreachable
    netlink.link_configure("ul0", hosts[1].netns, up=False)
    assert not _ping(lab, hosts[0].netns, hosts[1].underlay_ip)


def test_up_with_jumbo_mtu_carries_full_size_frames(lab: labmod.Lab) -> None:
    jumbo = labmod.Lab(lab.name, subnet="10.88.5.0/29", mtu=9000)
    h1, h2 = jumbo.up(2)

    assert h1.underlay_ip == "10.88.5.1"
    assert netlink.link_info("ul0", h1.netns)["mtu"] == 9000
    assert _ul0_ipv4(h2.netns) == [("10.88.5.2", 29)]
    # 8972 + 28 bytes of headers = 9000, with fragmentation forbidden
    assert _ping(jumbo, h1.netns, h2.underlay_ip, "-s", "8972", "-M", "do")


def test_state_file_and_load(lab: labmod.Lab) -> None:
    hosts = lab.up(2)

    assert os.path.exists(lab.state_path)
    loaded = labmod.Lab.load(lab.name)
    assert loaded.subnet == "10.77.0.0/24"
    assert loaded.hosts() == hosts
    assert loaded.host("h2").underlay_ip == "10.77.0.2"


def test_up_refuses_an_existing_lab(lab: labmod.Lab) -> None:
    lab.up(1)
    with pytest.raises(LabError, match="already exists"):
        lab.up(1)
    with pytest.raises(LabError, match="already exists"):
        labmod.Lab(lab.name).up(2)


def test_down_removes_everything_and_is_repeatable(lab: labmod.Lab) -> None:
    lab.up(3)
    lab.add_container("c1")
    assert len(lab.namespaces()) == 5

    lab.down()

    assert lab.namespaces() == []
    assert not os.path.exists(lab.state_path)
    lab.down()  # twice is fine
    with pytest.raises(LabError, match="not up"):
        labmod.Lab.load(lab.name)


def test_down_without_state_file_still_removes_namespaces(lab: labmod.Lab) -> None:
    lab.up(2)
    lab.add_container("web")
    os.unlink(lab.state_path)  # as after a crash

    labmod.Lab(lab.name).down()

    assert lab.namespaces() == []


def test_down_leaves_other_labs_alone(lab: labmod.Lab) -> None:
    other = labmod.Lab(unique_name())
    try:
        other.up(1)
        lab.up(1)
        lab.down()
        assert lab.namespaces() == []
        assert len(other.namespaces()) == 2
    finally:
        other.down()
    assert other.namespaces() == []


def test_context_manager_downs_on_exit() -> None:
    name = unique_name()
    try:
        with labmod.Lab(name) as the_lab:
            the_lab.up(1)
            assert len(the_lab.namespaces()) == 2
        assert labmod.Lab(name).namespaces() == []
    finally:
        labmod.Lab(name).down()


# --- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "Bad"},
        {"name": "has-dash"},
        {"name": ""},
        {"name": "a" * 13},
        {"subnet": "nonsense"},
        {"subnet": "10.77.0.1/24"},  # host bits set
        {"subnet": "fd00::/64"},
        {"mtu": 10},
        {"mtu": 70000},
    ],
)
def test_bad_lab_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(LabError) as info:
        labmod.Lab(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("subnet", "hosts"),
    [("10.77.0.0/24", 0), ("10.77.0.0/24", 251), ("10.77.0.0/30", 3)],
)
def test_bad_host_counts(lab: labmod.Lab, subnet: str, hosts: int) -> None:
    with pytest.raises(LabError):
        labmod.Lab(lab.name, subnet=subnet).up(hosts)
    assert lab.namespaces() == []


def test_bad_names_after_up(lab: labmod.Lab) -> None:
    lab.up(1)
    with pytest.raises(LabError, match="no host"):
        lab.host("h9")
    with pytest.raises(LabError, match="no container"):
        lab.container_netns("nope")
    for bad in ("ul", "h1", "Has-Caps", "", "a/b"):
        with pytest.raises(LabError):
            lab.add_container(bad)
    with pytest.raises(LabError, match="not part of lab"):
        lab.run("some-other-netns", ["true"])


def test_load_of_missing_lab() -> None:
    with pytest.raises(LabError, match="not up"):
        labmod.Lab.load(unique_name())


# --- containers and processes -------------------------------------------------


def test_add_container_makes_netns_with_lo_up(lab: labmod.Lab) -> None:
    lab.up(1)
    ns = lab.add_container("c1")

    assert ns == f"{lab.prefix}c1"
    assert netlink.netns_exists(ns)
    assert lab.container_netns("c1") == ns
    assert labmod.Lab.load(lab.name).containers() == {"c1": ns}
    assert netlink.link_info("lo", ns)["up"] is True
    assert {ifname for ifname, _, _ in netlink.addresses(ns)} == {"lo"}
    links = lab.run(ns, ["ip", "-o", "link"], check=True).stdout.splitlines()
    assert len(links) == 1  # empty apart from lo
    with pytest.raises(LabError, match="already exists"):
        lab.add_container("c1")


def test_run_reports_exit_status(lab: labmod.Lab) -> None:
    h1 = lab.up(1)[0]
    done = lab.run(h1.netns, ["sh", "-c", "echo hi; exit 3"])
    assert (done.returncode, done.stdout) == (3, "hi\n")
    with pytest.raises(LabError, match="exited with 3"):
        lab.run(h1.netns, ["sh", "-c", "exit 3"], check=True)
    with pytest.raises(LabError, match="timed out"):
        lab.run(h1.netns, ["sleep", "5"], timeout=0.2)
    # the command really runs inside the host netns
    assert "ul0" in lab.run(h1.netns, ["ip", "-o", "link"], check=True).stdout


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_down_kills_only_recorded_processes(lab: labmod.Lab) -> None:
    h1, h2 = lab.up(2)
    recorded = lab.spawn(h1.netns, ["sleep", "60"])
    # started inside the lab but never recorded: down must not touch it
    stranger = subprocess.Popen(["ip", "netns", "exec", h2.netns, "sleep", "60"])
    try:
        # Until ip has entered h2 and become sleep (down would otherwise
        # remove h2 before ip opened it).
        deadline = time.monotonic() + 10
        while _comm(stranger.pid) != "sleep":
            assert time.monotonic() < deadline, "ip netns exec did not start sleep"
            time.sleep(0.02)
        lab.down()
        assert recorded.wait(timeout=5) is not None
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        recorded.kill()
        recorded.wait()


def test_down_skips_a_recycled_pid(lab: labmod.Lab) -> None:
    h1 = lab.up(1)[0]
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        lab.record_pid(h1.netns, bystander.pid)
        # pretend the recorded process was an older one with the same pid
        state = lab._state()
        state["pids"][0]["starttime"] -= 1
        lab._write_state(state)
        lab.down()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# --- CLI entry points ---------------------------------------------------------


def test_cli_round_trip(lab: labmod.Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert labmod.cli_up(lab.name, 2, "10.77.0.0/24", 1500) == 0
    assert f"{lab.prefix}h2  10.77.0.2" in capsys.readouterr().out

    assert labmod.cli_container_add(lab.name, "db") == 0
    assert f"{lab.prefix}db" in capsys.readouterr().out

    assert labmod.cli_status(lab.name) == 0
    out = capsys.readouterr().out
    assert f"h1  {lab.prefix}h1  10.77.0.1" in out
    assert f"db  {lab.prefix}db" in out

    assert labmod.cli_up(lab.name, 2, "10.77.0.0/24", 1500) == 1
    err = capsys.readouterr().err
    assert err.startswith("uvxlan: error: ")
    assert "already exists" in err
    assert err.count("\n") == 1

    assert labmod.cli_down(lab.name) == 0
    assert "removed 4 namespaces" in capsys.readouterr().out
    assert labmod.cli_status(lab.name) == 1
    assert "not up" in capsys.readouterr().err


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert labmod.cli_up("BAD NAME", 2, "10.77.0.0/24", 1500) == 1
    assert labmod.cli_up(unique_name(), 2, "10.77.0.0/31", 1500) == 1
    assert labmod.cli_container_add(unique_name(), "c1") == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("uvxlan: error: ") for line in lines)


# --- netlink wrapper ----------------------------------------------------------


def test_link_move_and_configure_into_container(lab: labmod.Lab) -> None:
    h1 = lab.up(1)[0]
    c1 = lab.add_container("c1")
    netlink.veth_create("c1-host", "c1-tmp", netns=h1.netns)

    netlink.link_move("c1-tmp", c1, "eth0", netns=h1.netns)
    netlink.link_configure(
        "eth0", c1, mac="02:00:00:aa:bb:01", mtu=1450, addresses=["10.200.0.2/24"]
    )
    netlink.link_configure("c1-host", h1.netns, mtu=1450, addresses=["10.200.0.1/24"])

    assert netlink.link_index("c1-tmp", h1.netns) is None
    assert netlink.link_index("eth0", h1.netns) is None
    assert netlink.link_index("eth0", c1) is not None
    assert netlink.link_info("eth0", c1) == {
        "mac": "02:00:00:aa:bb:01",
        "mtu": 1450,
        "up": True,
    }
    assert ("eth0", "10.200.0.2", 24) in netlink.addresses(c1)
    # configuring again is harmless and adds nothing twice
    netlink.link_configure("eth0", c1, addresses=["10.200.0.2/24"])
    assert netlink.addresses(c1).count(("eth0", "10.200.0.2", 24)) == 1

    netlink.route_add_default("10.200.0.1", c1)
    default = [r for r in netlink.routes(c1) if r["dst"] == "0.0.0.0/0"]
    assert default == [
        {
            "family": 4,
            "dst": "0.0.0.0/0",
            "gateway": "10.200.0.1",
            "dev": "eth0",
            "prefsrc": None,
            "table": 254,
        }
    ]
    with pytest.raises(NetlinkError, match="already exists"):
        netlink.route_add_default("10.200.0.1", c1)
    assert _ping(lab, c1, "10.200.0.1")


def test_link_move_refuses_a_taken_name_before_moving(lab: labmod.Lab) -> None:
    h1 = lab.up(1)[0]
    c1 = lab.add_container("c1")
    netlink.veth_create("a0", "a1", netns=c1)  # "a0" now taken in c1
    netlink.veth_create("b0", "b1", netns=h1.netns)

    with pytest.raises(NetlinkError, match=f"'a0' already exists in netns '{c1}'"):
        netlink.link_move("b1", c1, "a0", netns=h1.netns)

    assert netlink.link_index("b1", h1.netns) is not None
    assert netlink.link_index("b1", c1) is None


def test_netlink_errors_name_the_object(lab: labmod.Lab) -> None:
    missing = f"{lab.prefix}missing"
    with pytest.raises(NetlinkError, match=f"netns '{missing}' does not exist"):
        netlink.link_index("lo", missing)
    assert not netlink.netns_exists(missing)  # the lookup did not create it
    netlink.netns_remove(missing)  # absent: fine

    h1 = lab.up(1)[0]
    with pytest.raises(NetlinkError, match=f"netns '{h1.netns}' already exists"):
        netlink.netns_create(h1.netns)
    with pytest.raises(NetlinkError, match=f"'ul0' already exists in netns '{h1.netns}'"):
        netlink.veth_create("ul0", "x1", netns=h1.netns)
    with pytest.raises(NetlinkError, match=f"'nope0' does not exist in netns '{h1.netns}'"):
        netlink.link_info("nope0", h1.netns)
    netlink.link_delete("nope0", h1.netns)  # absent: fine
    with pytest.raises(NetlinkError, match="not on any connected network"):
        netlink.route_add_default("192.0.2.1", h1.netns)
    with pytest.raises(ConfigError):
        netlink.link_configure("ul0", h1.netns, addresses=["10.0.0.1"])
    with pytest.raises(ConfigError):
        netlink.link_configure("ul0", h1.netns, mac="not-a-mac")
    with pytest.raises(ConfigError):
        netlink.link_index("name-longer-than-15", h1.netns)
    with pytest.raises(ConfigError):
        netlink.netns_create("../escape")


def test_link_delete_removes_both_veth_ends(lab: labmod.Lab) -> None:
    h1 = lab.up(1)[0]
    netlink.veth_create("d0", "d1", netns=h1.netns)
    netlink.link_delete("d0", h1.netns)
    assert netlink.link_index("d0", h1.netns) is None
    assert netlink.link_index("d1", h1.netns) is None


def test_netlink_works_inside_a_running_event_loop(lab: labmod.Lab) -> None:
    import asyncio

    h1 = lab.up(1)[0]

    async def query() -> int | None:
        return netlink.link_index("ul0", h1.netns)

    assert asyncio.run(query()) is not None


def test_netns_create_neither_forks_nor_moves_the_caller() -> None:
    """The namespace is unshared on a thread of its own: the caller's netns
    is untouched, no child process is made, and the new netns is new."""
    name = unique_name()
    mine = os.stat("/proc/thread-self/ns/net").st_ino
    watching, forks = [True], []
    # No unregister exists: the hook outlives the test, inert once watching ends.
    os.register_at_fork(before=lambda: forks.append(1) if watching[0] else None)
    try:
        netlink.netns_create(name)
        watching[0] = False
        assert forks == []
        assert os.stat("/proc/thread-self/ns/net").st_ino == mine
        assert os.stat(f"{netlink.NETNS_DIR}/{name}").st_ino != mine
        assert netlink.link_info("lo", name)["up"] is False
        done = subprocess.run(["ip", "netns", "exec", name, "ip", "-o", "link"],
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0 and "lo:" in done.stdout
    finally:
        watching[0] = False
        netlink.netns_remove(name)
    assert not netlink.netns_exists(name)


@pytest.mark.parametrize("failure", [OSError(1, "Operation not permitted"),
                                     RuntimeError("can't start new thread")])
def test_netns_create_failure_leaves_no_mount_point(monkeypatch: pytest.MonkeyPatch,
                                                    failure: Exception) -> None:
    name = unique_name()

    def fail(path: str) -> None:
        assert os.path.exists(path)      # made first, so it must be removed
        raise failure

    monkeypatch.setattr(netlink, "_bind_new_netns", fail)
    with pytest.raises(NetlinkError, match=f"cannot create netns '{name}'") as caught:
        netlink.netns_create(name)
    assert "\n" not in str(caught.value)
    assert not os.path.exists(f"{netlink.NETNS_DIR}/{name}")
