"""The rules every name, number and address uvxlan accepts must follow,
written once: the config file (``config``), the cluster's commands and
records (``cluster``) and the netlink wrapper (``netlink``) all check with
these, so one value gets one answer wherever it is given.

Each rule takes the value as given (any type: TOML, JSON and the command
line hand over what they have), returns it checked and normalised, and
raises a one-line ``ConfigError`` that starts with the value, so a caller
adds only which field it is::

    check("network name", name, value)   # "network name 'a/b': expected ..."

Bounds are ``Bounds`` (inclusive), also used by the config file's generic
readers.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from uvxlan.errors import ConfigError
from uvxlan.proto import ENCAP_OVERHEAD, VNI_MAX

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """An inclusive range of whole numbers."""

    lo: int
    hi: int

    def __contains__(self, value: object) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and self.lo <= value <= self.hi)

    def __str__(self) -> str:
        return f"{self.lo}..{self.hi}"


def is_int(value: object) -> bool:
    """A whole number (a bool is not one, though Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


# Numbers -------------------------------------------------------------------------

VNI = Bounds(1, VNI_MAX)             # 0 is not a network (Linux refuses it too)
PORT = Bounds(1, 65535)
MTU = Bounds(68, 65535)              # IPv4's minimum .. the largest IP packet
UNDERLAY_MTU = Bounds(MTU.lo + ENCAP_OVERHEAD, MTU.hi)   # leaves endpoints >= MTU.lo
SUBNET_PREFIX_MAX = 30               # room for a gateway and an endpoint


def vni(value: object) -> int:
    if value not in VNI:
        raise ConfigError(f"{value!r} is out of range ({VNI.lo}-{VNI.hi})")
    assert isinstance(value, int)
    return value


def port(value: object) -> int:
    if value not in PORT:
        raise ConfigError(f"{value!r} is not a UDP port ({PORT})")
    assert isinstance(value, int)
    return value


def mtu(value: object) -> int:
    if value not in MTU:
        raise ConfigError(f"{value!r} is not an MTU ({MTU})")
    assert isinstance(value, int)
    return value


# Names ---------------------------------------------------------------------------

NAME_MAX = 64
IFNAME_MAX = 15                      # IFNAMSIZ - 1
NETNS_MAX = 255                      # a file name in /run/netns
NETNS_PATH_MAX = 1024                # a namespace file's path (runtimes' are < 100)
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX - 1}}}")
_KEY_COMPONENT = re.compile(rf"[A-Za-z0-9_.-]{{1,{NAME_MAX}}}")
_IFNAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAME_MAX}}}")
NAME_RULE = f"1-{NAME_MAX} characters of A-Z a-z 0-9 _ . -, the first a letter or digit"


def name(value: object) -> str:
    """A host, network or endpoint name: it becomes a store key component
    and a file name (the control socket), and is typed on command lines."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{value!r}: expected {NAME_RULE}")
    return value


def is_key_component(value: object) -> bool:
    """Can value name a store key's component without escaping its place
    (no '/', not . or ..)?  Looking up names: a record whose name an older
    uvxlan accepted (a leading _ . or -) can still be found and removed."""
    return (isinstance(value, str) and bool(_KEY_COMPONENT.fullmatch(value))
            and value not in (".", ".."))


def ifname(value: object) -> str:
    """A Linux interface name: the kernel's dev_valid_name() (shorter than
    IFNAMSIZ, not . or .., no '/', ':' or space), in the characters the
    config file always allowed."""
    if not isinstance(value, str) or not _IFNAME.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{value!r}: expected a Linux interface name "
                          f"(1-{IFNAME_MAX} characters of A-Z a-z 0-9 _ . -, not . or ..)")
    return value


def netns_name(value: object) -> str:
    """A named network namespace: a file in /run/netns (pyroute2 would take
    a name with a '/' for a path)."""
    if (not isinstance(value, str) or not value or len(value) > NETNS_MAX or "/" in value
            or "\0" in value or value in (".", "..")):
        raise ConfigError(f"{value!r}: expected a network namespace name "
                          "(as in /run/netns/NAME)")
    return value


def netns(value: object) -> str:
    """An endpoint's network namespace: a name under /run/netns, or the
    absolute path of a namespace file, as container runtimes hand them out
    (/proc/PID/ns/net, /var/run/docker/netns/ID, /run/netns/cni-…).  A path
    is normalised (no '.' or '..' parts, no '//'), so one namespace has one
    spelling; what the file is (a namespace, not a device) is checked when it
    is opened."""
    if isinstance(value, str) and value.startswith("/"):
        if ("\0" in value or len(value) > NETNS_PATH_MAX or value == "/"
                or os.path.normpath(value) != value or value.startswith("//")):
            raise ConfigError(f"{value!r}: expected a network namespace name (as in "
                              "/run/netns/NAME) or a normalised absolute path")
        return value
    return netns_name(value)


# Addresses -----------------------------------------------------------------------

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}|[0-9a-f]{2}(-[0-9a-f]{2}){5}")


def mac(value: object) -> str:
    """An interface's MAC address, aa:bb:cc:dd:ee:ff or aa-bb-..., any case;
    unicast and not all-zero.  Returned lower-case with colons."""
    text = value.lower() if isinstance(value, str) else ""
    if not _MAC.fullmatch(text):
        raise ConfigError(f"{value!r}: expected six hex bytes such as 02:42:0a:00:00:02")
    text = text.replace("-", ":")
    if int(text[:2], 16) & 1:
        raise ConfigError(f"{value!r}: a multicast address; an endpoint needs a unicast one")
    if text == "00:00:00:00:00:00":
        raise ConfigError(f"{value!r}: the all-zero address is not an interface address")
    return text


def ipv4(value: object) -> str:
    """An IPv4 address, in its normal form."""
    try:
        if isinstance(value, str):
            return str(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    raise ConfigError(f"{value!r} is not an IPv4 address")


# Addresses a VTEP can never have: whoever claims one is lying or wrong,
# and sending VXLAN there would loop it back or spray it.
_NEVER_VTEP = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (RFC 1122 3.2.1.3: a source, "
                                         "never a destination)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback (RFC 1122 3.2.1.3: never leaves a host)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast (a VTEP is one unicast host)"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved (RFC 1112 4; with 255.255.255.255, "
                                           "the limited broadcast)"),
)


def vtep(value: object) -> str:
    """A VTEP's underlay address: IPv4 unicast, reachable from another host."""
    text = ipv4(value)
    address = ipaddress.IPv4Address(text)
    for net, what in _NEVER_VTEP:
        if address in net:
            raise ConfigError(f"{text!r} is {what}, not a VTEP address")
    return text


def listen(value: object) -> str:
    """Where a server listens, "IP:PORT" or "[IPv6]:PORT" (normal form);
    "" for nowhere (off)."""
    if value == "":
        return ""
    bad = ConfigError(f"{value!r} is not IP:PORT (127.0.0.1:9478, [::1]:9478)")
    if not isinstance(value, str):
        raise bad
    host, sep, number = value.rpartition(":")
    if not sep or not number.isdigit() or int(number) not in PORT:
        raise bad
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise bad from None
    if (address.version == 6) != bracketed:
        raise bad
    return f"[{address}]:{int(number)}" if bracketed else f"{address}:{int(number)}"


def carries(underlay_mtu: int, mtu: int) -> bool:
    """Can an underlay of underlay_mtu carry a network's frames of mtu,
    encapsulated, without fragments?"""
    return mtu + ENCAP_OVERHEAD <= underlay_mtu


def interface(value: object) -> ipaddress.IPv4Interface:
    """An IPv4 address with its prefix length, 10.0.0.2/24."""
    try:
        address = ipaddress.IPv4Interface(value) if isinstance(value, str) else None
    except ValueError:
        address = None
    if address is None:
        raise ConfigError(f"{value!r} is not an IPv4 address/prefix")
    assert isinstance(value, str)
    if "/" not in value:
        raise ConfigError(f"{value!r} needs a prefix length, e.g. {value}/24")
    return address


def subnet(value: object) -> ipaddress.IPv4Network:
    """An overlay network's IPv4 subnet: CIDR, its network address, room for
    a gateway and an endpoint (a prefix of /30 or shorter)."""
    bad = ConfigError(f"{value!r}: expected an IPv4 CIDR such as 10.0.0.0/24")
    if not isinstance(value, str) or "/" not in value:
        raise bad
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise bad from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConfigError(f"{value!r}: only IPv4 subnets are supported")
    if ipaddress.ip_interface(value.strip()).ip != net.network_address:
        raise ConfigError(f"{value!r} has host bits set: did you mean {net}?")
    if net.prefixlen > SUBNET_PREFIX_MAX:
        raise ConfigError(f"{value!r}: the prefix must be /{SUBNET_PREFIX_MAX} or shorter "
                          "(room for a gateway and an endpoint)")
    return net


def check(field: str, rule: Callable[[object], T], value: object) -> T:
    """rule(value), its error naming the field first: "vni 0 is out of ..."."""
    try:
        return rule(value)
    except ConfigError as exc:
        raise ConfigError(f"{field} {exc}") from None
