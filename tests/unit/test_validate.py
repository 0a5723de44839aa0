"""One rule, one answer: a value is accepted or refused alike by the config
file's parser, the cluster's commands and record checks, and the netlink
wrapper, because they all ask ``uvxlan.validate``.  No root, no store."""

from __future__ import annotations

from typing import Any

import pytest

from uvxlan import cluster, netlink, validate
from uvxlan.cluster import EndpointRecord, HostRecord, NetworkRecord
from uvxlan.config import parse
from uvxlan.errors import ConfigError, RecordError
from uvxlan.proto import VNI_MAX


def config(network: dict[str, Any] | None = None,
           endpoint: dict[str, Any] | None = None) -> Any:
    net = {"name": "n", "vni": 5, **(network or {})}
    data: dict[str, Any] = {"host": {"underlay": "192.0.2.1"}, "network": [net]}
    if endpoint is not None:
        data["endpoint"] = [{"network": "n", "netns": "c1", "address": "10.0.0.2/24",
                             **endpoint}]
    return parse(data, "test")


def config_ok(**kw: Any) -> bool:
    try:
        config(**kw)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return False
    return True


def record_ok(record: HostRecord | NetworkRecord | EndpointRecord) -> bool:
    try:
        cluster.validate(record)
    except RecordError:
        return False
    return True


def rule_ok(rule: Any, value: object) -> bool:
    try:
        rule(value)
    except ConfigError:
        return False
    return True


def network_record(**kw: Any) -> NetworkRecord:
    fields = {"name": "n", "vni": 5, "subnet": "10.0.0.0/24", "gateway": "10.0.0.1",
              "mtu": 1450, **kw}
    return NetworkRecord(**fields)


def endpoint_record(**kw: Any) -> EndpointRecord:
    fields = {"name": "c1", "network": "n", "host": "h1", "netns": "c1", "ifname": "eth0",
              "mac": "02:42:0a:00:00:02", "ip": "10.0.0.2/24", **kw}
    return EndpointRecord(**fields)


@pytest.mark.parametrize("vni", [0, 1, 256, VNI_MAX, VNI_MAX + 1, -1, True, "5", 2.0])
def test_vni_one_rule(vni: object) -> None:
    expected = vni in validate.VNI
    assert rule_ok(validate.vni, vni) == expected
    assert config_ok(network={"vni": vni}) == expected
    assert record_ok(network_record(vni=vni)) == expected
    assert rule_ok(cluster.check_vni, vni) == expected


@pytest.mark.parametrize("mac", [
    "02:42:0a:00:00:02", "AA:BB:CC:00:11:22", "aa-bb-cc-00-11-22",
    "01:00:5e:00:00:01", "00:00:00:00:00:00", "aa:bb:cc:00:11", "zz:bb:cc:00:11:22",
    "aa:bb-cc:00:11:22", " 02:42:0a:00:00:02", 5,
])
def test_mac_one_rule(mac: object) -> None:
    expected = rule_ok(validate.mac, mac)
    assert config_ok(endpoint={"mac": mac}) == expected
    # A record holds the one form uvxlan writes, nothing else: the claim
    # checks compare MACs as text (AA:... must not pass for aa:...).
    assert record_ok(endpoint_record(mac=mac)) == (expected and validate.mac(mac) == mac)
    assert rule_ok(cluster.check_mac, mac) == expected
    if expected:
        # One normal form too: what the config file keeps is what attach stores.
        assert config(endpoint={"mac": mac}).endpoints[0].mac == cluster.check_mac(mac)


def test_mac_answers() -> None:
    assert validate.mac("AA-BB-CC-00-11-22") == "aa:bb:cc:00:11:22"
    for bad, why in [("01:00:5e:00:00:01", "multicast"), ("00:00:00:00:00:00", "all-zero"),
                     ("aa:bb:cc:00:11", "six hex bytes"), ("aa:bb-cc:00:11:22", "six hex")]:
        with pytest.raises(ConfigError, match=why):
            validate.mac(bad)


@pytest.mark.parametrize("netns", ["c1", "lab-h1", "", "a/b", ".", "..", "x" * 255,
                                   "x" * 256, "a\0b", "my ns",
                                   "/proc/42/ns/net", "/var/run/docker/netns/1a2b", "/",
                                   "//run/netns/x", "/run/netns/../x", "/run//netns/x",
                                   "/run/netns/x/", "/run/./netns", "/a\0b", "/" + "x" * 1024])
def test_netns_one_rule(netns: str) -> None:
    expected = rule_ok(validate.netns, netns)
    assert config_ok(endpoint={"netns": netns}) == expected
    assert record_ok(endpoint_record(netns=netns)) == expected
    assert rule_ok(netlink._check_netns, netns) == expected


@pytest.mark.parametrize("netns", ["/proc/42/ns/net", "/var/run/docker/netns/1a2b",
                                   "/run/netns/c1"])
def test_a_netns_path_is_an_endpoints_netns_but_never_a_name_uvxlan_makes(netns: str) -> None:
    assert validate.netns(netns) == netns
    assert not rule_ok(validate.netns_name, netns)
    assert not rule_ok(netlink._check_netns_name, netns)


@pytest.mark.parametrize("address", ["10.0.0.2/24", "10.0.0.2", "banana", "fd00::1/64",
                                     "10.0.0.256/24", "10.0.0.2/33"])
def test_address_one_rule(address: str) -> None:
    expected = rule_ok(validate.interface, address)
    assert config_ok(endpoint={"address": address}) == expected
    assert record_ok(endpoint_record(ip=address)) == expected


@pytest.mark.parametrize("name", ["net1", "a", "x" * 64, "x" * 65, "", "a/b", "net 1",
                                  ".", "..", "_x", "-x", ".x", "net\n", "ctr-1.a_b"])
def test_name_one_rule(name: str) -> None:
    """A network name in the config file and for ``network create``."""
    expected = rule_ok(validate.name, name)
    assert config_ok(network={"name": name}) == expected
    assert rule_ok(lambda v: cluster.check_name("network name", v), name) == expected


def test_names_an_older_uvxlan_made_can_still_be_looked_up() -> None:
    assert not rule_ok(validate.name, "_x")
    assert validate.is_key_component("_x")
    for unsafe in ("", ".", "..", "a/b", "x" * 65, 5):
        assert not validate.is_key_component(unsafe)


@pytest.mark.parametrize("ifname", ["eth0", "veth.a", "a-b_c", "x" * 15, "x" * 16, "",
                                    "a/b", "a b", "a:b", ".", "..", "eth@0"])
def test_ifname_one_rule(ifname: str) -> None:
    expected = rule_ok(validate.ifname, ifname)
    assert config_ok(endpoint={"ifname": ifname}) == expected
    assert rule_ok(netlink._check_ifname, ifname) == expected


@pytest.mark.parametrize("mtu", [67, 68, 1450, 65535, 65536, True, "1500"])
def test_network_mtu_one_rule(mtu: object) -> None:
    assert record_ok(network_record(mtu=mtu)) == (mtu in validate.MTU)


@pytest.mark.parametrize("port", [0, 1, 4789, 65535, 65536, True])
def test_port_one_rule(port: object) -> None:
    expected = port in validate.PORT
    host = HostRecord(name="h1", underlay="192.0.2.1", port=port)  # type: ignore[arg-type]
    assert record_ok(host) == expected
    file = {"host": {"underlay": "192.0.2.1", "port": port}}
    assert rule_ok(lambda d: parse(d), file) == expected


def test_messages_name_the_field_and_value() -> None:
    with pytest.raises(ConfigError) as caught:
        cluster.check_vni(0)
    assert str(caught.value) == f"vni 0 is out of range (1-{VNI_MAX})"
    with pytest.raises(ConfigError) as caught:
        config(network={"vni": 0})
    assert str(caught.value) == f"test: network 'n': vni: 0 is outside 1..{VNI_MAX}"
    with pytest.raises(ConfigError) as caught:
        config(network={"name": "a b"})
    assert str(caught.value) == f"test: network #1: name: 'a b': expected {validate.NAME_RULE}"
    with pytest.raises(ConfigError) as caught:
        cluster.check_name("network name", "a b")
    assert str(caught.value) == f"network name 'a b': expected {validate.NAME_RULE}"
    with pytest.raises(RecordError, match=r"^store key /k: not a valid NetworkRecord: vni 0"):
        cluster.validate(network_record(vni=0), "/k")


def test_subnet_rule() -> None:
    assert str(validate.subnet("10.1.0.0/16")) == "10.1.0.0/16"
    for bad, why in [("banana", "expected an IPv4 CIDR"), ("10.0.0.0", "expected an IPv4"),
                     ("fd00::/64", "only IPv4"), ("10.0.0.5/24", "did you mean 10.0.0.0/24"),
                     ("10.0.0.0/31", "/30 or shorter"), (None, "expected an IPv4 CIDR")]:
        with pytest.raises(ConfigError, match=why):
            validate.subnet(bad)


def test_bad_records_are_their_own_branch() -> None:
    """A record that does not decode is a RecordError: a ValueError (so
    the controller's skip clause keeps catching it), never a StoreError
    (a store failure is retried, a bad record skipped)."""
    from uvxlan.errors import ClusterError, StoreError, UvxlanError

    with pytest.raises(RecordError) as caught:
        cluster.decode(NetworkRecord, b"not json", "/uvxlan/networks/x")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UvxlanError)
    assert not isinstance(caught.value, StoreError)
    assert not issubclass(ClusterError, StoreError)
    assert "/uvxlan/networks/x" in str(caught.value)
