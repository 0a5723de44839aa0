"""The node: what one host's agent holds — the C datapath, its sockets and
one endpoint (TAP) per container.

``Node.start()`` checks everything it can before making anything (netns,
interface names, the UDP port), then builds the datapath, the config
file's VNIs, flood lists and static entries, and one endpoint per
configured container (adopting the TAP a previous agent of the same name
left, ``uvxlan.endpoint``).  If any step fails, what was made is undone
and the error is one line.  ``close()`` stops the datapath threads before
closing any fd they use; it leaves the TAPs for the next agent, unless the
agent leaves (``close(leave=True)``).  ``check_endpoints()`` finds the
endpoints whose interface went away (their netns deleted) and makes them
again when the netns is back.

The rest of the agent changes the node only through its methods: the
daemon (``uvxlan.daemon``) runs it on an event loop and asks it for
snapshots; the controller (``uvxlan.controller``) drives it through the
narrow ``NodePort`` interface, which ``Node`` implements.  This is the one
module that holds a ``native.Datapath``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, NamedTuple

from uvxlan import native, netlink, offload
from uvxlan.config import AgentConfig, EndpointConfig
from uvxlan.endpoint import Endpoint, preflight
from uvxlan.errors import ConfigError, NativeError, UvxlanError
from uvxlan.gbp import GbpState, Policy
from uvxlan.state import AgentState, marker

log = logging.getLogger("uvxlan.node")


def bind_vxlan_socket(address: str, port: int) -> socket.socket:
    """The UDP socket VXLAN arrives on, with errors a user can act on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        offload.set_socket_buffers(sock)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"UDP port {port} on {address} is already in use") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"underlay {address} is not an address of this host") from None
        raise ConfigError(f"cannot bind UDP {address}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock



class Lost(NamedTuple):
    """An endpoint whose interface went away, kept to be made again."""

    epc: EndpointConfig
    vni: int
    mtu: int
    why: str
    netns_id: tuple[int, int] | None = None   # its netns (device, inode) when lost

class Node:
    """The datapath, the VXLAN sockets and the endpoints of one host."""

    def __init__(self, cfg: AgentConfig, state: AgentState | None = None) -> None:
        """state: what the previous agent of this name left (its TAPs), kept
        up to date here; None: in memory only."""
        self.cfg = cfg
        self.state = state if state is not None else AgentState(None)
        self.dp: native.Datapath | None = None
        self.endpoints: list[Endpoint] = []
        # Endpoints whose interface went away (their netns deleted): the
        # config and VNI to make them again with, and why.
        self.lost: dict[int, Lost] = {}       # id(epc) ->
        # The last error logged for each lost endpoint not made again: the
        # same one is not logged again every check (once per episode).
        self._told_lost: dict[int, str] = {}
        self._changes: list[tuple[EndpointConfig, str | None]] = []
        self.port_vni: dict[int, int] = {}        # id(endpoint) -> its VNI
        self._settled = False                     # settle() ran
        self._udp: socket.socket | None = None
        self._tx_fd = -1
        self._pool: list[socket.socket] = []
        self.features = offload.Features(False, False, False)
        # The loop that reads the fds when the datapath runs without its
        # own threads (threads = false); None otherwise.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.networks: dict[int, str] = {}        # VNI -> network name
        self.static_vnis: set[int] = set()        # from the config file
        # Limits per VNI as last seen, and the VNIs in an episode of
        # reaching one (logged once when it starts, once when it ends).
        self._limits: dict[int, native.Limits] = {}
        self._at_limit: set[int] = set()

    # Start-up and shut-down ----------------------------------------------

    def start(self) -> None:
        """Build everything, or nothing: on failure, undo and re-raise."""
        h = self.cfg.host
        # An endpoint whose netns is missing (its container stopped while
        # no agent ran) must not keep the agent, and every other
        # container's forwarding, from starting: it is lost, made when
        # the netns is back (check_endpoints).
        absent = {id(epc) for epc in self.cfg.endpoints if not netlink.netns_exists(epc.netns)}
        try:
            for epc in self.cfg.endpoints:
                if id(epc) not in absent:
                    preflight(epc, h.name)
            self._udp = bind_vxlan_socket(h.underlay, h.port)
            self._tx_fd = native.open_tx_socket(h.underlay)
            self.features = offload.probe(h.offload)
            if self.features.udp_gso:
                self._pool = offload.open_send_pool(h.underlay, *h.src_ports, h.send_sockets)
                for sock in self._pool:
                    native.nofrag(sock.fileno())
            if self.features.udp_gro:
                offload.enable_udp_gro(self._udp)
            self.dp = native.Datapath(h.datapath())
            self.dp.set_sockets(self._udp.fileno(), self._tx_fd)
            self.dp.set_pool([(s.fileno(), s.getsockname()[1]) for s in self._pool],
                             gso=bool(self._pool), gro=self.features.udp_gro)
            for net in self.cfg.networks:
                self.add_network(net.name, net.vni)
                self.static_vnis.add(net.vni)
                self.set_admission(net.vni, net.admit, net.learning)
                if net.gbp:
                    self.set_gbp(net.vni, True, net.policy)
                for ip in net.peers:
                    self.admit_peer(net.vni, ip)
                for r in net.remotes:
                    self.dp.add_remote(net.vni, r.ip, r.port)
                for s in net.static:
                    self.dp.fdb_add(net.vni, s.mac, remote=s.remote.ip,
                                    remote_port=s.remote.port)
            for epc in self.cfg.endpoints:
                vni = self.cfg.network(epc.network).vni
                if id(epc) in absent:
                    why = f"netns {epc.netns} does not exist"
                    log.error("endpoint %s: %s; made when it is there", epc.address, why)
                    self.lost[id(epc)] = Lost(epc, vni, h.endpoint_mtu, why)
                    self._told_lost[id(epc)] = why
                    self._changes.append((epc, why))
                else:
                    self.add_endpoint(epc, vni, h.endpoint_mtu)
        except BaseException:
            # Nothing made is left behind; what was adopted stays as found.
            for ep in list(self.endpoints):
                if not ep.adopted:
                    self.remove_endpoint(ep)
            self.close()
            raise

    def settle(self, wanted: set[tuple[str, str]] | None = None) -> None:
        """Once everything wanted is applied (and the switch knows every
        path): make the containers of adopted TAPs resolve their
        neighbours again, and remove the TAPs the previous agent left that
        are not wanted at all (an endpoint dropped from the config file,
        or detached while no agent ran).  wanted: (netns, ifname) of every
        endpoint the store asks of this host, taken up or not: one whose
        attach failed this round (or whose network is not served yet) is
        retried later and keeps its TAP, ifindex and all."""
        self._settled = True
        for ep in self.endpoints:
            if ep.adopted:
                self._ask_neighbours(ep)
        keep = set(wanted or ())
        keep |= {(epc.netns, epc.ifname) for epc in self.cfg.endpoints}
        keep |= {(ep.cfg.netns, ep.cfg.ifname) for ep in self.endpoints}
        keep |= {(lost.epc.netns, lost.epc.ifname) for lost in self.lost.values()}
        self._remove_leftovers(keep)

    def _remove_leftovers(self, keep: set[tuple[str, str]]) -> None:
        """Delete the TAPs the state file lists, but not in keep, that still
        carry our alias (anything else there is somebody else's)."""
        for netns, ifname in [k for k in self.state.endpoints if k not in keep]:
            try:
                found = (netlink.link_state(ifname, netns)
                         if netlink.netns_exists(netns) else None)
                if found is not None and found["alias"] == marker(self.cfg.host.name):
                    netlink.link_delete(ifname, netns)
                    log.info("endpoint %s in netns %s: no longer wanted, removed", ifname,
                             netns)
            except UvxlanError as exc:
                log.warning("endpoint %s in netns %s: not removed: %s", ifname, netns, exc)
            del self.state.endpoints[(netns, ifname)]
        self.state.save()

    def _ask_neighbours(self, ep: Endpoint) -> None:
        try:
            ep.ask_neighbours_again()
        except UvxlanError as exc:
            log.warning("endpoint %s in netns %s: %s", ep.cfg.ifname, ep.cfg.netns, exc)

    def close(self, *, leave: bool = False) -> None:
        """Stop; the TAPs stay for the next agent unless leave."""
        # The threads read the TAPs and sockets: stop them before any fd
        # they use is closed (and its number reused).
        if self.dp is not None:
            self.dp.stop_threads()
        for ep in list(self.endpoints):
            ep.close(remove=leave)
        self.endpoints.clear()
        if leave:
            # Also those the previous agent left and this one has not
            # taken up yet (a leave before the first sync with the store).
            self._remove_leftovers(set())
            self.state.remove()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tx_fd >= 0:
            os.close(self._tx_fd)
            self._tx_fd = -1
        for s in self._pool:
            s.close()
        self._pool.clear()
        if self.dp is not None:
            self.dp.close()
            self.dp = None

    def _datapath(self) -> native.Datapath:
        if self.dp is None:
            raise UvxlanError("the datapath is not running")
        return self.dp

    # Running: on two C threads, or on an event loop ------------------------

    def serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start moving packets: on the datapath's two threads (threads =
        true), else one call into C per readiness event on loop, C
        draining a batch."""
        dp = self._datapath()
        assert self._udp is not None
        if self.cfg.host.threads:
            dp.start_threads()
            return
        self._loop = loop
        loop.add_reader(self._udp.fileno(), self._udp_ready)
        for ep in self.endpoints:
            loop.add_reader(ep.fileno(), self._tap_ready, ep)

    def unserve(self) -> None:
        """Stop moving packets (the fds stay open until close())."""
        if self.cfg.host.threads:
            if self.dp is not None:
                self.dp.stop_threads()
            return
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._udp is not None:
            loop.remove_reader(self._udp.fileno())
        for ep in self.endpoints:
            loop.remove_reader(ep.fileno())

    def _udp_ready(self) -> None:
        # The UDP socket cannot go bad the way a TAP can: a failed read is
        # left for the next readiness event.  (native.Datapath has no read
        # that returns the raw code, e.g. a udp_reader() giving the cffi
        # function and its argument for loop.add_reader: its error is
        # dropped here instead.)
        assert self.dp is not None
        try:  # noqa: SIM105 - on the packet path: cheaper than suppress()
            self.dp.udp_rx()
        except NativeError:
            pass

    def _tap_ready(self, ep: Endpoint) -> None:
        assert self.dp is not None and ep.port is not None
        try:
            self.dp.tap_rx(ep.port)
        except NativeError as exc:
            # A TAP whose interface is gone (its netns deleted) stays
            # readable and fails every read: stop listening to it (the
            # datapath threads do the same), and report it as lost.
            self._lose(ep, f"interface {ep.cfg.ifname} in netns {ep.cfg.netns} fails: "
                           f"{os.strerror(exc.errno or errno.EIO)}")

    def _lose(self, ep: Endpoint, why: str) -> None:
        """Out of the switch, fd closed (so its netns can go); kept to be
        made again, and reported."""
        log.error("endpoint %s: %s; made again when its netns is back", ep.cfg.address, why)
        vni = self.port_vni.pop(id(ep), -1)
        self._unplug(ep)
        # The netns' name is gone (or names another netns now): nobody
        # reaches this TAP again, and a process still inside the old netns
        # would keep it, persistent, forever.  Persistence off: it goes
        # with our fd (its netns too, once nothing else holds it).
        ep.close(remove=netlink.netns_inode(ep.cfg.netns) != ep.netns_id)
        self.endpoints.remove(ep)
        self.lost[id(ep.cfg)] = Lost(ep.cfg, vni, ep.mtu, why, ep.netns_id)
        self._told_lost[id(ep.cfg)] = why
        self._changes.append((ep.cfg, why))

    def gone_for_good(self, epc: EndpointConfig) -> bool:
        """A lost endpoint of a process' netns (/proc/PID/ns/net) whose
        process ended: the path names another process' netns now, or
        will (the pid reused), where its eth0 must never be made."""
        if not netlink.is_process_netns(epc.netns):
            return False
        lost = self.lost.get(id(epc))
        return lost is None or lost.netns_id is None or \
            netlink.netns_inode(epc.netns) != lost.netns_id

    def reused_process_netns(self, netns: str) -> bool:
        """Is netns the path of a lost endpoint's process netns that names
        another process' netns now (gone_for_good)?"""
        return any(lost.epc.netns == netns and self.gone_for_good(lost.epc)
                   for lost in self.lost.values())

    def check_endpoints(self) -> list[tuple[EndpointConfig, str | None]]:
        """Find the endpoints whose interface is gone and make again those
        whose netns is back: each change as (endpoint, error or None)."""
        for ep in [e for e in self.endpoints if not e.alive()]:
            gone = not netlink.netns_exists(ep.cfg.netns)
            self._lose(ep, f"netns {ep.cfg.netns} is gone" if gone
                       else f"interface {ep.cfg.ifname} in netns {ep.cfg.netns} is gone")
        for key, (epc, vni, mtu, _why, _) in list(self.lost.items()):
            if not netlink.netns_exists(epc.netns) or self.gone_for_good(epc):
                continue
            try:
                self.add_endpoint(epc, vni, mtu)
            except (UvxlanError, OSError) as exc:
                # Tried every check: logged once per episode (and when the
                # reason changes), not every second.
                if self._told_lost.get(key) != str(exc):
                    self._told_lost[key] = str(exc)
                    log.warning("endpoint %s in netns %s: not made again yet: %s",
                                epc.address, epc.netns, exc)
                continue
            del self.lost[key]
            self._told_lost.pop(key, None)
            log.info("endpoint %s in netns %s: made again", epc.address, epc.netns)
            self._changes.append((epc, None))
        changes, self._changes = self._changes, []
        return changes

    def age(self) -> None:
        """One ageing sweep of the FDB; report a runtime GSO failure."""
        dp = self._datapath()
        n = dp.fdb_age()
        if n:
            log.debug("aged out %d FDB entries", n)
        if dp.gso_failed():
            # What the agent reports ("status") is what it uses now.
            self.features = dataclasses.replace(self.features, udp_gso=False)
            log.warning("UDP_SEGMENT cannot be used on the underlay (EIO: no checksum offload"
                        " or IPsec on the route): sending with sendmmsg from now on")
        self._report_limits()

    def _report_limits(self) -> None:
        """Log once per network per episode: when a limit is first reached,
        and when a sweep period passes without reaching one again."""
        dp = self._datapath()
        for vni, name in sorted(self.networks.items()):
            now = dp.limits(vni)
            before = self._limits.get(vni, native.Limits(0, 0, 0, 0))
            self._limits[vni] = now
            grew = {k: v - getattr(before, k) for k, v in vars(now).items()
                    if v > getattr(before, k)}
            if grew and vni not in self._at_limit:
                self._at_limit.add(vni)
                log.warning("network %s (VNI %d) reached a limit: %s", name, vni,
                            ", ".join(f"{k} +{n}" for k, n in grew.items()))
            elif not grew and vni in self._at_limit:
                self._at_limit.discard(vni)
                log.info("network %s (VNI %d): no limit reached since the last sweep",
                         name, vni)

    # Networks, flood lists, FDB and ARP entries (NodePort) -------------------

    def add_network(self, name: str, vni: int) -> None:
        self._datapath().add_vni(vni)
        self.networks[vni] = name

    def remove_network(self, vni: int) -> None:
        """The VNI and everything in it (its ports must be gone)."""
        self._datapath().del_vni(vni)
        self.networks.pop(vni, None)
        self._limits.pop(vni, None)
        self._at_limit.discard(vni)

    def rename_network(self, vni: int, name: str) -> None:
        """The VNI now belongs to another network of that name."""
        self.networks[vni] = name

    def set_arp(self, vni: int, mode: str) -> None:
        self._datapath().set_arp(vni, mode)

    def set_admission(self, vni: int, admit: str, learning: bool) -> None:
        """Who may send into the VNI (members or any), and whether it
        learns.  A store network that does not learn floods no unknown
        unicast: the store programs all its MACs, so one missing has gone
        (a detached container) and its frames are nobody else's.  A
        config network floods it to its remotes, as Linux's vxlan does."""
        dp = self._datapath()
        dp.set_admit(vni, admit)
        dp.set_learning(vni, learning)
        dp.set_flood_unknown(vni, learning or vni in self.static_vnis)

    def set_gbp(self, vni: int, on: bool, policy: Policy) -> None:
        """VXLAN-GBP in the VNI (off: its bits are reserved bits), and the
        policy between groups: its default and exactly these rules."""
        dp = self._datapath()
        dp.set_gbp(vni, on)
        dp.set_gbp_policy(vni, policy)

    def gbp(self, name: str) -> tuple[int, GbpState]:
        """The VNI of network name and its policy as the fast path holds it."""
        vni = next((v for v, n in self.networks.items() if n == name), None)
        if vni is None:
            raise ConfigError(f"no network {name!r} on this agent")
        return vni, self._datapath().gbp_state(vni)

    def admit_peer(self, vni: int, ip: str) -> None:
        """VTEP ip is a member of the VNI: its datagrams are accepted."""
        self._datapath().peer_add(vni, ip)

    def forget_peer(self, vni: int, ip: str) -> None:
        self._datapath().peer_del(vni, ip)

    def add_remote(self, vni: int, ip: str, port: int) -> None:
        self._datapath().add_remote(vni, ip, port)

    def del_remote(self, vni: int, ip: str, port: int) -> None:
        self._datapath().del_remote(vni, ip, port)

    def fdb_add(self, vni: int, mac: str, remote: str, remote_port: int) -> None:
        """A static entry: mac in vni is behind VTEP remote:remote_port."""
        self._datapath().fdb_add(vni, mac, remote=remote, remote_port=remote_port)

    def fdb_del(self, vni: int, mac: str) -> None:
        self._datapath().fdb_del(vni, mac)

    def arp_add(self, vni: int, ip: str, mac: str) -> None:
        self._datapath().arp_add(vni, ip, mac)

    def arp_del(self, vni: int, ip: str) -> None:
        self._datapath().arp_del(vni, ip)

    # Endpoints --------------------------------------------------------------

    def add_endpoint(self, epc: EndpointConfig, vni: int, mtu: int) -> Endpoint:
        """A TAP in the container's netns (the one a previous agent left
        there, adopted, or a new one), switched in VNI vni."""
        dp = self._datapath()
        preflight(epc, self.cfg.host.name)
        # Listed before it is made: an agent that dies meanwhile leaves a
        # file that names it, so the next one adopts or removes it.
        key = (epc.netns, epc.ifname)
        listed = key in self.state.endpoints
        if self.state.endpoints.get(key) != epc.network:   # not every retry of a lost one
            self.state.endpoints[key] = epc.network
            self.state.save()
        try:
            ep = Endpoint(epc, mtu, owner=self.cfg.host.name,
                          vnet_hdr=self.features.tap_vnet_hdr, queue=self.cfg.host.tap_queue)
        except BaseException:
            if not listed:
                del self.state.endpoints[key]
                self.state.save()
            raise
        try:
            ep.port = dp.add_port(ep.fileno(), vni, vnet_hdr=ep.vnet_hdr)
            # Our own containers' MACs are known: pin them, so a frame
            # from the wire claiming one cannot move it.
            dp.fdb_add(vni, epc.mac, port=ep.port)
            if epc.group:
                dp.set_port_group(ep.port, epc.group)
        except BaseException:
            if ep.port is not None:
                dp.del_port(ep.port)
            ep.close(remove=not ep.adopted)
            if not listed and not ep.adopted:
                del self.state.endpoints[key]
                self.state.save()
            raise
        self.endpoints.append(ep)
        self.port_vni[id(ep)] = vni
        if self._loop is not None:
            self._loop.add_reader(ep.fileno(), self._tap_ready, ep)
        if ep.adopted and self._settled:
            self._ask_neighbours(ep)
        return ep

    def _unplug(self, ep: Endpoint) -> None:
        """Out of the switch: the threads let go of its fd."""
        if self._loop is not None:
            self._loop.remove_reader(ep.fileno())
        if ep.port is not None:
            self._datapath().del_port(ep.port)
            ep.port = None

    def remove_endpoint(self, ep: Endpoint) -> None:
        """Out of the switch first, then deleted."""
        self._unplug(ep)
        ep.close(remove=True)
        self.endpoints.remove(ep)
        self.port_vni.pop(id(ep), None)
        self.state.endpoints.pop((ep.cfg.netns, ep.cfg.ifname), None)
        self.state.save()

    def attach(self, epc: EndpointConfig, vni: int, mtu: int) -> None:
        """NodePort: add_endpoint, known afterwards by epc itself."""
        self.add_endpoint(epc, vni, mtu)

    def detach(self, epc: EndpointConfig) -> None:
        """NodePort: remove the endpoint attach(epc, ...) made."""
        self._told_lost.pop(id(epc), None)
        if self.lost.pop(id(epc), None) is not None:
            self.state.endpoints.pop((epc.netns, epc.ifname), None)
            self.state.save()
            return
        ep = next((e for e in self.endpoints if e.cfg is epc), None)
        if ep is None:
            raise UvxlanError(f"endpoint {epc.address} in netns {epc.netns!r} is not here")
        self.remove_endpoint(ep)

    # Snapshots for the control socket ----------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters: drops by reason for the whole datapath, and for each
        network and port its packets, bytes and drops (the reasons not 0);
        for each network the limits it reached (native.Limits) and how
        full its tables are (native.VniSizes); the FDB's size."""
        dp = self._datapath()
        return {
            "drops": dp.drops(),
            "fdb": vars(dp.fdb_sizes()),
            "networks": [
                dict(name=name, vni=vni, arp_replies=dp.arp_replies(vni),
                     **vars(dp.vni_counters(vni)), drops=dp.vni_drops(vni),
                     limits=vars(dp.limits(vni)), sizes=vars(dp.vni_sizes(vni)))
                for vni, name in sorted(self.networks.items())
            ],
            "ports": [
                dict(port=ep.port, network=ep.cfg.network, netns=ep.cfg.netns,
                     ifname=ep.cfg.ifname, mac=ep.cfg.mac,
                     **vars(dp.port_counters(ep.port)), drops=dp.port_drops(ep.port))
                for ep in self.endpoints if ep.port is not None
            ],
            "lost": [dict(network=epc.network, netns=epc.netns, ifname=epc.ifname,
                          mac=epc.mac, error=why)
                     for epc, _, _, why, _ in self.lost.values()],
        }

    # Live capture: uvxlan.capture_agent streams it to a client ----------------

    def capture_start(self, points: Sequence[str], **match: Any) -> native.CaptureStats:
        """Capture at these points (uvxlan.capture.POINTS) what match
        (native.Datapath.capture_start's filter) picks; one at a time."""
        return self._datapath().capture_start(points, **match)

    def capture_drain(self) -> bytes:
        return self._datapath().capture_drain()

    def capture_stats(self) -> native.CaptureStats:
        return self._datapath().capture_stats()

    def capture_stop(self) -> native.CaptureStats | None:
        """End the capture, if one runs (the datapath may be gone already)."""
        return None if self.dp is None else self.dp.capture_stop()

    def fdb(self, from_store: set[tuple[int, str]]) -> list[dict[str, Any]]:
        """Every FDB entry, with its network's name and its source: where
        from_store holds the (VNI, MAC) of the entries the store put."""
        return [dict(vars(e), network=self.networks.get(e.vni),
                     source=_fdb_source(e, from_store))
                for e in self._datapath().fdb_dump()]


def _fdb_source(e: native.FdbEntry, from_store: set[tuple[int, str]]) -> str:
    """Where an entry came from: learned, a local endpoint, the store (its
    (VNI, MAC) in from_store), or the config file."""
    if not e.static:
        return "learned"
    if e.port is not None:
        return "local"
    return "store" if (e.vni, e.mac) in from_store else "config"
