"""remote: a Docker network plugin (a socket under /run/docker/plugins, or ``--plugin-dir``)
as a cnm driver, driven through Docker's remote-driver protocol as dockerd drives it.

cnm keeps the IPAM (CreateNetwork carries the subnets, CreateEndpoint the addresses, as
Docker sends them with its default IPAM) and the sandbox: the plugin makes the link in the
host namespace and names it in Join (SrcName); cnm moves it into the sandbox under the
endpoint's interface name, with the endpoint's MAC, and configures it. On leave cnm deletes
the interface in the sandbox (the plugin's DeleteEndpoint then finds its host end gone with
the pair, which a plugin must take as done, as with a container that died), then sends
Leave. The plugin's capabilities (Activate, GetCapabilities) are read at run time, on the
first use. Port publishing and the embedded DNS: cnm's DNS answers on its networks; ports are
refused (the plugin's firewall is its own).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cnm import names
from cnm.drivers.base import BaseDriver, Capabilities, Context, JoinInfo
from cnm.errors import CnmError, InvalidArgument, Unavailable, Unsupported
from cnm.model import Endpoint, Network

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
DEFAULT_DIR = "/run/docker/plugins"
log = logging.getLogger("cnm.drivers.remote")


@dataclass(frozen=True)
class RemoteOptions:
    """The plugin's options, passed through as Docker's generic options (the plugin
    validates them: its refusal refuses the network)."""

    raw: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, str]:
        return dict(self.raw)


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("plugin", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Plugin:
    """One plugin's socket: POST /Method with JSON, JSON back; the plugin's ``Err`` is a
    CnmError naming it."""

    def __init__(self, name: str, path: str, timeout: float = 30) -> None:
        self.name, self.path, self.timeout = name, path, timeout
        self._conn: _Unix | None = None

    def call(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # No body where Docker sends none (Activate, GetCapabilities).
        data = json.dumps(body).encode() if body is not None else b""
        status, raw = self._post(method, data)
        if status == 404:
            raise InvalidArgument(f'plugin "{self.name}" does not implement {method}')
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise InvalidArgument(f'plugin "{self.name}" answered {method} with no JSON'
                                  ) from None
        if not isinstance(answer, dict):
            raise InvalidArgument(f'plugin "{self.name}" answered {method} with no object')
        err = answer.get("Err") or answer.get("Error")
        if err or status >= 400:
            raise InvalidArgument(f'plugin "{self.name}": {err or f"HTTP {status}"}')
        return answer

    def _post(self, method: str, data: bytes) -> tuple[int, bytes]:
        while True:
            reused = self._conn is not None
            conn = self._conn or _Unix(self.path, self.timeout)
            try:
                conn.request("POST", f"/{method}", data, {"Accept": CONTENT_TYPE,
                                                          "Content-Type": CONTENT_TYPE})
                r = conn.getresponse()
                raw = r.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conn = None
                if reused:  # a kept-alive connection the plugin closed: once more, anew
                    continue
                raise Unavailable(f'plugin "{self.name}" at {self.path} does not answer '
                                  f"{method}: {e}", hint="is the plugin running?") from None
            self._conn = conn
            return r.status, raw

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RemoteDriver(BaseDriver[RemoteOptions]):
    """A Docker network plugin; its capabilities are asked of it on first use."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__()
        self.name = name
        self.plugin = Plugin(name, path)
        self._caps: Capabilities | None = None

    # Read at run time: a property where cnm's drivers have a constant.
    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        if self._caps is None:
            try:
                self._caps = self.activate()
            except CnmError as e:
                # Down for now (cnmd's start reads every network's capabilities): what a
                # plugin can only be, and asked again next time.
                log.warning("%s", e.message)
                return Capabilities(ipam=True, dns=True, publishes=False, link="moved")
        return self._caps

    def activate(self) -> Capabilities:
        """Docker's handshake: Plugin.Activate, then NetworkDriver.GetCapabilities."""
        implements = self.plugin.call("Plugin.Activate").get("Implements") or []
        if "NetworkDriver" not in implements:
            raise InvalidArgument(f'plugin "{self.name}" is no network driver (it '
                                  f"implements {', '.join(implements) or 'nothing'})")
        got = self.plugin.call("NetworkDriver.GetCapabilities")
        scope: Literal["local", "global"] = "global" if got.get("Scope") == "global" \
            else "local"
        return Capabilities(scope=scope, ipam=True, dns=True, publishes=False, link="moved")

    def parse_options(self, raw: Mapping[str, str]) -> RemoteOptions:
        return RemoteOptions(dict(raw))

    def _real(self, ctx: Context, what: str) -> None:
        if ctx.dry_run:
            raise Unsupported(f'--dry-run cannot plan {what} on plugin "{self.name}": '
                              "the plugin would do it")

    # ---- networks
    def create_network(self, net: Network, ctx: Context) -> None:
        self._real(ctx, "a network")
        data: dict[int, list[dict[str, Any]]] = {4: [], 6: []}
        for s in net.subnets:
            prefix = s.subnet.split("/")[1]
            entry: dict[str, Any] = {"AddressSpace": "LocalDefault", "Pool": s.subnet}
            if s.gateway:
                entry["Gateway"] = f"{s.gateway}/{prefix}"
            if s.aux_addresses:
                entry["AuxAddresses"] = {k: f"{v}/{prefix}" for k, v in s.aux_addresses.items()}
            data[s.version].append(entry)
        options: dict[str, Any] = {"com.docker.network.enable_ipv6": net.ipv6,
                                   "com.docker.network.generic": self.options(net).to_dict()}
        if net.internal:
            options["com.docker.network.internal"] = True
        if self._caps is None:  # activated before its first network, as Docker does
            self._caps = self.activate()
        self.plugin.call("NetworkDriver.CreateNetwork", {
            "NetworkID": net.id, "Options": options, "IPv4Data": data[4], "IPv6Data": data[6]})

    def restore_network(self, net: Network, ctx: Context) -> None:
        """The plugin keeps its networks (Docker never sends CreateNetwork again)."""

    def delete_network(self, net: Network, ctx: Context) -> None:
        self._real(ctx, "a network's removal")
        self.plugin.call("NetworkDriver.DeleteNetwork", {"NetworkID": net.id})
        super().delete_network(net, ctx)

    # ---- endpoints
    def create_endpoint(self, net: Network, ep: Endpoint, mac: str | None,
                        holders: Callable[[], Sequence[str]], ctx: Context) -> None:
        self._real(ctx, "an endpoint")
        answer = self.plugin.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": net.id, "EndpointID": ep.id,
            "Interface": {"Address": ep.ipv4 or "", "AddressIPv6": ep.ipv6 or "",
                          "MacAddress": ep.mac},
            "Options": {}})
        iface = answer.get("Interface") or {}
        for key, have in (("Address", ep.ipv4), ("AddressIPv6", ep.ipv6),
                          ("MacAddress", ep.mac)):
            if iface.get(key) and iface[key] != have:
                self.plugin.call("NetworkDriver.DeleteEndpoint",
                                 {"NetworkID": net.id, "EndpointID": ep.id})
                raise InvalidArgument(f'plugin "{self.name}" changed the endpoint\'s {key} '
                                      f"to {iface[key]}: cnm assigns it")

    def delete_endpoint(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        self._real(ctx, "an endpoint's removal")
        self.plugin.call("NetworkDriver.DeleteEndpoint",
                         {"NetworkID": net.id, "EndpointID": ep.id})

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        self._real(ctx, "a join")
        ids = {"NetworkID": net.id, "EndpointID": ep.id}
        answer = self.plugin.call("NetworkDriver.Join", {**ids, "SandboxKey": netns,
                                                          "Options": {}})
        src = str((answer.get("InterfaceName") or {}).get("SrcName") or "")
        if not src:
            self.plugin.call("NetworkDriver.Leave", ids)
            raise InvalidArgument(f'plugin "{self.name}" named no interface in Join')
        try:
            ctx.host.move_link(src, netns, ep.ifname, ep.mac)
        except CnmError:
            self.plugin.call("NetworkDriver.Leave", ids)
            raise
        gateways: list[tuple[int, str]] = []
        for version, key in ((4, "Gateway"), (6, "GatewayIPv6")):
            if gw := str(answer.get(key) or ""):
                gateways.append((version, gw.partition("/")[0]))
        return JoinInfo(interface=True, gateways=tuple(gateways))

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        self._real(ctx, "a leave")
        # Out of the sandbox first (the plugin cannot reach into it), then the plugin.
        ctx.sandbox.remove(netns, ep.ifname)
        self.plugin.call("NetworkDriver.Leave", {"NetworkID": net.id, "EndpointID": ep.id})


class Drivers(dict[str, Any]):
    """cnm's drivers, and Docker network plugins by name: a socket ``DIR/NAME.sock``,
    found by ``find`` when a network is created, and made again (``d[name]``) for the
    networks a restarted cnmd loads, whether the plugin is up yet or not. ``own`` is
    cnmd's own plugin socket, which it must never drive (its calls would wait on the
    very lock the caller holds)."""

    def __init__(self, builtin: Mapping[str, Any], plugin_dir: str | None,
                 own: str | None = None) -> None:
        super().__init__(builtin)
        self.plugin_dir, self.own = plugin_dir, own

    def _path(self, name: str) -> str | None:
        if self.plugin_dir is None or not names.valid_name(name):
            return None
        return os.path.join(self.plugin_dir, f"{name}.sock")

    def find(self, name: str) -> Any:
        """The driver ``name``, or a plugin of that name listening now; None if neither."""
        if name in self:
            return self[name]
        path = self._path(name)
        try:
            if path is None or not stat.S_ISSOCK(os.stat(path).st_mode):
                return None
        except OSError:
            return None
        if self.own is not None and os.path.exists(self.own) and os.path.samefile(path,
                                                                                  self.own):
            raise InvalidArgument(f"driver {name!r} is this cnmd's own Docker plugin",
                                  hint="use cnm's drivers directly (bridge, macvlan, ...)")
        return self[name]

    def __missing__(self, name: str) -> Any:
        path = self._path(name)
        if path is None:
            raise KeyError(name)
        driver = RemoteDriver(name, path)
        self[name] = driver
        return driver
