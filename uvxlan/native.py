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

from uvxlan import capture, proto
from uvxlan._stamp import source_digest
from uvxlan._version import __version__
from uvxlan.config import ADMIT, ARP_SUPPRESSION, DatapathConfig, HostConfig
from uvxlan.errors import ConfigError, NativeError, StaleBuildError
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

#: Entries per uvx_fdb_dump call: the most the FDB is locked for at once.
FDB_DUMP_CHUNK = 256


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


def _nonzero(counts: Any) -> dict[str, int]:
    return {name: int(counts[i]) for name, i in DROP_REASONS.items()
            if i != lib.UVX_PASS and counts[i]}
