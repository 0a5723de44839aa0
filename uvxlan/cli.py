"""``uvxlan``: the command line.

Every command prints errors as one line, ``uvxlan: error: ...``, and exits
non-zero; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from uvxlan._version import __version__
from uvxlan.config import ADMIT, DOCKER_PLUGIN
from uvxlan.errors import ClusterError, ConfigError, UvxlanError
from uvxlan.gbp import Policy
from uvxlan.gbp import group as gbp_group
from uvxlan.hookcli import add_hook_command
from uvxlan.offload import MODES as OFFLOAD_MODES
from uvxlan.proto import PORT_IANA

if TYPE_CHECKING:
    from uvxlan.cluster import EndpointRecord, EndpointStatus, HostRecord, NetworkRecord
    from uvxlan.store import Store
    from uvxlan.store.credentials import StoreAuth

T = TypeVar("T")

DESCRIPTION = """\
uvxlan: a userspace VXLAN overlay (RFC 7348).  Containers in network
namespaces get a TAP device as eth0; a per-host agent switches their frames
and carries them over UDP 4789 to other hosts, interoperating with Linux's
own vxlan device."""

EPILOG = """\
examples:
  uvxlan demo                         two simulated hosts, two isolated networks
  uvxlan demo --docker                the same with a dockerd per host
  uvxlan lab up --hosts 2             make hosts uvx-lab-h1, uvx-lab-h2
  uvxlan agent --config h1.toml       run the agent of one host
  uvxlan stats --agent h1             counters and drops of a running agent
  uvxlan leave --agent h1             stop an agent for good, removing its endpoints
  uvxlan capture --agent h1 | tshark -r -   watch the frames h1 switches
  uvxlan fault --agent h1 --peer 10.77.0.2 --loss 5   inject faults (lab tool)
  uvxlan policy --agent h1 --network net1 --from 10 --to 20 deny
                                      VXLAN-GBP policy between endpoint groups, live
  uvxlan lab down                     remove everything the lab made
  uvxlan network create net1          a network in the cluster store
  uvxlan attach net1 --host h1 --netns c1   put netns c1 of host h1 on it
  uvxlan endpoint ls                  endpoints and their status
  uvxlan check                        store records the agents refuse, and why
  uvxlan hook --agent h1 --network net1 mod:func   a Python function on net1's frames
"""


def _cmd_agent(args: argparse.Namespace) -> int:
    from uvxlan import config
    from uvxlan.daemon import run_agent

    # Flags win over the config file's [host] table.
    over: dict[str, object] = {}
    for flag, key in (("name", "name"), ("advertise", "underlay"), ("port", "port"),
                      ("offload", "offload"), ("control_group", "control_group"),
                      ("metrics", "metrics"), ("metrics_public", "metrics_public"),
                      ("docker_plugin", "docker_plugin"),
                      ("collect_after", "collect_after")):
        if getattr(args, flag) is not None:
            over[key] = getattr(args, flag)
    store_url = args.store
    if args.config:
        cfg = config.load(args.config, over)
    else:
        # No config file: the store says everything but where we are.
        for flag in ("name", "advertise"):
            if getattr(args, flag) is None:
                raise ConfigError(f"agent: --{flag} is required without --config")
        cfg = config.parse({}, "agent", over)
        store_url = store_url or default_store_url()
    store = None
    if store_url:
        from uvxlan import validate
        from uvxlan.store import open_store

        # Every other agent would refuse a host record with this address
        # (uvxlan.records): say so now, not by silence later.
        validate.check("underlay (--advertise)", validate.vtep, cfg.host.underlay)

        store = open_store(store_url, _store_auth(args))
    elif given := _store_auth(args).given():
        raise ConfigError(f"agent: {', '.join(given)} apply only with --store "
                          "(with --config alone there is no store)")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"uvxlan-agent[{cfg.host.name}]: %(message)s",
    )
    run_agent(cfg, store)
    return 0


def _store_auth(args: argparse.Namespace) -> StoreAuth:
    """The TLS and authentication flags given (the URL and the environment
    fill the rest: uvxlan.store.credentials)."""
    from uvxlan.store.credentials import SETTINGS, StoreAuth

    return StoreAuth(**{name: getattr(args, name) for name, _, _ in SETTINGS})


def _add_store_auth(q: argparse.ArgumentParser) -> None:
    """--store-ca, --store-cert, --store-key, --store-user,
    --store-password-file (the same in every command that takes --store)."""
    from uvxlan.store.credentials import SETTINGS

    helps = {
        "ca": "CA certificate (PEM) the etcd server's certificate must be signed by; "
              "turns TLS on",
        "cert": "client certificate (PEM) for etcd's --client-cert-auth; turns TLS on",
        "key": "the client certificate's private key (PEM)",
        "user": "etcd user (RBAC); its password from --store-password-file or the "
                "environment, never the command line",
        "password_file": "file whose first line is the etcd user's password",
    }
    for name, flag, var in SETTINGS:
        meta = "NAME" if name == "user" else "FILE"
        q.add_argument(flag, dest=name, metavar=meta, help=f"{helps[name]} (default: ${var})")


def default_store_url() -> str:
    """$UVXLAN_STORE, else the embedded store in /var/lib/uvxlan."""
    from uvxlan.store import DEFAULT_SQLITE_PATH

    return os.environ.get("UVXLAN_STORE") or f"sqlite://{DEFAULT_SQLITE_PATH}"


def _cmd_stats(args: argparse.Namespace) -> int:
    from uvxlan.control import query_agent, socket_for

    stats = query_agent(socket_for(args.agent), "stats")
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{'network':<12} {'vni':>8} {'rx pkts':>10} {'rx bytes':>12}"
          f" {'tx pkts':>10} {'tx bytes':>12}  drops")
    for n in stats["networks"]:
        print(f"{n['name']:<12} {n['vni']:>8} {n['rx_packets']:>10} {n['rx_bytes']:>12}"
              f" {n['tx_packets']:>10} {n['tx_bytes']:>12}  {_drops_text(n.get('drops'))}")
    print(f"\n{'port':<4} {'endpoint':<28} {'from ctr':>10} {'to ctr':>10}  drops")
    for p in stats["ports"]:
        where = f"{p['netns']}/{p['ifname']} ({p['network']})"
        print(f"{p['port']:<4} {where:<28} {p['rx_packets']:>10} {p['tx_packets']:>10}"
              f"  {_drops_text(p.get('drops'))}")
    for p in stats.get("lost", []):
        where = f"{p['netns']}/{p['ifname']} ({p['network']})"
        print(f"{'-':<4} {where:<28} lost: {p['error']}")
    print("\ndrops: " + _drops_text(stats["drops"]))
    limits = [f"{n['name']}: {_drops_text(n['limits'])}" for n in stats["networks"]
              if any(n.get("limits", {}).values())]
    print("limits reached: " + ("; ".join(limits) or "none"))
    return 0


def _cmd_leave(args: argparse.Namespace) -> int:
    import fcntl
    import time

    from uvxlan.control import query_agent, socket_for

    sock = socket_for(args.agent)
    reply = query_agent(sock, "leave")
    # The agent holds NAME.lock until it has removed everything and exits.
    fd = os.open(sock.removesuffix(".sock") + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UvxlanError(f"agent {reply['name']!r} (pid {reply['pid']}) is still"
                                      f" leaving after {args.timeout:g} s") from None
                time.sleep(0.05)
    finally:
        os.close(fd)
    if reply.get("store"):
        # The agent replied before revoking, so the revoke's outcome is not
        # known here: say what holds either way.
        print(f"agent {reply['name']!r} left: its endpoints are removed and its lease was "
              "revoked (if the store did not answer within 3 s, its host goes from the "
              "store when the lease ends, within lease_ttl)")
    else:
        print(f"agent {reply['name']!r} left: its endpoints are removed")
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    from uvxlan.capture import CaptureRequest, parse_at, parse_ethertype, report, run_capture
    from uvxlan.control import socket_for

    req = CaptureRequest(
        network=args.network, port=args.port, mac=args.mac, outer=args.outer,
        ethertype=None if args.ethertype is None else parse_ethertype(args.ethertype),
        snaplen=args.snaplen, at=parse_at(args.at) if args.at else (), slots=args.slots)
    req = CaptureRequest.from_json(req.to_json())    # the agent's checks, here first
    if args.write == "-" and sys.stdout.isatty():
        raise ConfigError("not writing pcap to a terminal: -w FILE, or pipe it"
                          " (uvxlan capture ... | tshark -r -)")

    def open_out() -> BinaryIO:
        if args.write == "-":
            return sys.stdout.buffer
        try:
            return open(args.write, "wb")
        except OSError as exc:
            raise UvxlanError(f"-w {args.write}: {exc.strerror or exc}") from None

    result = run_capture(socket_for(args.agent), req, open_out, status=sys.stderr.buffer,
                         pcapng=args.pcapng)
    print(report(result), file=sys.stderr)
    return 0


def _drops_text(drops: dict[str, int] | None) -> str:
    """reason=n, ... for the reasons not 0; "none" without any (or "-"
    from an agent too old to count them there)."""
    if drops is None:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in drops.items() if v) or "none"


def _cmd_fdb(args: argparse.Namespace) -> int:
    from uvxlan.control import query_agent, socket_for

    entries = query_agent(socket_for(args.agent), "fdb")["fdb"]
    if args.network:
        entries = [e for e in entries if e["network"] == args.network]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{'network':<10} {'vni':>8} {'mac':<18} {'type':<8} {'source':<7} {'to':<22}"
          f" {'age s':>7}")
    for e in sorted(entries, key=lambda e: (e["vni"], e["mac"])):
        to = f"{e['remote']}:{e['remote_port']}" if e["remote"] else f"port {e['port']}"
        kind = "static" if e["static"] else "learned"
        print(f"{e['network'] or '?':<10} {e['vni']:>8} {e['mac']:<18} {kind:<8}"
              f" {e.get('source', '?'):<7} {to:<22} {e['age_s']:>7.1f}")
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    from uvxlan.control import query_agent, socket_for

    if not args.agent:
        return _policy_in_store(args)
    req: dict[str, Any] = {"network": args.network, "op": "show"}
    if args.default:
        req.update(op="default", action=args.default)
    elif args.delete or args.action:
        if args.src is None or args.dst is None:
            raise ConfigError("policy: a rule needs --from and --to")
        req.update(op="del" if args.delete else "set", action=args.action,
                   **{"from": args.src, "to": args.dst})
        if args.delete and args.action:
            raise ConfigError("policy: --delete takes no allow or deny")
    elif args.src is not None or args.dst is not None:
        raise ConfigError("policy: --from and --to need allow, deny or --delete")
    reply = query_agent(socket_for(args.agent), "policy", args=req)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"network {reply['network']} (VNI {reply['vni']}): gbp "
          f"{'on' if reply['gbp'] else 'off'}, default {reply['default']} "
          f"(allowed {reply['default_allowed']}, denied {reply['default_denied']})")
    if reply["rules"]:
        print(f"\n{'from':>6} {'to':>6} {'action':<7} {'frames':>10}")
    for r in reply["rules"]:
        print(f"{r['from']:>6} {r['to']:>6} {r['action']:<7} {r['hits']:>10}")
    return 0


def _policy_change(args: argparse.Namespace) -> Callable[[Policy], Policy] | None:
    """What uvxlan policy's arguments do to a policy (None: show it)."""
    from uvxlan.gbp import Rule

    if args.default:
        return lambda p: Policy(args.default, p.rules)
    if args.src is None and args.dst is None and not (args.delete or args.action):
        return None
    if args.src is None or args.dst is None or not (args.delete or args.action):
        raise ConfigError("policy: a rule needs --from, --to and allow, deny or --delete")
    if args.delete and args.action:
        raise ConfigError("policy: --delete takes no allow or deny")
    rule = Rule(gbp_group(args.src, "--from"), gbp_group(args.dst, "--to"), args.action or "")

    def change(p: Policy) -> Policy:
        if not args.delete:
            return p.with_rule(rule)
        if not any((r.src, r.dst) == (rule.src, rule.dst) for r in p.rules):
            raise ConfigError(f"network {args.network} has no rule from {rule.src} to {rule.dst}")
        return p.without(rule.src, rule.dst)
    return change


def _policy_in_store(args: argparse.Namespace) -> int:
    from uvxlan import cluster

    change = _policy_change(args)
    if change is None:
        net = _with_store(args, lambda s: cluster.get_network(s, args.network))
    else:
        net = _with_store(args, lambda s: cluster.set_policy(s, args.network, change))
    policy = net.gbp_policy
    if args.json:
        print(json.dumps({"network": net.name, "vni": net.vni, "gbp": net.gbp,
                          **policy.to_json()}, indent=2))
        return 0
    print(f"network {net.name} (VNI {net.vni}): gbp {'on' if net.gbp else 'off'}, "
          f"default {policy.default} (in the store; counts: uvxlan policy --agent H)")
    if policy.rules:
        print(f"\n{'from':>6} {'to':>6} action")
    for r in policy.rules:
        print(f"{r.src:>6} {r.dst:>6} {r.action}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    from uvxlan.lab import netns as lab

    if args.lab_cmd == "up":
        return lab.cli_up(args.name, args.hosts, args.subnet, args.mtu)
    if args.lab_cmd == "down":
        return lab.cli_down(args.name)
    if args.lab_cmd == "status":
        return lab.cli_status(args.name)
    return lab.cli_container_add(args.name, args.container)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.docker:
        from uvxlan.lab.dockerdemo import run as run_docker_demo

        return run_docker_demo(keep=args.keep)
    from uvxlan.lab.demo import run as run_demo

    return run_demo(keep=args.keep)


def _cmd_bench(args: argparse.Namespace) -> int:
    from uvxlan.lab import bench

    return bench.main(args)


# The cluster: networks, endpoints, hosts (in the shape of `docker network`) --

CLUSTER_EPILOG = """\
The store is --store URL, else $UVXLAN_STORE, else the embedded
sqlite:///var/lib/uvxlan/state.db; hosts on several machines share
etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS).  TLS and the etcd user:
--store-ca/--store-cert/--store-key/--store-user/--store-password-file, else
the URL's ca=, cert=, key=, user=, password_file=, else $UVXLAN_STORE_CA,
_CERT, _KEY, _USER, _PASSWORD_FILE or _PASSWORD.  A password never goes on
the command line or in the URL (ps shows both); see docs/security.md.
"""


def _store_url(args: argparse.Namespace) -> str:
    url: str | None = args.store
    return url or default_store_url()


def _with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[T]], *,
                create: bool = False) -> T:
    """Run fn on the store the command names, closing it after.  Only a
    command that adds (create=True) makes a missing SQLite file: one made
    empty by a listing or a removal would make every agent remove its
    endpoints."""
    from uvxlan.store import open_store

    async def run() -> T:
        store = open_store(_store_url(args), _store_auth(args), create=create)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _int_arg(flag: str, text: str | None) -> int | None:
    # Parsed here, not by argparse, so a bad number is one line like any error.
    if text is None:
        return None
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"{flag} must be an integer, not {text!r}") from None


def _status_text(status: EndpointStatus | None, refused: str | None = None) -> str:
    if refused is not None:              # what the agents make of it, whatever it said
        return f"refused: {refused}"
    if status is None:
        return "pending"
    if status.state == "error":
        return f"error: {status.error or 'no reason given'}"
    return status.state


def _endpoint_json(ep: EndpointRecord, status: EndpointStatus | None,
                   refused: str | None = None) -> dict[str, object]:
    return {**dataclasses.asdict(ep),
            "status": None if status is None else dataclasses.asdict(status),
            "refused": refused}


def _print_fields(pairs: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        print(f"{k:<{width}}  {v}")


def _print_endpoints(rows: list[tuple[EndpointRecord, EndpointStatus | None]],
                     with_network: bool, refused: dict[str, str] | None = None) -> None:
    from uvxlan.cluster import key_of

    head = ["NETWORK"] if with_network else []
    table = [head + ["NAME", "HOST", "NETNS", "IFNAME", "IP", "MAC", "STATUS"]]
    for ep, st in rows:
        table.append(([ep.network] if with_network else [])
                     + [ep.name, ep.host, ep.netns, ep.ifname, ep.ip, ep.mac,
                        _status_text(st, (refused or {}).get(key_of(ep)))])
    _print_table(table)


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cmd_network(args: argparse.Namespace) -> int:
    from uvxlan import cluster

    if args.network_cmd == "create":
        from uvxlan import underlay

        vni, mtu = _int_arg("--vni", args.vni), _int_arg("--mtu", args.mtu)
        routes = underlay.host_routes()
        net = _with_store(args, lambda s: cluster.create_network(
            s, args.name, subnet=args.subnet, vni=vni, mtu=mtu, admit=args.admit,
            learning=args.learning, avoid=list(routes), gbp=args.gbp), create=True)
        if args.subnet is not None and (route := underlay.overlapping_route(
                net.network, routes)) is not None:
            # Given by hand: the user's call (the route may be this host's
            # alone), but containers on it cannot reach what the route does.
            print(f"uvxlan: warning: subnet {net.subnet} overlaps this host's route {route}",
                  file=sys.stderr)
        _print_fields([("name", net.name), ("vni", net.vni), ("subnet", net.subnet),
                       ("gateway", net.gateway), ("mtu", net.mtu), ("admit", net.admit),
                       ("learning", "on" if net.learning else "off"),
                       ("gbp", "on" if net.gbp else "off")])
        return 0
    if args.network_cmd == "rm":
        async def rm(s: Store) -> None:
            for name in args.names:
                await cluster.remove_network(s, name)
                print(name, flush=True)

        _with_store(args, rm)
        return 0
    if args.network_cmd == "ls":
        async def ls(s: Store) -> tuple[list[NetworkRecord], list[
                tuple[EndpointRecord, EndpointStatus | None]]]:
            return await cluster.list_networks(s), await cluster.list_endpoints(s)

        nets, eps = _with_store(args, ls)
        count = {n.name: sum(1 for ep, _ in eps if ep.network == n.name) for n in nets}
        if args.json:
            print(json.dumps([{**dataclasses.asdict(n), "endpoints": count[n.name]}
                              for n in nets], indent=2))
            return 0
        _print_table([["NAME", "VNI", "SUBNET", "GATEWAY", "MTU", "ENDPOINTS"]]
                     + [[n.name, str(n.vni), n.subnet, n.gateway, str(n.mtu),
                         str(count[n.name])] for n in nets])
        return 0
    # inspect

    async def inspect(s: Store) -> tuple[NetworkRecord, list[
            tuple[EndpointRecord, EndpointStatus | None]]]:
        return await cluster.get_network(s, args.name), await cluster.list_endpoints(
            s, args.name)

    net, eps = _with_store(args, inspect)
    if args.json:
        print(json.dumps({**dataclasses.asdict(net),
                          "endpoints": [_endpoint_json(ep, st) for ep, st in eps]}, indent=2))
        return 0
    _print_fields([("name", net.name), ("vni", net.vni), ("subnet", net.subnet),
                   ("gateway", net.gateway), ("mtu", net.mtu), ("admit", net.admit),
                   ("learning", "on" if net.learning else "off"),
                   ("created", _when(net.created)), ("endpoints", len(eps))])
    if eps:
        print()
        _print_endpoints(eps, with_network=False)
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _cmd_attach(args: argparse.Namespace) -> int:
    from uvxlan import cluster

    try:
        timeout = float(args.timeout)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < float("inf"):
        raise ConfigError(f"--timeout must be a positive number of seconds, not {args.timeout!r}")

    async def attach(s: Store) -> tuple[EndpointRecord, EndpointStatus | None]:
        ep = await cluster.attach(s, args.network, host=args.host, netns=args.netns,
                                  name=args.name, ip=args.ip, mac=args.mac,
                                  ifname=args.ifname, group=args.group)
        if args.no_wait:
            return ep, None
        try:
            return ep, await cluster.wait_ready(s, ep, timeout)
        except (ClusterError, asyncio.CancelledError) as exc:
            # The agent failed or never answered, or the user pressed
            # Ctrl-C while waiting: leave nothing behind.
            try:
                await cluster.undo_attach(s, ep)
            except UvxlanError as undo:
                raise ClusterError(f"{exc}; detaching it again failed too: {undo}") from None
            raise

    ep, status = _with_store(args, attach, create=True)
    _print_fields([("name", ep.name), ("network", ep.network), ("ip", ep.ip),
                   ("mac", ep.mac), ("host", ep.host),
                   ("status", _status_text(status) + (" (not waited for)"
                                                      if args.no_wait else ""))])
    return 0


def _cmd_detach(args: argparse.Namespace) -> int:
    from uvxlan import cluster

    async def detach(s: Store) -> None:
        for name in args.names:
            await cluster.detach(s, args.network, name)
            print(name, flush=True)

    _with_store(args, detach)
    return 0


def _cmd_endpoint(args: argparse.Namespace) -> int:
    from uvxlan import cluster, records

    async def ls(s: Store) -> tuple[list[tuple[EndpointRecord, EndpointStatus | None]],
                                    dict[str, str]]:
        return await cluster.list_endpoints(s, args.network), await records.check_store(s)

    rows, refused = _with_store(args, ls)
    if args.json:
        print(json.dumps([_endpoint_json(ep, st, refused.get(cluster.key_of(ep)))
                          for ep, st in rows], indent=2))
        return 0
    _print_endpoints(rows, with_network=True, refused=refused)
    return 0


def _cmd_host(args: argparse.Namespace) -> int:
    from uvxlan import cluster, records

    async def ls(s: Store) -> tuple[list[HostRecord], dict[str, str]]:
        return await cluster.list_hosts(s), await records.check_store(s)

    hosts, refused = _with_store(args, ls)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(h), "refused": refused.get(cluster.key_of(h))}
                          for h in hosts], indent=2))
        return 0
    _print_table([["NAME", "UNDERLAY", "MTU", "VERSION", "UP SINCE", "STATUS"]]
                 + [[h.name, f"{h.underlay}:{h.port}", str(h.mtu), h.version or "-",
                     _when(h.started), _status_text(None, refused.get(cluster.key_of(h)))
                     if cluster.key_of(h) in refused else "ok"] for h in hosts])
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Every record the agents would refuse, one line each; 1 if any."""
    if args.agent:
        from uvxlan.control import query_agent, socket_for

        refused: dict[str, str] = query_agent(socket_for(args.agent), "refused")["refused"]
    else:
        from uvxlan import records

        refused = _with_store(args, records.check_store)
    if args.json:
        print(json.dumps(refused, indent=2))
    else:
        from uvxlan.cluster import shown

        for key, why in sorted(refused.items()):
            print(f"{shown(key)}: {why}")
        if not refused:
            print("no refused records")
    return 1 if refused else 0


def _add_cluster_commands(sub: Any) -> None:
    """network, attach, detach, endpoint, host: the cluster's state in the store."""
    def with_store(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        q.add_argument("--store", metavar="URL",
                       help="sqlite:///ABS/PATH.db or etcd[s]://HOST:PORT[,...] "
                       "(default: $UVXLAN_STORE, else sqlite:///var/lib/uvxlan/state.db)")
        _add_store_auth(q)
        return q

    def parser(parent: Any, name: str, help: str, description: str,
               examples: str) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=description,
            epilog="examples:\n" + examples + "\n" + CLUSTER_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        return q

    n = parser(sub, "network", "create, list, inspect and remove overlay networks",
               "Overlay networks in the cluster store: each has a VNI, an IPv4 subnet "
               "whose first address is the gateway, and an MTU.",
               "  uvxlan network create net1\n"
               "  uvxlan network create net2 --subnet 192.168.50.0/24 --vni 4242\n"
               "  uvxlan network ls\n"
               "  uvxlan network inspect net1 --json\n"
               "  uvxlan network rm net2\n")
    nsub = n.add_subparsers(dest="network_cmd", required=True, metavar="ACTION")
    c = with_store(parser(
        nsub, "create", "create a network",
        "Create a network.  Without --vni it takes the first free VNI from 256; "
        "without --subnet the first /24 of 10.0.0.0/8 that overlaps no network and "
        "no route of this host (default route aside), and holds no host's underlay "
        "address (a --subnet over a route of this host is created, with a warning); "
        "without --mtu the smallest registered host's underlay MTU (each agent "
        "reads its underlay interface's) less 50 (VXLAN's overhead), or 1450.  Its hosts accept "
        "VXLAN for it from the other live hosts only (--admit any: from anyone), "
        "and learn no MACs (the store programs every path; --learning: learn too).",
        "  uvxlan network create net1\n"
        "  uvxlan network create db --subnet 10.20.0.0/16 --vni 1000 --mtu 1400\n"
        "  uvxlan network create legacy --admit any --learning\n"))
    c.add_argument("name", metavar="NAME", help="1-64 characters of A-Z a-z 0-9 _ . -")
    c.add_argument("--subnet", metavar="CIDR", help="IPv4 network address/prefix, "
                   "prefix at most 30, e.g. 10.0.0.0/24")
    c.add_argument("--vni", metavar="N", help="VXLAN network identifier, 1-16777215")
    c.add_argument("--mtu", metavar="N", help="the endpoints' MTU (68 up to the "
                   "underlay MTU less 50)")
    c.add_argument("--admit", choices=ADMIT, default="members",
                   help="who may send VXLAN into it: members, the live hosts (default), "
                   "or any address (as Linux's vxlan; for peers the store does not know)")
    c.add_argument("--learning", action="store_true",
                   help="learn source MACs (off by default: the store programs every path)")
    c.add_argument("--gbp", action="store_true",
                   help="VXLAN-GBP: carry endpoints' groups (attach --group) and apply "
                   "the policy between them (uvxlan policy); off by default")
    ls = with_store(parser(nsub, "ls", "list networks", "List the networks.",
                           "  uvxlan network ls\n  uvxlan network ls --json\n"))
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ins = with_store(parser(nsub, "inspect", "a network and its endpoints",
                            "Show a network's record and its endpoints with their status.",
                            "  uvxlan network inspect net1\n"
                            "  uvxlan network inspect net1 --json\n"))
    ins.add_argument("name", metavar="NAME")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    rm = with_store(parser(nsub, "rm", "remove networks",
                           "Remove networks.  Refused while a network has endpoints: "
                           "detach them first.",
                           "  uvxlan network rm net1\n  uvxlan network rm net1 net2\n"))
    rm.add_argument("names", nargs="+", metavar="NAME")
    n.set_defaults(func=_cmd_network)

    a = with_store(parser(
        sub, "attach", "attach a container's netns to a network",
        "Attach a network namespace on a host to a network: the endpoint is written "
        "to the store, the host's agent makes its interface, and this waits until the "
        "agent reports it ready.  If the agent reports an error, or --timeout passes, "
        "the endpoint is detached again and the command fails.  Without --ip the "
        "endpoint gets the lowest free address after the gateway; without --mac, "
        "02:42 and the address's four bytes (as Docker).  Ctrl-C stops the wait "
        "and leaves the endpoint attached.",
        "  uvxlan attach net1 --host h1 --netns c1\n"
        "  uvxlan attach net1 --host h2 --netns c2 --name web --ip 10.0.0.10\n"
        "  uvxlan attach net1 --host h2 --netns c3 --no-wait\n"))
    a.add_argument("network", metavar="NETWORK")
    a.add_argument("--host", required=True, help="the host (a registered agent) to "
                   "make the endpoint on; see `uvxlan host ls`")
    a.add_argument("--netns", required=True, metavar="NS",
                   help="the container's network namespace: a name (/run/netns/NS) or "
                        "the absolute path of a namespace file (/proc/PID/ns/net; needs --name)")
    a.add_argument("--name", help="the endpoint's name in the network (default: NS)")
    a.add_argument("--ip", help="its IPv4 address in the subnet (default: the lowest free)")
    a.add_argument("--mac", help="its MAC (default: 02:42 + the IP's bytes)")
    a.add_argument("--ifname", default="eth0", help="its name inside NS (%(default)s)")
    a.add_argument("--group", type=int, default=0, metavar="N",
                   help="its VXLAN-GBP group, 0-65535, in a network with --gbp (%(default)s)")
    a.add_argument("--timeout", metavar="S", default="30",
                   help="seconds to wait for the agent (%(default)s)")
    a.add_argument("--no-wait", action="store_true",
                   help="return once the endpoint is written; do not wait for the agent")
    a.set_defaults(func=_cmd_attach)

    d = with_store(parser(sub, "detach", "detach endpoints from a network",
                          "Remove endpoints from a network; their addresses become free "
                          "and their hosts' agents remove the interfaces.",
                          "  uvxlan detach net1 c1\n  uvxlan detach net1 c1 c2\n"))
    d.add_argument("network", metavar="NETWORK")
    d.add_argument("names", nargs="+", metavar="NAME")
    d.set_defaults(func=_cmd_detach)

    e = parser(sub, "endpoint", "list endpoints", "Endpoints in the cluster store.",
               "  uvxlan endpoint ls\n  uvxlan endpoint ls --network net1 --json\n")
    esub = e.add_subparsers(dest="endpoint_cmd", required=True, metavar="ACTION")
    els = with_store(parser(esub, "ls", "list endpoints with their status",
                            "List endpoints with what their agent made of them: ready, "
                            "error (with its message) or pending (no word yet).",
                            "  uvxlan endpoint ls\n"
                            "  uvxlan endpoint ls --network net1 --json\n"))
    els.add_argument("--network", metavar="NAME", help="only this network's")
    els.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(func=_cmd_endpoint)

    h = parser(sub, "host", "list hosts", "Hosts whose agents are registered.",
               "  uvxlan host ls\n  uvxlan host ls --json\n")
    hsub = h.add_subparsers(dest="host_cmd", required=True, metavar="ACTION")
    hls = with_store(parser(hsub, "ls", "list registered hosts",
                            "List the hosts whose agents are running (registered under a "
                            "lease: a host whose agent stops is gone within seconds).",
                            "  uvxlan host ls\n  uvxlan host ls --json\n"))
    hls.add_argument("--json", action="store_true", help="machine-readable output")
    h.set_defaults(func=_cmd_host)

    k = with_store(parser(
        sub, "check", "list the store records agents refuse",
        "Check the store's hosts, networks and endpoints by the rules every agent "
        "applies before acting on them (docs/security.md, 'Hostile records'), from the "
        "point of view of each registered host, and print each record refused, with "
        "why: KEY: REASON, and '(on HOST, ...)' when only some hosts refuse it.  Exits "
        "1 if any record is refused, 0 if none.  With --agent, what that running "
        "agent refuses now.",
        "  uvxlan check\n  uvxlan check --json\n  uvxlan check --agent h1\n"))
    k.add_argument("--agent", metavar="NAME",
                   help="ask this running agent (host name or control socket path) "
                   "instead of reading the store")
    k.add_argument("--json", action="store_true",
                   help="machine-readable output: {KEY: REASON}")
    k.set_defaults(func=_cmd_check)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uvxlan", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"uvxlan {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("agent", help="run the agent of one host",
                       description="Run the agent of one host.  With a cluster store "
                       "(--store, or no --config: the embedded store), it registers "
                       "the host, realises the endpoints attached to it and programs "
                       "the paths to every other host's endpoints.  With --config "
                       "alone, it runs the static setup of a TOML file (README.md, "
                       "'The config file'); both together add the file's static "
                       "networks and peers to the store's.  Stop it with SIGTERM or "
                       "Ctrl-C: the containers' interfaces and the host's lease stay, "
                       "and the next agent of the same name adopts them without a "
                       "break; 'uvxlan leave' stops it and removes them.",
                       epilog="examples:\n"
                       "  uvxlan agent --name h1 --advertise 192.0.2.1\n"
                       "  uvxlan agent --store etcd://192.0.2.10:2379 --name h1 "
                       "--advertise 192.0.2.1\n"
                       "  UVXLAN_STORE_PASSWORD_FILE=/etc/uvxlan/etcd.pw uvxlan agent "
                       "--store etcds://192.0.2.10:2379 \\\n"
                       "      --store-ca /etc/uvxlan/ca.pem --store-cert /etc/uvxlan/h1.pem "
                       "--store-key /etc/uvxlan/h1.key \\\n"
                       "      --store-user uvxlan --name h1 --advertise 192.0.2.1\n"
                       "  uvxlan agent --config h1.toml\n"
                       "  uvxlan agent --config h1.toml --metrics 127.0.0.1:9478\n"
                       "  uvxlan agent --name h1 --advertise 192.0.2.1 --docker-plugin   "
                       "(Docker: docs/docker.md)\n\n"
                       "A store that refuses the agent's certificate, user or password\n"
                       "ends it at start with one line; later, the agent logs it and\n"
                       "keeps forwarding.  TLS and user settings: docs/security.md.\n"
                       "Under systemd (Type=notify) it reports READY=1 once it serves;\n"
                       "the unit and metrics: docs/operations.md.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--config", metavar="FILE", help="a TOML file: [host] options, "
                   "static networks, endpoints and peers")
    a.add_argument("--store", metavar="URL", help="sqlite:///PATH or "
                   "etcd[s]://HOST:PORT[,HOST:PORT...] (default without --config: "
                   "$UVXLAN_STORE, else sqlite:///var/lib/uvxlan/state.db)")
    _add_store_auth(a)
    a.add_argument("--name", help="this host's name in the cluster")
    a.add_argument("--advertise", metavar="IP",
                   help="this host's underlay IPv4: other hosts send VXLAN here")
    a.add_argument("--port", type=int, metavar="N", help=f"VXLAN UDP port ({PORT_IANA})")
    a.add_argument("--offload", choices=OFFLOAD_MODES,
                   help="auto: TAP TSO + UDP GSO/GRO where the kernel has them; "
                   "off: TAP TSO with sendmmsg/recvmmsg only (what Linux 3.10 offers); "
                   "none: plain frames (default: the config's [host] offload, else auto)")
    a.add_argument("--control-group", metavar="GROUP",
                   help="members of GROUP may use the control socket (uvxlan stats, "
                   "fdb): mode 0660 (default: the config's [host] control_group, "
                   "else root only, 0600)")
    a.add_argument("--metrics", metavar="IP:PORT",
                   help="serve Prometheus metrics (GET /metrics) there, e.g. "
                   "127.0.0.1:9478 (default: the config's [host] metrics, else off)")
    a.add_argument("--metrics-public", action="store_const", const=True,
                   help="allow --metrics on an address beyond loopback: the metrics "
                   "show this host's networks, containers and peers to whoever "
                   "reaches it (default: refused)")
    a.add_argument("--docker-plugin", nargs="?", const=DOCKER_PLUGIN, metavar="PATH",
                   help="serve Docker's network and IPAM driver 'uvxlan' on this unix "
                   f"socket (default PATH: {DOCKER_PLUGIN}, where dockerd finds it); "
                   "needs a store.  docker network create -d uvxlan --ipam-driver "
                   "uvxlan -o uvxlan.network=NAME ...: docs/docker.md")
    a.add_argument("--collect-after", type=int, metavar="SECONDS",
                   help="with a store: delete an endpoint of this host whose netns has "
                   "been gone this long (its address is free again; a /proc/PID/ns/net "
                   "whose process ended: at once); 0: never (default: the config's "
                   "[host] collect_after, else 60)")
    a.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    a.set_defaults(func=_cmd_agent)

    s = sub.add_parser("stats", help="counters and drops of a running agent")
    s.add_argument("--agent", metavar="NAME",
                   help="the agent's host name, or its control socket's path"
                   " (default: the one agent running here)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_stats)

    lv = sub.add_parser(
        "leave", help="stop an agent for good: remove its endpoints, withdraw its host",
        description="Stop a running agent and remove everything it made: every\n"
        "container's eth0 it holds, and (with a store) its host record, at once,\n"
        "so the other hosts drop its paths now.  A plain stop (SIGTERM, Ctrl-C,\n"
        "a crash) leaves the endpoints and the host's lease for the next agent\n"
        "of the same name, which adopts them.  Waits until the agent has exited.",
        epilog="examples:\n  uvxlan leave --agent h1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    lv.add_argument("--agent", metavar="NAME",
                    help="the agent's host name, or its control socket's path"
                    " (default: the one agent running here)")
    lv.add_argument("--timeout", type=float, default=30.0, metavar="S",
                    help="seconds to wait for the agent to exit (default 30)")
    lv.set_defaults(func=_cmd_leave)

    from uvxlan.capture import ETHERTYPES, SNAPLEN_DEFAULT  # loads no C

    cap = sub.add_parser(
        "capture", help="live capture of the frames an agent switches, as pcap",
        description="Write pcap (Ethernet) of the frames a running agent's switch\n"
        "sees, live, to a file or to stdout, until Ctrl-C; then report how many\n"
        "frames were captured and how many the capture missed.  The agent copies\n"
        "matching frames into a bounded ring in C: a reader too slow for the\n"
        "traffic loses frames (counted), never slows forwarding.  Root only: the\n"
        "frames are the containers' private traffic.\n\n"
        "Where (--at): port-in (read from a container), port-out (written to\n"
        "one), wire-in (decapsulated, once admitted), wire-out (encapsulated,\n"
        "each datagram); or in, out, port, wire, all.  Default: where each frame\n"
        "enters the switch (in); both directions of --port's port with --port;\n"
        "the wire with --outer.",
        epilog="examples:\n"
        "  uvxlan capture --agent h1 --network net1 | tshark -r -\n"
        "  uvxlan capture --agent h1 --outer -w /tmp/h1.pcap\n"
        "  uvxlan capture --agent h1 --port c1 --ethertype arp -w arp.pcap\n"
        "  tshark -r /tmp/h1.pcap -T fields -e vxlan.vni -e icmp.type",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cap.add_argument("--agent", metavar="NAME",
                     help="the agent's host name, or its control socket's path"
                     " (default: the one agent running here)")
    cap.add_argument("--network", metavar="N", help="only this network (name or VNI)")
    cap.add_argument("--port", metavar="P",
                     help="only frames from or to this port: its number (`uvxlan stats`)"
                     " or its endpoint's NETNS[/IFNAME] (a netns name or path)")
    cap.add_argument("--mac", metavar="M", help="only frames with this source or"
                     " destination MAC")
    cap.add_argument("--ethertype", metavar="T", help="only this EtherType (also behind"
                     f" a VLAN tag): a number (0x0806) or {', '.join(ETHERTYPES)}")
    cap.add_argument("--outer", action="store_true",
                     help="keep the outer Ethernet/IPv4/UDP/VXLAN headers (wire points"
                     " only)")
    cap.add_argument("--at", metavar="POINTS",
                     help="where to capture, comma-separated (see above)")
    cap.add_argument("--snaplen", type=int, default=SNAPLEN_DEFAULT, metavar="N",
                     help="bytes kept of each frame, outer headers included (%(default)s)")
    cap.add_argument("--slots", type=int, default=0, metavar="N",
                     help="frames each datapath thread's ring holds (default: as many"
                     " as 8 MiB hold)")
    cap.add_argument("--pcapng", action="store_true",
                     help="write pcapng: each frame also says where it was taken (its"
                     " interface, AGENT:POINT), its network and its port (a comment)")
    cap.add_argument("-w", "--write", default="-", metavar="FILE",
                     help="write pcap here; - for stdout (default; never a terminal)")
    cap.set_defaults(func=_cmd_capture)
    from uvxlan.fault import add_fault_command
    add_fault_command(sub)

    f = sub.add_parser("fdb", help="forwarding table of a running agent")
    fsub = f.add_subparsers(dest="fdb_cmd", required=True, metavar="ACTION")
    fs = fsub.add_parser("show", help="list static and learned entries")
    fs.add_argument("--agent", metavar="NAME",
                    help="the agent's host name, or its control socket's path"
                    " (default: the one agent running here)")
    fs.add_argument("--network", metavar="NAME", help="only this network")
    fs.add_argument("--json", action="store_true", help="machine-readable output")
    fs.set_defaults(func=_cmd_fdb)

    po = sub.add_parser(
        "policy", help="VXLAN-GBP group policy of a network on a running agent",
        description="Show or change, live, the policy between endpoint groups of a\n"
        "network with gbp = true: a frame of group FROM reaches an endpoint of\n"
        "group TO if the rule for the pair allows it, else if the network's\n"
        "default does (allow unless set).  Each rule counts the frames it\n"
        "decided; denied ones count as the drop gbp_denied (uvxlan stats).\n"
        "With --agent, on that running agent, live, with the frames each rule\n"
        "decided: for a network of its config file, until it restarts (the\n"
        "file's policy and policy_default are where it is kept).  Without, in\n"
        "the cluster store, for a network made with --gbp: every agent serving\n"
        "it applies the change (docs/workbench.md).",
        epilog="examples:\n"
        "  uvxlan policy --network net1 --from 10 --to 20 deny      (the store)\n"
        "  uvxlan policy --agent h1 --network net1\n"
        "  uvxlan policy --agent h1 --network net1 --from 10 --to 20 deny\n"
        "  uvxlan policy --agent h1 --network net1 --from 10 --to 20 --delete\n"
        "  uvxlan policy --agent h1 --network net1 --default deny",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    po.add_argument("--agent", metavar="NAME",
                    help="the agent's host name, or its control socket's path"
                    " (default: the store's policy, not an agent's)")
    po.add_argument("--store", metavar="URL",
                    help="without --agent: sqlite:///ABS/PATH.db or etcd[s]://HOST:PORT[,...] "
                    "(default: $UVXLAN_STORE, else sqlite:///var/lib/uvxlan/state.db)")
    _add_store_auth(po)
    po.add_argument("--network", metavar="NAME", required=True, help="the network")
    po.add_argument("--from", dest="src", type=int, metavar="G1",
                    help="the sender's group (0..65535; 0: no group)")
    po.add_argument("--to", dest="dst", type=int, metavar="G2",
                    help="the receiving endpoint's group")
    po.add_argument("action", nargs="?", choices=("allow", "deny"),
                    help="set the rule for --from/--to")
    po.add_argument("--delete", action="store_true", help="remove the rule for --from/--to")
    po.add_argument("--default", choices=("allow", "deny"),
                    help="the action for pairs without a rule")
    po.add_argument("--json", action="store_true", help="machine-readable output")
    po.set_defaults(func=_cmd_policy)

    lab = sub.add_parser("lab", help="simulated hosts in network namespaces",
                         description="Simulated hosts on one machine: namespaces "
                         "uvx-LAB-h1..hN joined by a bridge in uvx-LAB-ul.")
    lsub = lab.add_subparsers(dest="lab_cmd", required=True, metavar="ACTION")
    up = lsub.add_parser("up", help="create the hosts")
    up.add_argument("--hosts", type=int, required=True, metavar="N")
    up.add_argument("--subnet", default="10.77.0.0/24", help="underlay subnet (%(default)s)")
    up.add_argument("--mtu", type=int, default=1500, help="underlay MTU (%(default)s)")
    down = lsub.add_parser("down", help="remove everything the lab made (safe to repeat)")
    status = lsub.add_parser("status", help="list the lab's hosts and containers")
    cont = lsub.add_parser("container", help="add a container namespace uvx-LAB-NAME")
    cont.add_argument("container", metavar="NAME")
    for q in (up, down, status, cont):
        q.add_argument("--name", default="lab", help="the lab's name (%(default)s)")
    lab.set_defaults(func=_cmd_lab)

    d = sub.add_parser("demo", help="two hosts, two networks: reachability and isolation",
                       description="Build two simulated hosts with two overlay networks, "
                       "show addresses, routes and MTU, ping within net1 across hosts, "
                       "show net2 is unreachable, then clean up.  Exits non-zero if "
                       "anything did not happen as expected.")
    d.add_argument("--keep", action="store_true",
                   help="leave the lab and agents running"
                   " (remove with `uvxlan lab down --name demo`)")
    d.add_argument("--docker", action="store_true",
                   help="the same with real Docker: a dockerd per host, `docker network "
                   "create -d uvxlan` and `docker run --network` (needs docker.io and "
                   "busybox-static: scripts/setup.sh --docker)")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="measure uvxlan beside Linux's kernel vxlan",
                       description="Build a fresh two-host lab per variant and measure "
                       "iperf3 TCP (1 and 4 streams), 64-byte UDP packet rate and loss, "
                       "ping RTT and agent CPU per Gbit.  Writes benchmarks/results/"
                       "latest.{json,md,png}; ratios are to kernel-vxlan.")
    # kept in step with uvxlan.lab.bench.CHOICES (not imported: the CLI loads lazily)
    variants = ["uvxlan-auto", "uvxlan-off", "uvxlan-none", "kernel-vxlan", "underlay"]
    b.add_argument("--variants", nargs="+", default=variants,
                   choices=[*variants, "uvxlan"], metavar="V",
                   help=f"any of {', '.join(variants)} (all by default); "
                   "uvxlan means uvxlan-auto")
    b.add_argument("--seconds", type=float, help="per iperf3 and UDP run (10; --quick 3)")
    b.add_argument("--repeat", type=int, help="rounds; medians reported (3; --quick 1)")
    b.add_argument("--pings", type=int, help="pings per round (200; --quick 50)")
    b.add_argument("--pps", type=int, metavar="N",
                   help="offer 64-byte UDP at N packets/s (default: kernel-vxlan's "
                   "unpaced rate in this run, else 200000)")
    b.add_argument("--quick", action="store_true", help="3 s runs, 1 round, 50 pings")
    b.add_argument("--out", metavar="DIR", help="results directory (benchmarks/results)")
    b.add_argument("--publish", action="store_true",
                   help="also copy the results to docs/perf/ (shown by the README)")
    b.set_defaults(func=_cmd_bench)
    _add_cluster_commands(sub)
    add_hook_command(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UvxlanError as exc:
        print(f"uvxlan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the trace on request
        if os.environ.get("UVXLAN_DEBUG"):
            raise
        print(f"uvxlan: internal error: {type(exc).__name__}: {exc} (a bug: please report"
              " it; UVXLAN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70




if __name__ == "__main__":
    sys.exit(main())
