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
    if bindings is not None and not isinstance(bindings, list):
        raise InvalidArgument(f"option {PORTMAP} must be a list of port bindings")
    for b in bindings or ():
        if not isinstance(b, dict):
            raise InvalidArgument(f"option {PORTMAP}: {str(b)[:80]!r} is not a port binding")
        proto = _PROTO.get(number(b, "Proto", 6))
        if proto is None:
            raise InvalidArgument(f"published port {b.get('Port')}: unknown protocol number "
                                  f"{b.get('Proto')}")
        port = number(b, "Port", 0)
        start, end = number(b, "HostPort", 0), number(b, "HostPortEnd", 0)
        host = "" if not start else f"{start}-{end}" if end > start else str(start)
        ip = text(b, "HostIP")
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


def number(body: Mapping[str, Any], key: str, default: int) -> int:
    """An integer field (Docker's port numbers and protocols); absent or null: default."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"field {key} must be an integer")
    return value


def objects(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """A list of objects (CreateNetwork's IPv4Data and IPv6Data); absent or null: none."""
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidArgument(f"field {key} must be a list of objects")
    return value


def obj(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"field {key} must be an object")
    return value
