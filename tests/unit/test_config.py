"""The typed host configuration: every default written once (the dataclass
field), bounds written once, errors as one line naming the field.  No root."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from uvxlan import config, control, proto, validate
from uvxlan.config import DatapathConfig, HostConfig, parse
from uvxlan.errors import ConfigError

UNDERLAY = "192.0.2.1"
HOST_FIELDS = {f.name: f for f in dataclasses.fields(HostConfig)}


def host(**keys: Any) -> HostConfig:
    return parse({"host": {"underlay": UNDERLAY, **keys}}, "test").host


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data, "test")
    message = str(caught.value)
    assert "\n" not in message
    return message


def host_error(**keys: Any) -> str:
    return error({"host": {"underlay": UNDERLAY, **keys}})


def test_a_minimal_file_gives_the_dataclass_defaults() -> None:
    assert host() == HostConfig(underlay=UNDERLAY)


def test_the_datapath_gets_the_same_defaults() -> None:
    assert HostConfig(underlay=UNDERLAY).datapath() == DatapathConfig(local_ip=UNDERLAY)
    # ...field by field, where the host configuration says it in its own units.
    h, dp = HostConfig(underlay=UNDERLAY), DatapathConfig(local_ip=UNDERLAY)
    assert h.port == dp.dst_port == proto.PORT_IANA
    assert h.src_ports == (dp.src_port_min, dp.src_port_max) \
        == (proto.SRC_PORT_MIN, proto.SRC_PORT_MAX)
    assert h.ageing * 1000 == dp.ageing_ms
    assert (h.learn_limit, h.batch, h.rx_linger_us) == \
        (dp.learn_limit, dp.batch, dp.rx_linger_us)
    assert (h.accept_reserved, h.udp_checksum) == (dp.accept_reserved, dp.udp_csum)
    assert h.mtu == dp.underlay_mtu


def test_datapath_carries_every_setting() -> None:
    h = host(port=8472, src_ports=[50000, 50010], ageing=7, learn_limit=0, batch=5,
             accept_reserved=True, udp_checksum=True, rx_linger_us=0, mtu=9000)
    assert h.datapath() == DatapathConfig(
        local_ip=UNDERLAY, dst_port=8472, src_port_min=50000, src_port_max=50010,
        ageing_ms=7000, learn_limit=0, batch=5, accept_reserved=True, udp_csum=True,
        rx_linger_us=0, underlay_mtu=9000)


def test_every_field_is_a_key_and_its_default_reads_back() -> None:
    """Writing each default out explicitly changes nothing: parse() reads
    the same fields, with the same defaults, as the dataclass declares."""
    defaults = HostConfig(underlay=UNDERLAY)
    explicit: dict[str, Any] = {}
    for name in HOST_FIELDS:
        value = getattr(defaults, name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, float):
            value = int(value)
        explicit[name] = value
    assert parse({"host": explicit}, "test").host == defaults


def test_the_source_holds_each_default_once() -> None:
    """No default is written again in parse(): the literals of the
    dataclass's defaults appear once in config.py (choices such as "auto"
    are also listed as such), and the protocol's come from uvxlan.proto."""
    source = Path(config.__file__).read_text().partition("from __future__")[2]  # code only
    for literal in ('"uvxlan"', "300_000", "1024", "65536", "10000", "1500"):
        assert source.count(literal) == 1, literal
    for value in (proto.SRC_PORT_MIN, proto.SRC_PORT_MAX, proto.PORT_IANA):
        assert str(value) not in source
    # The control directory is uvxlan.control's: the commands look there.
    assert '"/run/uvxlan"' not in source
    assert config.HostConfig(underlay="192.0.2.1").control_dir == control.CONTROL_DIR


@pytest.mark.parametrize("name", sorted(n for n, f in HOST_FIELDS.items()
                                        if f.metadata.get("bounds") and n != "src_ports"))
def test_bounds_are_one_line_naming_the_field(name: str) -> None:
    bounds: validate.Bounds = HOST_FIELDS[name].metadata["bounds"]
    for ok in (bounds.lo, bounds.hi):
        assert getattr(host(**{name: ok}), name) == ok
    for bad in (bounds.lo - 1, bounds.hi + 1):
        assert host_error(**{name: bad}) == \
            f"test: [host]: {name}: {bad} is outside {bounds.lo}..{bounds.hi}"
    assert host_error(**{name: "7"}) == f"test: [host]: {name}: must be a whole number, not '7'"
    assert host_error(**{name: True}) == \
        f"test: [host]: {name}: must be a whole number, not True"


def test_bounds_come_from_the_shared_rules() -> None:
    assert HOST_FIELDS["port"].metadata["bounds"] == validate.PORT
    assert HOST_FIELDS["mtu"].metadata["bounds"] == validate.UNDERLAY_MTU
    assert validate.UNDERLAY_MTU.lo == validate.MTU.lo + proto.ENCAP_OVERHEAD
    assert host(mtu=validate.UNDERLAY_MTU.lo).endpoint_mtu == validate.MTU.lo


def test_src_ports() -> None:
    assert host(src_ports=[1000, 1000]).src_ports == (1000, 1000)
    assert host(src_ports=[]).src_ports == HostConfig(underlay=UNDERLAY).src_ports
    for bad in ([2, 1], [0, 10], [1, 65536], [1], [1, 2, 3], ["1", "2"], [True, 10]):
        assert host_error(src_ports=bad) == \
            f"test: [host]: src_ports: {bad!r} is not [low, high] within 1..65535"


@pytest.mark.parametrize(("key", "choices"), [("offload", "auto, off or none"),
                                              ("arp_suppression", "answer, answer-only or off")])
def test_choices(key: str, choices: str) -> None:
    for ok in HOST_FIELDS[key].metadata["choices"]:
        assert getattr(host(**{key: ok}), key) == ok
    assert host_error(**{key: "fast"}) == f"test: [host]: {key}: 'fast' is not {choices}"
    assert host_error(**{key: 1}) == f"test: [host]: {key}: must be a string, not 1"


def test_flags_and_strings() -> None:
    assert host(threads=False, control_dir="/tmp/x").threads is False
    assert host_error(threads="yes") == "test: [host]: threads: must be true or false, not 'yes'"
    assert host_error(control_dir=5) == "test: [host]: control_dir: must be a string, not 5"


def test_underlay_and_name() -> None:
    assert error({"host": {}}) == "test: [host]: underlay: is required"
    assert host_error(underlay="10.0.0.300") == \
        "test: [host]: underlay: '10.0.0.300' is not an IPv4 address"
    assert host(name="h-1.a_b").name == "h-1.a_b"
    assert host_error(name="a/b") == f"test: [host]: name: 'a/b': expected {validate.NAME_RULE}"


def test_cpus() -> None:
    usable = sorted(os.sched_getaffinity(0))
    assert host(cpus=[usable[0], usable[0]]).cpus == (usable[0],)
    assert "not a list of CPU numbers" in host_error(cpus=[-1])
    assert "not a list of CPU numbers" in host_error(cpus=[True])
    assert "CPU 100000 is not available here" in host_error(cpus=[100000])


def test_unknown_keys() -> None:
    assert host_error(prot=1) == "test: [host]: unknown key 'prot'"
    assert error({"host": {"underlay": UNDERLAY}, "networks": []}) == \
        "test: unknown key 'networks'"


def test_command_line_overrides_win() -> None:
    cfg = parse({"host": {"underlay": UNDERLAY, "port": 1}}, "test",
                {"port": 8472, "name": "h9"})
    assert (cfg.host.port, cfg.host.name) == (8472, "h9")
    assert parse({}, "agent", {"underlay": UNDERLAY}).host == HostConfig(underlay=UNDERLAY)


def test_endpoints_and_protocol_facts() -> None:
    cfg = parse({"host": {"underlay": UNDERLAY, "mtu": 9000},
                 "network": [{"name": "n", "vni": 5, "remotes": ["192.0.2.2"],
                              "static": [{"mac": "02:00:00:00:00:09",
                                          "remote": "192.0.2.3"}]}],
                 "endpoint": [{"network": "n", "netns": "c1", "address": "10.0.0.2/24"}]},
                "test")
    ep = cfg.endpoints[0]
    assert ep.mac == proto.derived_mac(ipaddress.IPv4Address("10.0.0.2")) == "02:42:0a:00:00:02"
    assert ep.ifname == "eth0" and ep.gateway is None
    assert proto.ENCAP_OVERHEAD == 50
    assert cfg.host.endpoint_mtu == 9000 - proto.ENCAP_OVERHEAD
    net = cfg.networks[0]
    assert net.remotes[0].port == net.static[0].remote.port == proto.PORT_IANA


def network(**keys: Any) -> dict[str, Any]:
    return {"host": {"underlay": UNDERLAY},
            "network": [{"name": "n", "vni": 5, **keys}]}


def test_admission_and_learning_default_to_members_and_learning() -> None:
    net = parse(network(remotes=["192.0.2.2", "192.0.2.3:8472"],
                        static=[{"mac": "02:00:00:00:00:09", "remote": "192.0.2.4"},
                                {"mac": "02:00:00:00:00:0a", "remote": "192.0.2.2"}]),
                "test").networks[0]
    assert (net.admit, net.learning) == ("members", True)
    # The admitted peers: the remotes and the static entries' VTEPs, once each.
    assert net.peers == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert parse(network(), "test").networks[0].peers == []


def test_admission_and_learning_are_read_and_checked() -> None:
    net = parse(network(admit="any", learning=False), "test").networks[0]
    assert (net.admit, net.learning) == ("any", False)
    assert error(network(admit="all")) == \
        "test: network 'n': admit: 'all' is not members or any"
    assert error(network(learning="no")) == \
        "test: network 'n': learning: must be true or false, not 'no'"
