"""The underlay facts an agent and `network create` read (uvxlan.underlay):
the MTU settled against the underlay's interface, and the routes a chosen
subnet avoids.  Netlink is replaced by fakes where the answer must be
chosen; the loopback interface is read for real (no root needed)."""

from __future__ import annotations

import ipaddress

import pytest

from uvxlan import config, underlay
from uvxlan.errors import ConfigError
from uvxlan.netlink import RouteInfo

UNDERLAY = "192.0.2.1"


def agent(mtu: int | None = None) -> config.AgentConfig:
    host = {"underlay": UNDERLAY} if mtu is None else {"underlay": UNDERLAY, "mtu": mtu}
    return config.parse({"host": host}, "test")


def on_link(monkeypatch: pytest.MonkeyPatch, found: tuple[str, int] | None) -> None:
    monkeypatch.setattr(underlay, "link_mtu", lambda address, netns=None: found)


def test_the_file_says_whether_the_mtu_is_given() -> None:
    assert agent().derive_mtu
    assert agent().host.mtu == config.DatapathConfig.underlay_mtu    # until settled
    assert not agent(9000).derive_mtu
    over = config.parse({}, "agent", {"underlay": UNDERLAY, "mtu": 1400})
    assert not over.derive_mtu and over.host.mtu == 1400


def test_left_out_the_mtu_is_the_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    on_link(monkeypatch, ("ul0", 1400))
    cfg = underlay.settle_mtu(agent())
    assert cfg.host.mtu == 1400
    assert cfg.host.endpoint_mtu == 1350
    assert cfg.host.datapath().underlay_mtu == 1400
    on_link(monkeypatch, ("eth1", 9000))
    assert underlay.settle_mtu(agent()).host.mtu == 9000


def test_loopbacks_mtu_is_cut_to_the_largest_ip_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    on_link(monkeypatch, ("lo", 65536))
    assert underlay.settle_mtu(agent()).host.mtu == 65535


def test_an_interface_too_small_for_any_network_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    on_link(monkeypatch, ("ul0", 100))
    with pytest.raises(ConfigError, match=r"the MTU of ul0 \(100\), the interface of underlay "
                       r"192\.0\.2\.1, leaves less than 68 for a network"):
        underlay.settle_mtu(agent())


def test_a_given_mtu_larger_than_the_interfaces_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    on_link(monkeypatch, ("ul0", 1400))
    with pytest.raises(ConfigError, match=r"\[host\] mtu 1500 is larger than the MTU of ul0 "
                       r"\(1400\), the interface of underlay 192\.0\.2\.1"):
        underlay.settle_mtu(agent(1500))
    # Smaller than the interface's: the operator's choice stands.
    assert underlay.settle_mtu(agent(1300)).host.mtu == 1300


def test_an_address_on_no_interface_is_left_to_the_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    on_link(monkeypatch, None)
    cfg = agent()
    assert underlay.settle_mtu(cfg) is cfg


def test_loopback_is_read_for_real() -> None:
    found = underlay.link_mtu("127.0.0.1")
    assert found is not None and found[0] == "lo" and found[1] >= 1500
    assert underlay.link_mtu("192.0.2.254") is None


def route(dst: str, *, gateway: str | None = None, dev: str | None = "eth0",
          family: int = 4) -> RouteInfo:
    return RouteInfo(family=family, dst=dst, gateway=gateway, dev=dev, prefsrc=None, table=254)


def test_host_routes_leave_out_the_default_and_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(underlay.netlink, "routes", lambda netns=None: [
        route("0.0.0.0/0", gateway="192.0.2.254"),
        route("10.0.0.0/16", gateway="192.0.2.9", dev="tun0"),
        route("192.0.2.0/24"),
        route("10.9.0.0/24", dev=None),                 # a blackhole: no device
        route("fd00::/64", family=6),
    ])
    routes = underlay.host_routes()
    assert routes == {
        ipaddress.IPv4Network("10.0.0.0/16"): "10.0.0.0/16 via 192.0.2.9 dev tun0",
        ipaddress.IPv4Network("192.0.2.0/24"): "192.0.2.0/24 dev eth0",
        ipaddress.IPv4Network("10.9.0.0/24"): "10.9.0.0/24",
    }
    assert underlay.overlapping_route(ipaddress.IPv4Network("10.0.3.0/24"), routes) == \
        "10.0.0.0/16 via 192.0.2.9 dev tun0"
    assert underlay.overlapping_route(ipaddress.IPv4Network("10.1.0.0/24"), routes) is None
