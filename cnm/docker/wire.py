"""Docker's plugin protocol as data (no I/O): the names Docker uses, its port bindings in
cnm's -p grammar and back, and the answer shapes, as Docker 20.10 sends and reads them
(``tests/fixtures/docker-remote-driver-trace.json`` is a capture)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cnm.errors import InvalidArgument
from cnm.portspec import PortMapping

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"

GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"
REQUEST_TYPE = "RequestAddressType"
GATEWAY_TYPE = "com.docker.network.gateway"

# cnm's own keys among a network's -o options; the rest go to the cnm driver.
DRIVER_OPTION = "cnm.driver"
NAME_OPTION = "cnm.name"
# An endpoint's driver option (`docker network connect --driver-opt "cnm.aliases=a b"`):
# the names cnm's DNS answers for it, separated by spaces or commas (the docker CLI splits
# a --driver-opt at commas, so spaces there). Docker's own DNS knows the container's name; cnm's
# would not otherwise, since Docker's protocol never tells a plugin the container's name.
ALIASES_OPTION = "cnm.aliases"
# Labels that tie a cnm record to Docker's.
NETWORK_LABEL = "com.docker.network.id"
SANDBOX_LABEL = "com.docker.sandbox.key"

_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}
_NUMBER = {v: k for k, v in _PROTO.items()}


def port_specs(bindings: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """Docker's ``com.docker.network.portmap`` as -p specs ("[ip:]host[-end]:port/proto");
    a host port 0 lets cnm pick one."""
    out = []
    for b in bindings or ():
        proto = _PROTO.get(int(b.get("Proto", 6)))
        if proto is None:
            raise InvalidArgument(f"published port {b.get('Port')}: unknown protocol number "
                                  f"{b.get('Proto')}")
        port = int(b.get("Port", 0))
        start, end = int(b.get("HostPort") or 0), int(b.get("HostPortEnd") or 0)
        host = "" if not start else f"{start}-{end}" if end > start else str(start)
        ip = str(b.get("HostIP") or "")
        if ":" in ip:
            ip = f"[{ip}]"
        out.append(f"{ip + ':' if ip else ''}{host}:{port}/{proto}")
    return out


def port_bindings(mappings: Iterable[PortMapping], container_ip: str | None) -> list[
        dict[str, Any]]:
    """cnm's mappings as Docker's port bindings (EndpointOperInfo)."""
    out = []
    for m in mappings:  # a resolved range maps host and container ports one to one
        for offset in range(m.container_port_end - m.container_port + 1):
            out.append({"Proto": _NUMBER[m.proto], "IP": container_ip or "",
                        "Port": m.container_port + offset, "HostIP": m.host_ip,
                        "HostPort": m.host_port + offset, "HostPortEnd": m.host_port + offset})
    return out


def exposed(mappings: Iterable[PortMapping]) -> list[dict[str, Any]]:
    return [{"Proto": _NUMBER[m.proto], "Port": p} for m in mappings
            for p in range(m.container_port, m.container_port_end + 1)]


def address(cidr: str | None) -> str:
    """"10.1.0.2/24" -> "10.1.0.2"; Docker sends gateways and aux addresses with prefixes."""
    return (cidr or "").partition("/")[0]


def text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise InvalidArgument(f"field {key} must be a string")
    return value


def aliases(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The endpoint's ``cnm.aliases`` option: names separated by spaces or commas."""
    value = options.get(ALIASES_OPTION)
    if value is None:
        return ()
    if not isinstance(value, str):
        raise InvalidArgument(f"endpoint option {ALIASES_OPTION} must be a string of "
                              "names separated by spaces or commas")
    return tuple(value.replace(",", " ").split())


def obj(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"field {key} must be an object")
    return value
