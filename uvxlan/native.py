"""Thin typed wrapper over the compiled fast path (``uvxlan._native``).

It keeps the C names, converts arguments (MACs, dotted quads) and turns
negative return codes into ``NativeError``.  Importing it checks that the
library was built from these sources for this version, that its protocol
constants are uvxlan.proto's, and that the [host] settings bounded by a C
array (batch, send_sockets) have its bounds: a stale build fails loudly here
rather than misbehaving on the wire.

Test hooks (the codec one call at a time, segmentation, benchmarks) are not
here: they live in a test-only module, ``tests/support/native_testing.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvxlan import capture, gbp, proto
from uvxlan._stamp import source_digest
from uvxlan._version import __version__
from uvxlan.config import ADMIT, ARP_SUPPRESSION, DatapathConfig, HostConfig
from uvxlan.errors import ConfigError, NativeError, StaleBuildError
from uvxlan.fault import COUNTERS as FAULT_COUNTERS
from uvxlan.fault import FaultSpec
from uvxlan.proto import mac_to_bytes, mac_to_str

try:
    from uvxlan._native import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise StaleBuildError(
        f"uvxlan's C fast path is not built ({exc}): run `make build`"
    ) from exc

_CSRC = Path(__file__).resolve().parent.parent / "csrc"


def _check_stamp() -> None:
    built = ffi.string(lib.uvx_version()).decode()
    if built != __version__:
        raise StaleBuildError(
            f"uvxlan's C fast path is version {built}, the package {__version__}:"
            " run `make build`"
        )
    # In a source checkout the sources are here to compare; an installed
    # package carries only its library and the version check above.
    if (_CSRC / "build_ffi.py").exists():
        digest = ffi.string(lib.uvx_source_digest()).decode()
        if digest != source_digest(_CSRC):
            raise StaleBuildError(
                "uvxlan's C fast path was built from other sources than csrc/:"
                " run `make build`"
            )


def _check_constants() -> None:
    # The protocol facts Python uses, against the values C was built with.
    pairs = [
        ("VXLAN_HLEN", proto.VXLAN_HLEN, lib.VXLAN_HLEN),
        ("UDP_HLEN", proto.UDP_HLEN, lib.UDP_HLEN),
        ("IPV4_HLEN", proto.IPV4_HLEN, lib.IPV4_HLEN),
        ("ETH_HLEN", proto.ETH_HLEN, lib.ETH_HLEN),
        ("FLAG_I", proto.FLAG_I, lib.VXLAN_HF_I),
        ("FLAG_GBP", proto.FLAG_GBP, lib.VXLAN_GBP_G >> 24),
        ("VNI_MAX", proto.VNI_MAX, lib.VXLAN_VNI_MAX),
        ("PORT_IANA", proto.PORT_IANA, lib.VXLAN_PORT_IANA),
        ("ENCAP_OVERHEAD", proto.ENCAP_OVERHEAD, lib.VXLAN_OVERHEAD),
    ]
    for name, py, c in pairs:
        if py != c:
            raise StaleBuildError(
                f"uvxlan.proto.{name} is {py}, the C fast path's {c}: fix one, then"
                " run `make build`"
            )
    # Fault injection's bounds, which uvxlan.fault checks before C does.
    from uvxlan import fault
    for name, py, c in [("PPM", fault.PPM, lib.UVX_FAULT_PPM),
                        ("DELAY_MAX_US", fault.DELAY_MAX_US, lib.UVX_FAULT_DELAY_MAX),
                        ("RATE_MIN_BPS", fault.RATE_MIN_BPS, lib.UVX_FAULT_RATE_MIN)]:
        if py != c:
            raise StaleBuildError(
                f"uvxlan.fault.{name} is {py}, the C fast path's {c}: fix one, then"
                " run `make build`"
            )
    c_counters = tuple(f[0] for f in ffi.typeof("struct uvx_fault_counters").fields)
    if c_counters != fault.COUNTERS:
        raise StaleBuildError("uvxlan.fault.COUNTERS differ from struct uvx_fault_counters:"
                              " fix one, then run `make build`")
    for name, py, c in [("GROUP_MAX", gbp.GROUP_MAX, lib.UVX_GBP_GROUP_MAX),
                        ("RULES_MAX", gbp.RULES_MAX, lib.UVX_GBP_RULES_MAX)]:
        if py != c:
            raise StaleBuildError(f"uvxlan.gbp.{name} is {py}, the C fast path's {c}:"
                                  " fix one, then run `make build`")
    # The [host] settings bounded by the size of a C array.
    bounds = {f.name: f.metadata.get("bounds") for f in dataclasses.fields(HostConfig)}
    for setting, c_name, c in [("batch", "UVX_BATCH_MAX", lib.UVX_BATCH_MAX),
                               ("send_sockets", "UVX_POOL_MAX", lib.UVX_POOL_MAX)]:
        hi = getattr(bounds.get(setting), "hi", None)
        if hi != c:
            raise StaleBuildError(
                f"uvxlan.config's {setting} is at most {hi}, the C fast path's"
                f" {c_name} {c}: fix one, then run `make build`"
            )


_check_stamp()
_check_constants()

__all__ = ["ffi", "lib", "Datapath", "DROP_REASONS", "ARP_MODES", "ADMIT_MODES",
           "GBP_ACTIONS",
           "LearnResult", "FdbEntry", "Counters", "Limits", "VniSizes", "FdbSizes", "now_ms",
           "open_tx_socket", "nofrag", "CAPTURE_POINTS", "CaptureStats"]

BATCH_MAX: int = lib.UVX_BATCH_MAX
FRAME_MAX: int = lib.UVX_FRAME_MAX
VXLAN_OVERHEAD: int = lib.VXLAN_OVERHEAD
VNI_MAX: int = lib.VXLAN_VNI_MAX

#: Drop reasons by name, as the C library numbers them (``pass`` is 0).
DROP_REASONS: dict[str, int] = {
    ffi.string(lib.uvx_drop_reason_name(i)).decode(): i
    for i in range(lib.UVX_DROP__MAX)
}

#: ARP suppression modes by their configuration names (``arp_suppression``).
# The mode names are config's ([host] arp_suppression); each has its number
# in C as UVX_ARP_<NAME> (enum uvx_arp_mode): a name without one fails here.
ARP_MODES: dict[str, int] = {
    name: getattr(lib, "UVX_ARP_" + name.upper().replace("-", "_"))
    for name in ARP_SUPPRESSION
}


#: Admission modes by their configuration names (``admit``), each
#: UVX_ADMIT_<NAME> in C (enum uvx_admit_mode): a name without one fails here.
ADMIT_MODES: dict[str, int] = {
    name: getattr(lib, "UVX_ADMIT_" + name.upper()) for name in ADMIT
}

#: Group policy actions by their names (``allow``, ``deny``), each
#: UVX_GBP_<NAME> in C (enum uvx_gbp_action).
GBP_ACTIONS: dict[str, int] = {name: getattr(lib, "UVX_GBP_" + name.upper())
                               for name in gbp.ACTIONS}
_GBP_ACTION_NAMES = {v: k for k, v in GBP_ACTIONS.items()}

#: Entries per uvx_fdb_dump call: the most the FDB is locked for at once.
FDB_DUMP_CHUNK = 256

#: Frames that can wait for a hook's verdict, per worker.
HOOK_SLOTS: int = lib.UVX_HOOK_SLOTS


class LearnResult(enum.IntEnum):
    NEW = lib.FDB_LEARN_NEW
    REFRESHED = lib.FDB_LEARN_REFRESHED
    MOVED = lib.FDB_LEARN_MOVED
    STATIC = lib.FDB_LEARN_STATIC
    LIMIT = lib.FDB_LEARN_LIMIT
    FULL = lib.FDB_LEARN_FULL


#: Where a capture takes frames, by the names ``uvxlan capture --at``
#: uses: each is UVX_CAP_<its C name in uvxlan.capture.POINTS>, a bit.
CAPTURE_POINTS: dict[str, int] = {
    name: getattr(lib, "UVX_CAP_" + c_name) for name, c_name in capture.POINTS.items()
}
CAPTURE_SNAP_MIN: int = lib.UVX_CAPTURE_SNAP_MIN
CAPTURE_SNAP_MAX: int = lib.UVX_CAPTURE_SNAP_MAX
CAPTURE_SLOTS_MAX: int = lib.UVX_CAPTURE_SLOTS_MAX
CAPTURE_DRAIN_BYTES = 4 << 20     # the most one capture_drain moves


@dataclass(frozen=True)
class CaptureStats:
    captured: int             # frames put in the rings
    missed: int               # frames that found a ring full
    drained: int              # frames moved out by capture_drain
    slots: int                # per datapath thread
    snaplen: int


@dataclass(frozen=True)
class Counters:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int


@dataclass(frozen=True)
class Limits:
    """Limits a VNI reached (struct uvx_limits): sources left unlearned at
    the VNI's learn_limit or the FDB's capacity, VTEPs a full flood list
    refused, addresses a full ARP table refused."""

    learn_limit: int
    fdb_full: int
    flood_full: int
    arp_full: int


@dataclass(frozen=True)
class VniSizes:
    """How full a VNI's tables are (struct uvx_vni_sizes)."""

    learned: int        # sources learned, against learn_limit
    flood: int          # VTEPs in the flood list
    admitted: int       # VTEPs admitted to send
    arp: int            # ARP table entries
    ports: int


@dataclass(frozen=True)
class FdbSizes:
    """How full the FDB is (struct uvx_fdb_sizes)."""

    entries: int        # static and learned
    learned: int
    learn_max: int      # the learned entries' cap (fdb_capacity)
    capacity: int       # the pool, grown for static entries


@dataclass(frozen=True)
class FdbEntry:
    vni: int
    mac: str
    static: bool
    port: int | None          # a local port, or None for a remote VTEP
    remote: str | None        # the VTEP's underlay address
    remote_port: int | None
    age_s: float              # since learned or configured
    idle_s: float             # since last used to forward


@dataclass(frozen=True)
class Punted:
    """A frame a hook's rule took out of the fast path (uvx_hook_take),
    waiting for its verdict."""

    token: int                 # for hook_verdict(), once
    hook: int
    vni: int
    port: int                  # the port it came from; -1 from the wire
    remote: str | None         # from the wire: the VTEP that sent it
    from_wire: bool
    data: bytes


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise NativeError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


def _ip(addr: str) -> int:
    """Dotted quad to the uint32 in network byte order that C expects."""
    return int.from_bytes(socket.inet_aton(addr), "little")


def _ip_str(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def _info_struct() -> struct.Struct:
    """struct uvx_fdb_info as Python's struct reads it, the offsets and size
    from the compiler (cffi), so a dump is unpacked a chunk at a time
    rather than a cffi attribute at a time (65,536 entries in a full
    table)."""
    fields = [("vni", "I"), ("mac", "6s"), ("is_static", "B"), ("is_remote", "B"),
              ("port", "i"), ("remote_ip", "I"), ("remote_port", "H"), ("age_ms", "Q"),
              ("idle_ms", "Q")]
    fmt, at = "=", 0
    for name, code in fields:
        offset = ffi.offsetof("struct uvx_fdb_info", name)
        fmt += "x" * (offset - at) + code
        at = offset + struct.calcsize("=" + code)
    return struct.Struct(fmt + "x" * (ffi.sizeof("struct uvx_fdb_info") - at))


_INFO = _info_struct()


def _entries(infos: Any, n: int) -> list[FdbEntry]:
    out = []
    for vni, mac, static, remote, port, ip, rport, age, idle in _INFO.iter_unpack(
            ffi.buffer(infos, n * _INFO.size)):
        out.append(FdbEntry(
            vni=vni, mac=mac_to_str(mac), static=bool(static),
            port=None if remote else port,
            remote=_ip_str(ip) if remote else None,
            remote_port=rport if remote else None,
            age_s=age / 1000.0, idle_s=idle / 1000.0,
        ))
    return out


def now_ms() -> int:
    """The fast path's clock (CLOCK_MONOTONIC, milliseconds)."""
    return int(lib.uvx_now_ms())


def open_tx_socket(local_ip: str) -> int:
    """The raw socket encapsulated datagrams leave on (needs CAP_NET_RAW);
    it never fragments (``nofrag``)."""
    return _check(lib.uvx_tx_socket_open(_ip(local_ip)), f"raw socket on {local_ip}")


def nofrag(fd: int) -> None:
    """Make a socket that sends VXLAN never fragment: a datagram larger
    than the device's MTU fails instead (RFC 7348 section 4.3)."""
    _check(lib.uvx_socket_nofrag(fd), "turning fragmentation off on a send socket")


# struct uvx_config's fields that are copied as they are (local_ip is parsed).
_CONFIG_FIELDS = [f.name for f in dataclasses.fields(DatapathConfig) if f.name != "local_ip"]


class Datapath:
    """One switch: VNIs, local ports, flood lists, FDB, counters."""

    def __init__(self, config: DatapathConfig) -> None:
        cfg = ffi.new("struct uvx_config *")
        for name in _CONFIG_FIELDS:
            setattr(cfg, name, getattr(config, name))
        cfg.local_ip = _ip(config.local_ip)
        err = ffi.new("int *")
        dp = lib.uvx_dp_new(cfg, err)
        if dp == ffi.NULL:
            _check(err[0], "creating the datapath")
        self._dp = ffi.gc(dp, lib.uvx_dp_free)
        self.local_ip = config.local_ip
        self.dst_port = config.dst_port
        self._capture_buf: Any = None     # while a capture runs (capture_start)
        self._punts: Any = None         # hook_take's array, made at its first call

    def close(self) -> None:
        if self._dp is not None:
            ffi.release(self._dp)
            self._dp = None

    # Sockets, VNIs, flood lists, ports -----------------------------------

    def set_sockets(self, udp_fd: int, tx_fd: int) -> None:
        lib.uvx_dp_set_sockets(self._dp, udp_fd, tx_fd)

    def add_vni(self, vni: int) -> None:
        _check(lib.uvx_vni_add(self._dp, vni), f"adding VNI {vni}")

    def del_vni(self, vni: int) -> None:
        _check(lib.uvx_vni_del(self._dp, vni), f"removing VNI {vni}")

    def add_remote(self, vni: int, ip: str, port: int | None = None) -> None:
        port = port or self.dst_port
        _check(
            lib.uvx_remote_add(self._dp, vni, _ip(ip), port),
            f"adding VTEP {ip}:{port} to VNI {vni}",
        )

    def del_remote(self, vni: int, ip: str, port: int | None = None) -> None:
        port = port or self.dst_port
        _check(
            lib.uvx_remote_del(self._dp, vni, _ip(ip), port),
            f"removing VTEP {ip}:{port} from VNI {vni}",
        )

    def add_port(self, fd: int, vni: int, *, vnet_hdr: bool = False) -> int:
        """A local port; vnet_hdr: a TAP opened with IFF_VNET_HDR."""
        flags = lib.UVX_PORT_VNET_HDR if vnet_hdr else 0
        return _check(lib.uvx_port_add(self._dp, fd, vni, flags), f"adding a port to VNI {vni}")

    def set_pool(self, sockets: list[tuple[int, int]], *, gso: bool, gro: bool) -> None:
        """Send from these (fd, port) UDP sockets; gso/gro as probed."""
        fds = ffi.new("int[]", [fd for fd, _ in sockets] or [0])
        ports = ffi.new("uint16_t[]", [p for _, p in sockets] or [0])
        _check(lib.uvx_dp_set_pool(self._dp, fds, ports, len(sockets), gso, gro),
               "setting the send sockets")

    def start_threads(self) -> None:
        """Move the packet path onto two C threads (TAP side, UDP side)."""
        _check(lib.uvx_dp_start_threads(self._dp), "starting the datapath threads")

    def stop_threads(self) -> None:
        lib.uvx_dp_stop_threads(self._dp)

    def gso_failed(self) -> bool:
        """True once, after the kernel showed it cannot do UDP_SEGMENT on
        the underlay (now off); one frame's failed send never turns it off."""
        return bool(lib.uvx_dp_take_events(self._dp) & lib.UVX_EV_GSO_FAILED)

    def del_port(self, port: int) -> None:
        _check(lib.uvx_port_del(self._dp, port), f"removing port {port}")

    # FDB -----------------------------------------------------------------

    def fdb_add(
        self,
        vni: int,
        mac: str,
        *,
        port: int | None = None,
        remote: str | None = None,
        remote_port: int | None = None,
    ) -> None:
        """A static entry: to a local port, or to a remote VTEP."""
        if (port is None) == (remote is None):
            raise NativeError(errno.EINVAL, "an FDB entry needs a port or a remote")
        rc = lib.uvx_fdb_add(
            self._dp, vni, mac_to_bytes(mac), -1 if port is None else port,
            _ip(remote) if remote else 0, remote_port or 0,
        )
        _check(rc, f"adding FDB entry {mac} in VNI {vni}")

    def fdb_del(self, vni: int, mac: str) -> None:
        _check(lib.uvx_fdb_del(self._dp, vni, mac_to_bytes(mac)),
               f"removing FDB entry {mac} in VNI {vni}")

    def fdb_learn(
        self,
        vni: int,
        mac: str,
        *,
        port: int | None = None,
        remote: str | None = None,
        remote_port: int | None = None,
        now_ms: int,
    ) -> LearnResult:
        rc = lib.uvx_fdb_learn(
            self._dp, vni, mac_to_bytes(mac), -1 if port is None else port,
            _ip(remote) if remote else 0, remote_port or 0, now_ms,
        )
        return LearnResult(_check(rc, f"learning {mac} in VNI {vni}"))

    def fdb_lookup(self, vni: int, mac: str) -> FdbEntry | None:
        info = ffi.new("struct uvx_fdb_info *")
        if lib.uvx_fdb_lookup(self._dp, vni, mac_to_bytes(mac), info) < 0:
            return None
        return _entries(info, 1)[0]

    def fdb_dump(self) -> list[FdbEntry]:
        """Every entry, read a chunk at a time (the workers wait for one
        chunk at most, never for the whole table)."""
        out = ffi.new("struct uvx_fdb_info[]", FDB_DUMP_CHUNK)
        cursor = ffi.new("uint32_t *", 0)
        entries: list[FdbEntry] = []
        while cursor[0] != lib.UVX_FDB_DUMP_END:
            n = _check(lib.uvx_fdb_dump(self._dp, cursor, out, FDB_DUMP_CHUNK), "FDB dump")
            entries.extend(_entries(out, n))
        return entries

    def fdb_age(self, now_ms: int | None = None) -> int:
        """Remove learned entries older than the ageing time; how many."""
        return int(lib.uvx_fdb_age(self._dp, lib.uvx_now_ms() if now_ms is None else now_ms))

    # Admission and learning ----------------------------------------------

    def set_admit(self, vni: int, mode: str) -> None:
        """members: datagrams from admitted VTEPs only (a new VNI's mode);
        any: from anyone, as Linux's vxlan."""
        if mode not in ADMIT_MODES:
            raise NativeError(errno.EINVAL, f"admission {mode!r} is not one of "
                              f"{', '.join(ADMIT_MODES)}")
        _check(lib.uvx_vni_set_admit(self._dp, vni, ADMIT_MODES[mode]),
               f"setting admission of VNI {vni}")

    def set_learning(self, vni: int, on: bool) -> None:
        """Learn sources in the VNI (a new VNI does); off forgets what was
        learned there."""
        _check(lib.uvx_vni_set_learning(self._dp, vni, on), f"setting learning of VNI {vni}")

    def set_flood_unknown(self, vni: int, on: bool) -> None:
        """Flood unicast for a MAC not in the FDB (a new VNI does); off:
        drop it, counted as unknown_dst."""
        _check(lib.uvx_vni_set_flood_unknown(self._dp, vni, on),
               f"setting unknown-unicast flooding of VNI {vni}")

    def peer_add(self, vni: int, ip: str) -> None:
        """VTEP ip may send into the VNI."""
        _check(lib.uvx_peer_add(self._dp, vni, _ip(ip)), f"admitting VTEP {ip} to VNI {vni}")

    def peer_del(self, vni: int, ip: str) -> None:
        _check(lib.uvx_peer_del(self._dp, vni, _ip(ip)), f"removing VTEP {ip} from VNI {vni}")

    def peer_count(self, vni: int) -> int:
        return _check(lib.uvx_peer_count(self._dp, vni), f"VNI {vni}")

    def limits(self, vni: int) -> Limits:
        out = ffi.new("struct uvx_limits *")
        _check(lib.uvx_vni_limits(self._dp, vni, out), f"VNI {vni}")
        return Limits(out.learn_limit, out.fdb_full, out.flood_full, out.arp_full)

    def vni_sizes(self, vni: int) -> VniSizes:
        out = ffi.new("struct uvx_vni_sizes *")
        _check(lib.uvx_vni_sizes(self._dp, vni, out), f"VNI {vni}")
        return VniSizes(out.learned, out.flood, out.admitted, out.arp, out.ports)

    def fdb_sizes(self) -> FdbSizes:
        out = ffi.new("struct uvx_fdb_sizes *")
        _check(lib.uvx_fdb_sizes(self._dp, out), "FDB sizes")
        return FdbSizes(out.entries, out.learned, out.learn_max, out.capacity)

    # Group policy (VXLAN-GBP) ---------------------------------------------

    def set_gbp(self, vni: int, on: bool) -> None:
        """Read and send the GBP bits in the VNI (off: they are reserved
        bits, as in a new VNI)."""
        _check(lib.uvx_vni_set_gbp(self._dp, vni, on), f"setting GBP of VNI {vni}")

    def set_port_group(self, port: int, group: int) -> None:
        _check(lib.uvx_port_set_group(self._dp, port, group),
               f"setting group {group} of port {port}")

    def set_gbp_policy(self, vni: int, policy: gbp.Policy) -> None:
        """Make the VNI's policy this one: its default, the rules it has
        added or changed, the others removed (hit counts of rules kept)."""
        _check(lib.uvx_gbp_set_default(self._dp, vni, GBP_ACTIONS[policy.default]),
               f"setting the default policy of VNI {vni}")
        wanted = {(r.src, r.dst) for r in policy.rules}
        for old in self.gbp_state(vni).rules:
            if (old.src, old.dst) not in wanted:
                _check(lib.uvx_gbp_rule_del(self._dp, vni, old.src, old.dst),
                       f"removing the rule from {old.src} to {old.dst} in VNI {vni}")
        for r in policy.rules:
            _check(lib.uvx_gbp_rule_set(self._dp, vni, r.src, r.dst, GBP_ACTIONS[r.action]),
                   f"setting the rule from {r.src} to {r.dst} in VNI {vni}")

    def gbp_state(self, vni: int) -> gbp.GbpState:
        info = ffi.new("struct uvx_gbp_info *")
        _check(lib.uvx_gbp_info(self._dp, vni, info), f"VNI {vni}")
        out = ffi.new("struct uvx_gbp_rule_info[]", max(info.rules, 1))
        n = _check(lib.uvx_gbp_rules(self._dp, vni, out, info.rules), f"VNI {vni}")
        rules = {gbp.Rule(out[i].src, out[i].dst, _GBP_ACTION_NAMES[out[i].action]):
                 int(out[i].hits) for i in range(n)}
        return gbp.GbpState(bool(info.on), _GBP_ACTION_NAMES[info.default_action],
                        int(info.default_allowed), int(info.default_denied),
                        dict(sorted(rules.items())))

    # ARP suppression -----------------------------------------------------

    ARP_MODES = ARP_MODES

    def set_arp(self, vni: int, mode: str) -> None:
        """off: switch ARP like any frame; answer: requests for a known
        address answered here, the rest flood; answer-only: the rest
        are dropped (counted as arp_unknown)."""
        if mode not in self.ARP_MODES:
            raise NativeError(errno.EINVAL, f"ARP mode {mode!r} is not one of "
                              f"{', '.join(self.ARP_MODES)}")
        _check(lib.uvx_vni_set_arp(self._dp, vni, self.ARP_MODES[mode]),
               f"setting ARP suppression of VNI {vni}")

    def arp_add(self, vni: int, ip: str, mac: str) -> None:
        _check(lib.uvx_arp_add(self._dp, vni, _ip(ip), mac_to_bytes(mac)),
               f"adding ARP entry {ip} in VNI {vni}")

    def arp_del(self, vni: int, ip: str) -> None:
        _check(lib.uvx_arp_del(self._dp, vni, _ip(ip)), f"removing ARP entry {ip} in VNI {vni}")

    def arp_lookup(self, vni: int, ip: str) -> str | None:
        mac = ffi.new("uint8_t[6]")
        if lib.uvx_arp_lookup(self._dp, vni, _ip(ip), mac) < 0:
            return None
        return mac_to_str(bytes(ffi.buffer(mac, 6)))

    def arp_replies(self, vni: int) -> int:
        """ARP requests answered on this host in the VNI."""
        return int(lib.uvx_vni_arp_replies(self._dp, vni))

    # The packet path -----------------------------------------------------

    def tap_rx(self, port: int) -> int:
        return _check(lib.uvx_tap_rx(self._dp, port), f"reading port {port}")

    def udp_rx(self) -> int:
        return _check(lib.uvx_udp_rx(self._dp), "reading the VXLAN socket")

    # Fault injection (csrc/fault.h) ----------------------------------------

    def fault_set(self, spec: FaultSpec) -> None:
        """Add or change one entry (its counters kept)."""
        f = ffi.new("struct uvx_fault *")
        f.peer_ip, f.vni = _fault_key(spec.peer, spec.vni)
        f.loss_ppm = spec.ppm("loss")
        f.duplicate_ppm = spec.ppm("duplicate")
        f.reorder_ppm = spec.ppm("reorder")
        f.corrupt_ppm = spec.ppm("corrupt")
        f.delay_us, f.jitter_us, f.rate_bps = spec.delay_us, spec.jitter_us, spec.rate_bps
        rc = lib.uvx_fault_set(self._dp, f)
        if rc == -errno.EOPNOTSUPP:
            raise NativeError(errno.EOPNOTSUPP, "fault: delay, jitter, reordering and a"
                              " rate need the datapath threads (threads = true)")
        if rc == -errno.ENOSPC:
            raise NativeError(errno.ENOSPC, f"fault: {lib.UVX_FAULTS_MAX} entries are set"
                              " already; clear one")
        _check(rc, "fault")

    def fault_clear(self, peer: str | None, vni: int | None) -> bool:
        """Remove one entry (what it held back leaves at once); False if
        there was none."""
        rc = lib.uvx_fault_clear(self._dp, *_fault_key(peer, vni))
        if rc == -errno.ENOENT:
            return False
        _check(rc, "fault")
        return True

    def faults(self) -> list[tuple[FaultSpec, dict[str, int]]]:
        """Every entry with its counters."""
        n_max = lib.UVX_FAULTS_MAX
        out = ffi.new("struct uvx_fault[]", n_max)
        ctr = ffi.new("struct uvx_fault_counters[]", n_max)
        n = _check(lib.uvx_fault_list(self._dp, out, ctr, n_max), "fault")
        any_ = int(lib.UVX_FAULT_ANY)
        found = []
        for i in range(n):
            f = out[i]
            spec = FaultSpec(
                peer=None if f.peer_ip == any_ else _ip_str(f.peer_ip),
                vni=None if f.vni == any_ else int(f.vni),
                loss=f.loss_ppm * 100 / lib.UVX_FAULT_PPM,
                duplicate=f.duplicate_ppm * 100 / lib.UVX_FAULT_PPM,
                reorder=f.reorder_ppm * 100 / lib.UVX_FAULT_PPM,
                corrupt=f.corrupt_ppm * 100 / lib.UVX_FAULT_PPM,
                delay_us=int(f.delay_us), jitter_us=int(f.jitter_us), rate_bps=int(f.rate_bps))
            found.append((spec, {name: int(getattr(ctr[i], name)) for name in FAULT_COUNTERS}))
        return found

    # Counters ------------------------------------------------------------

    def drops(self) -> dict[str, int]:
        return {
            name: int(lib.uvx_drops(self._dp, i))
            for name, i in DROP_REASONS.items()
            if i != lib.UVX_PASS
        }

    def vni_drops(self, vni: int) -> dict[str, int]:
        """Drops put down to this VNI, by reason: only those not zero."""
        out = ffi.new("uint64_t[]", lib.UVX_DROP__MAX)
        _check(lib.uvx_vni_drops(self._dp, vni, out), f"VNI {vni}")
        return _nonzero(out)

    def port_drops(self, port: int) -> dict[str, int]:
        """Drops of frames from this port, or that could not be written to
        it, by reason: only those not zero."""
        out = ffi.new("uint64_t[]", lib.UVX_DROP__MAX)
        _check(lib.uvx_port_drops(self._dp, port, out), f"port {port}")
        return _nonzero(out)

    def port_counters(self, port: int) -> Counters:
        out = ffi.new("struct uvx_counters *")
        _check(lib.uvx_port_counters(self._dp, port, out), f"port {port}")
        return Counters(out.rx_packets, out.rx_bytes, out.tx_packets, out.tx_bytes)

    def vni_counters(self, vni: int) -> Counters:
        out = ffi.new("struct uvx_counters *")
        _check(lib.uvx_vni_counters(self._dp, vni, out), f"VNI {vni}")
        return Counters(out.rx_packets, out.rx_bytes, out.tx_packets, out.tx_bytes)

    # Python hooks (csrc/punt.c) ----------------------------------------
    #
    # Called from one thread, the agent's loop: each ring has it at one end.

    def hook_add(self, hook: int, vni: int, *, ethertype: int = 0, mac: str | None = None,
                 from_port: bool = True, from_wire: bool = True) -> None:
        """A rule: frames of vni (of this EtherType, 0 any; to or from this
        MAC, None any; from ports, from the wire) go to hook."""
        cmac = ffi.NULL if mac is None else ffi.new("uint8_t[6]", mac_to_bytes(mac))
        dirs = ((lib.UVX_HOOK_FROM_PORT if from_port else 0)
                | (lib.UVX_HOOK_FROM_WIRE if from_wire else 0))
        _check(lib.uvx_hook_add(self._dp, hook, vni, ethertype, cmac, dirs),
               f"adding a rule of hook {hook} for VNI {vni}")

    def hook_del(self, hook: int) -> int:
        """Remove hook's rules; how many there were."""
        return _check(lib.uvx_hook_del(self._dp, hook), f"removing hook {hook}")

    def hook_fd(self) -> int:
        """The eventfd that is readable when frames wait (after hook_add)."""
        return _check(lib.uvx_hook_fd(self._dp), "the hook eventfd")

    def hook_take(self) -> list[Punted]:
        """Every frame waiting, oldest first per worker; each one's data
        copied, its slot the caller's until hook_verdict."""
        if self._punts is None:
            self._punts = ffi.new("struct uvx_punt[]", HOOK_SLOTS)
        got: list[Punted] = []
        while True:
            n = lib.uvx_hook_take(self._dp, self._punts, HOOK_SLOTS)
            for i in range(n):
                p = self._punts[i]
                wire = p.dir == lib.UVX_HOOK_FROM_WIRE
                got.append(Punted(token=p.token, hook=p.hook, vni=p.vni, port=p.port,
                                  remote=_ip_str(p.remote_ip) if wire else None,
                                  from_wire=wire, data=ffi.buffer(p.data, p.len)[:]))
            if n < HOOK_SLOTS:
                return got

    def hook_verdict(self, token: int, *, drop: bool, data: bytes | None = None) -> None:
        """Pass (with data: rewritten) or drop; the worker runs it at hook_kick()."""
        verdict = lib.UVX_HOOK_DROP if drop else lib.UVX_HOOK_PASS
        rc = lib.uvx_hook_verdict(self._dp, token, verdict,
                                  ffi.NULL if data is None else data,
                                  0 if data is None else len(data))
        _check(rc, "a hook's verdict")

    def hook_inject(self, port: int, data: bytes, *, to_container: bool) -> bool:
        """A new frame from port (into its network) or to its container;
        False if every injection slot is in flight (hook_kick() frees them)."""
        direction = lib.UVX_HOOK_TO_PORT if to_container else lib.UVX_HOOK_FROM_PORT
        rc = lib.uvx_hook_inject(self._dp, port, direction, data, len(data))
        if rc == -errno.EAGAIN:
            return False
        _check(rc, f"injecting a frame {'to' if to_container else 'from'} port {port}")
        return True

    def hook_kick(self) -> None:
        """Run the verdicts and injections given so far."""
        lib.uvx_hook_kick(self._dp)

    def hook_punted(self) -> int:
        """Frames taken out of the fast path for hooks, ever."""
        return int(lib.uvx_hook_punted(self._dp))


    # Live capture (csrc/capture.c; uvxlan.capture_agent drives it) -------

    def capture_start(self, points: Sequence[str], *, vni: int | None = None,
                      port: int | None = None, mac: str | None = None,
                      ethertype: int | None = None, outer: bool = False,
                      snaplen: int, slots: int = 0) -> CaptureStats:
        """Start capturing at points (CAPTURE_POINTS' names) what the
        filter matches (None: any); the rings are allocated now, and the
        buffer capture_drain fills."""
        if not CAPTURE_SNAP_MIN <= snaplen <= CAPTURE_SNAP_MAX:
            raise ConfigError(f"--snaplen {snaplen}: {CAPTURE_SNAP_MIN} to {CAPTURE_SNAP_MAX}")
        if not 0 <= slots <= CAPTURE_SLOTS_MAX:
            raise ConfigError(f"--slots {slots}: at most {CAPTURE_SLOTS_MAX}")
        f = ffi.new("struct uvx_capture_filter *")
        f.points = sum(CAPTURE_POINTS[p] for p in set(points))
        f.snaplen, f.slots = snaplen, slots
        match = lib.UVX_CAP_F_OUTER if outer else 0
        if vni is not None:
            f.vni, match = vni, match | lib.UVX_CAP_F_VNI
        if port is not None:
            f.port, match = port, match | lib.UVX_CAP_F_PORT
        if mac is not None:
            f.mac, match = mac_to_bytes(mac), match | lib.UVX_CAP_F_MAC
        if ethertype is not None:
            f.ethertype, match = ethertype, match | lib.UVX_CAP_F_ETHERTYPE
        f.match = match
        rc = lib.uvx_capture_start(self._dp, f)
        if rc == -errno.EFBIG:
            raise ConfigError(f"--slots {slots} of --snaplen {snaplen}: more than "
                              f"{lib.UVX_CAPTURE_RING_MAX >> 20} MiB per datapath thread")
        _check(rc, "starting a capture")
        self._capture_buf = ffi.new("uint8_t[]", CAPTURE_DRAIN_BYTES)
        return self.capture_stats()

    def capture_stats(self) -> CaptureStats:
        out = ffi.new("struct uvx_capture_stats *")
        _check(lib.uvx_capture_stats(self._dp, out), "reading the capture's counters")
        return CaptureStats(out.captured, out.missed, out.drained, out.slots, out.snaplen)

    def capture_drain(self) -> bytes:
        """Captured frames as pcap records, up to CAPTURE_DRAIN_BYTES; b""
        if none are waiting."""
        buf = self._capture_buf
        if buf is None:
            return b""
        n = _check(lib.uvx_capture_drain(self._dp, buf, len(buf)), "draining the capture")
        return bytes(ffi.buffer(buf, n))

    def capture_stop(self) -> CaptureStats | None:
        """End the capture (its rings freed): its last counts, None if none ran."""
        self._capture_buf = None
        out = ffi.new("struct uvx_capture_stats *")
        if lib.uvx_capture_stop(self._dp, out) < 0:
            return None
        return CaptureStats(out.captured, out.missed, out.drained, out.slots, out.snaplen)
def _fault_key(peer: str | None, vni: int | None) -> tuple[int, int]:
    any_ = int(lib.UVX_FAULT_ANY)
    return (any_ if peer is None else _ip(peer)), (any_ if vni is None else vni)


def _nonzero(counts: Any) -> dict[str, int]:
    return {name: int(counts[i]) for name, i in DROP_REASONS.items()
            if i != lib.UVX_PASS and counts[i]}
