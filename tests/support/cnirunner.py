"""A CNI runtime that executes plugins as libcni does (containernetworking/cni
``libcni/api.go`` and ``pkg/invoke``), for testing a plugin the way podman,
containerd and CRI-O run it:

- the plugin is found by its ``type`` in CNI_PATH (a regular file, the
  first directory that has it) and executed with no arguments, the
  configuration on stdin and this process's environment plus CNI_COMMAND,
  CNI_CONTAINERID, CNI_NETNS, CNI_ARGS, CNI_IFNAME and CNI_PATH (all six,
  empty when not used; later values win);
- each plugin's request config is its object from the list with ``name``
  and ``cniVersion`` of the list, ``prevResult`` and ``runtimeConfig``
  (the capabilities it declares that the runtime has arguments for)
  inserted; ADD runs the plugins in order, each getting the previous
  one's result, DEL in reverse with the cached ADD result;
- the final ADD result is normalised as libcni's Go types do (unknown
  fields dropped, empty ones omitted) and cached in
  CACHE/results/NETWORK-CONTAINERID-IFNAME as a ``cniCacheV1`` record;
  CHECK and DEL read it back as prevResult; a successful DEL removes it;
- VERSION is probed with ``{"cniVersion": "1.1.0"}`` and CNI_NETNS,
  CNI_IFNAME, CNI_PATH set to "dummy" before a list is used;
- GC first DELs every cached attachment of the network not in the valid
  list, then (spec 1.1.0 and up) runs GC with ``cni.dev/valid-attachments``
  and ``cni.dev/attachments`` inserted; STATUS (1.1.0 and up) runs each
  plugin with an empty attachment;
- a plugin that exits non-zero fails with the error object it printed on
  stdout (or its stderr, if it printed none).

``runtime_netns`` runs the plugins inside a network namespace, as a
runtime running there would (a lab host's): setns in the child before exec.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CURRENT = "1.1.0"                 # version.Current() of the libcni this follows
CACHE_KIND = "cniCacheV1"
_CLONE_NEWNET = 0x40000000


class PluginError(Exception):
    """A plugin's error result: its code, msg and details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"[{code}] {msg}" + (f" ({details})" if details else ""))
        self.code, self.msg, self.details = code, msg, details


@dataclass
class RuntimeConf:
    """libcni's RuntimeConf: one attachment."""

    container_id: str
    netns: str
    ifname: str
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def normalise_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result as libcni's types100.Result marshals it again."""
    def keep(obj: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
        return {k: obj[k] for k in keys if obj.get(k) not in (None, "", 0, [], {})}

    out: dict[str, Any] = {"cniVersion": result.get("cniVersion")}
    ifaces = [keep(i, ("name", "mac", "mtu", "sandbox", "socketPath", "pciID"))
              for i in result.get("interfaces") or []]
    # name has no omitempty
    for raw, i in zip(result.get("interfaces") or [], ifaces, strict=True):
        i.setdefault("name", raw.get("name", ""))
    ips = []
    for ip in result.get("ips") or []:
        one = keep(ip, ("address", "gateway"))
        if ip.get("interface") is not None:          # *int: 0 is kept
            one["interface"] = ip["interface"]
        ips.append(one)
    routes = [keep(r, ("dst", "gw", "mtu", "advmss", "priority", "table", "scope"))
              for r in result.get("routes") or []]
    dns = keep(result.get("dns") or {}, ("nameservers", "domain", "search", "options"))
    for key, value in (("interfaces", ifaces), ("ips", ips), ("routes", routes),
                       ("dns", dns)):
        if value:
            out[key] = value
    return out


class CniRunner:
    """One network configuration list, run as libcni runs it."""

    def __init__(self, conflist: Mapping[str, Any], cni_path: Sequence[str], cache_dir: Path,
                 *, runtime_netns: str | None = None, timeout: float = 120.0) -> None:
        self.list_bytes = json.dumps(conflist).encode()
        self.conflist = dict(conflist)
        self.name: str = conflist["name"]
        self.version: str = conflist["cniVersion"]
        self.plugins: list[dict[str, Any]] = list(conflist["plugins"])
        self.path = list(cni_path)
        self.cache_dir = cache_dir
        self.runtime_netns = runtime_netns
        self.timeout = timeout
        self.calls: list[tuple[str, str, bytes]] = []   # (command, plugin, stdin) as run
        self.stderr: list[str] = []

    # --- execution ----------------------------------------------------------------

    def find(self, plugin: str) -> str:
        if not plugin or os.sep in plugin:
            raise PluginError(0, f"invalid plugin name: {plugin}")
        for d in self.path:
            full = os.path.join(d, plugin)
            if os.path.isfile(full):
                return full
        raise PluginError(0, f"failed to find plugin {plugin!r} in path {self.path}")

    def _env(self, command: str, rt: RuntimeConf | None, path: str | None = None
             ) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": rt.container_id if rt else "",
            "CNI_NETNS": rt.netns if rt else "",
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in rt.args) if rt else "",
            "CNI_IFNAME": rt.ifname if rt else "",
            "CNI_PATH": os.pathsep.join(self.path) if path is None else path,
        })
        return env

    def _enter(self) -> None:
        """In the child, before exec: into the runtime's netns."""
        assert self.runtime_netns is not None
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self.runtime_netns, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    def exec(self, plugin: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
        path = self.find(plugin)
        self.calls.append((env["CNI_COMMAND"], plugin, stdin))
        done = subprocess.run([path], input=stdin, env=dict(env), capture_output=True,
                              timeout=self.timeout,
                              preexec_fn=self._enter if self.runtime_netns else None)
        if done.stderr:
            self.stderr.append(done.stderr.decode(errors="replace"))
        if done.returncode != 0:
            if not done.stdout:
                raise PluginError(0, f"netplugin failed: {done.stderr.decode()!r}")
            try:
                err = json.loads(done.stdout)
            except ValueError:
                raise PluginError(0, "netplugin failed but error parsing its diagnostic "
                                     f"message {done.stdout!r}") from None
            raise PluginError(int(err.get("code", 0)), str(err.get("msg", "")),
                              str(err.get("details", "")))
        return done.stdout

    def _config(self, plugin: Mapping[str, Any], prev: Mapping[str, Any] | None,
                rt: RuntimeConf | None) -> bytes:
        conf = dict(plugin)
        conf.update(name=self.name, cniVersion=self.version)
        if prev is not None:
            conf["prevResult"] = prev
        if rt is not None:
            rc = {cap: rt.capability_args[cap]
                  for cap, on in (plugin.get("capabilities") or {}).items()
                  if on and cap in rt.capability_args}
            if rc:
                conf["runtimeConfig"] = rc
        return json.dumps(conf).encode()

    # --- VERSION ------------------------------------------------------------------

    def version_info(self, plugin: str) -> dict[str, Any]:
        env = self._env("VERSION", RuntimeConf("", "dummy", "dummy"), path="dummy")
        out = self.exec(plugin, json.dumps({"cniVersion": CURRENT}).encode(), env)
        info: dict[str, Any] = json.loads(out)
        return info

    def validate(self) -> list[str]:
        """ValidateNetworkList: every plugin supports the list's version;
        the capabilities the list declares."""
        caps = set()
        for plugin in self.plugins:
            supported = self.version_info(plugin["type"]).get("supportedVersions", [])
            if self.version not in supported:
                raise PluginError(0, f"plugin {plugin['type']} does not support config "
                                     f"version {self.version!r}")
            caps |= {c for c, on in (plugin.get("capabilities") or {}).items() if on}
        return sorted(caps)

    # --- the cache ----------------------------------------------------------------

    def cache_file(self, rt: RuntimeConf) -> Path:
        return self.cache_dir / "results" / f"{self.name}-{rt.container_id}-{rt.ifname}"

    def _cache_add(self, result: Mapping[str, Any], rt: RuntimeConf) -> None:
        cached: dict[str, Any] = {
            "kind": CACHE_KIND, "containerId": rt.container_id,
            "config": base64.b64encode(self.list_bytes).decode(),   # Go's []byte
            "ifName": rt.ifname, "networkName": self.name}
        if rt.netns:
            cached["netns"] = rt.netns
        if rt.args:
            cached["cniArgs"] = [list(a) for a in rt.args]
        if rt.capability_args:
            cached["capabilityArgs"] = rt.capability_args
        cached["result"] = dict(result)
        path = self.cache_file(rt)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(json.dumps(cached))
        path.chmod(0o600)

    def cached_result(self, rt: RuntimeConf) -> dict[str, Any] | None:
        try:
            cached = json.loads(self.cache_file(rt).read_text())
        except OSError:
            return None                  # may not exist on disk
        if cached.get("kind") != CACHE_KIND:
            raise PluginError(0, f"cached result of {self.name} has kind {cached.get('kind')}")
        result = normalise_result(cached["result"])
        result["cniVersion"] = self.version          # GetAsVersion(list version)
        return result

    def cached_attachments(self) -> list[dict[str, Any]]:
        d = self.cache_dir / "results"
        out = []
        for f in sorted(d.iterdir()) if d.is_dir() else []:
            try:
                cached = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if (cached.get("kind") == CACHE_KIND and cached.get("ifName")
                    and cached.get("networkName")):
                out.append(cached)
        return out

    # --- the operations -----------------------------------------------------------

    def add(self, rt: RuntimeConf) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        for plugin in self.plugins:
            out = self.exec(plugin["type"], self._config(plugin, result, rt),
                            self._env("ADD", rt))
            raw = json.loads(out)
            raw.setdefault("cniVersion", self.version)     # fixupResultVersion
            result = normalise_result(raw)
        assert result is not None
        self._cache_add(result, rt)
        return result

    def check(self, rt: RuntimeConf) -> None:
        if _version_tuple(self.version) < (0, 4, 0):
            raise PluginError(0, f"configuration version {self.version!r} does not support "
                                 "the CHECK command")
        if self.conflist.get("disableCheck"):
            return
        cached = self.cached_result(rt)
        for plugin in self.plugins:
            self.exec(plugin["type"], self._config(plugin, cached, rt), self._env("CHECK", rt))

    def delete(self, rt: RuntimeConf) -> None:
        cached = None
        if _version_tuple(self.version) >= (0, 4, 0):
            try:
                cached = self.cached_result(rt)
            except PluginError:
                self.cache_file(rt).unlink(missing_ok=True)
        for plugin in reversed(self.plugins):
            self.exec(plugin["type"], self._config(plugin, cached, rt), self._env("DEL", rt))
        self.cache_file(rt).unlink(missing_ok=True)

    def gc(self, valid: Sequence[tuple[str, str]]) -> list[PluginError]:
        """GCNetworkList; the errors, all of them (it goes on after one)."""
        if self.conflist.get("disableGC"):
            return []
        keep = set(valid)
        errors: list[PluginError] = []
        for cached in self.cached_attachments():
            if cached["networkName"] != self.name:
                continue
            if (cached["containerId"], cached["ifName"]) in keep:
                continue
            rt = RuntimeConf(cached["containerId"], cached.get("netns", ""), cached["ifName"],
                             [tuple(a) for a in cached.get("cniArgs") or []],  # type: ignore[misc]
                             cached.get("capabilityArgs") or {})
            try:
                self.delete(rt)
            except PluginError as exc:
                errors.append(exc)
        if _version_tuple(self.version) >= (1, 1, 0):
            items = [{"containerID": c, "ifname": i} for c, i in valid]
            for plugin in self.plugins:
                conf = {**plugin, "name": self.name, "cniVersion": self.version,
                        "cni.dev/valid-attachments": items, "cni.dev/attachments": items}
                try:
                    self.exec(plugin["type"], json.dumps(conf).encode(), self._env("GC", None))
                except PluginError as exc:
                    errors.append(exc)
        return errors

    def status(self) -> None:
        if _version_tuple(self.version) < (1, 1, 0):
            return
        for plugin in self.plugins:
            conf = {**plugin, "name": self.name, "cniVersion": self.version}
            self.exec(plugin["type"], json.dumps(conf).encode(), self._env("STATUS", None))
