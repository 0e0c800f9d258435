"""The CNI 1.1 protocol as data: the CNI_* environment, the plugin configuration on stdin,
results and errors. No I/O here (the unit tier tests it as it is).

Start-up is this plugin's budget (a runtime starts a new process for every call), so the
records are plain classes with __slots__ rather than dataclasses, whose import costs ~5 ms
(it pulls in inspect); and nothing of the daemon side is imported.
"""

from __future__ import annotations

import json
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The spec versions whose result format this plugin writes (0.1/0.2 had another format).
VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# The spec's well-known error codes, and this plugin's own (100+).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
BAD_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
BAD_CONFIG = 7
TRY_AGAIN = 11
NOT_AVAILABLE = 50
CHECK_MISMATCH = 100  # CHECK: the kernel differs from the attachment cnm recorded
INTERNAL = 999

# The capability arguments cnm-cni takes (declare them under "capabilities" in the conflist).
CAPABILITIES = ("portMappings", "ips", "mac", "aliases")
# Keys of a plugin configuration this plugin reads or that the protocol puts there.
_CONFIG_KEYS = frozenset({
    "cniVersion", "cniVersions", "name", "type", "network", "socket", "capabilities",
    "runtimeConfig", "prevResult", "args", "dns", "disableCheck", "disableGC",
    "loadOnlyInlinedPlugins",
})
_CNI_ARGS = frozenset({"IgnoreUnknown", "IP", "MAC", "K8S_POD_NAME", "K8S_POD_NAMESPACE",
                       "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"})
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PROTOCOLS = ("tcp", "udp", "sctp")


class CniError(Exception):
    """An error as the spec has it on stdout: a code, a short message, details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_dict(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def at_least(version: str, floor: str) -> bool:
    return VERSIONS.index(version) >= VERSIONS.index(floor)


# ---------------------------------------------------------------------------- environment
class Invocation:
    """The CNI_* environment of one call."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args")

    def __init__(self, command: str, container_id: str = "", netns: str = "",
                 ifname: str = "", args: dict[str, str] | None = None) -> None:
        self.command, self.container_id, self.netns = command, container_id, netns
        self.ifname, self.args = ifname, args or {}


def command_of(environ: dict[str, str]) -> str:
    cmd = environ.get("CNI_COMMAND", "")
    if cmd not in COMMANDS:
        raise CniError(BAD_ENVIRONMENT, f"CNI_COMMAND={cmd!r}: expected one of "
                       + ", ".join(COMMANDS) if cmd else "CNI_COMMAND is not set")
    return cmd


def parse_env(environ: dict[str, str]) -> Invocation:
    """The call's parameters, every one the command requires checked (code 4, naming the
    variable)."""
    cmd = command_of(environ)
    if cmd in ("VERSION", "STATUS", "GC"):
        return Invocation(cmd)
    cid = environ.get("CNI_CONTAINERID", "")
    if not cid:
        raise CniError(BAD_ENVIRONMENT, "CNI_CONTAINERID is not set")
    if not _CONTAINER_ID.fullmatch(cid):
        raise CniError(BAD_ENVIRONMENT, f"CNI_CONTAINERID={cid!r} is not a container id",
                       "letters, digits, '_', '.' and '-', starting with a letter or digit")
    ifname = environ.get("CNI_IFNAME", "")
    if not ifname:
        raise CniError(BAD_ENVIRONMENT, "CNI_IFNAME is not set")
    if (len(ifname) > 15 or ifname in (".", "..")
            or any(c in "/:" or c.isspace() for c in ifname)):
        raise CniError(BAD_ENVIRONMENT, f"CNI_IFNAME={ifname!r} is not an interface name",
                       "1-15 characters, no '/', ':' or whitespace, not '.' or '..'")
    netns = environ.get("CNI_NETNS", "")
    if cmd in ("ADD", "CHECK") and not netns:
        raise CniError(BAD_ENVIRONMENT, "CNI_NETNS is not set")
    return Invocation(cmd, cid, netns, ifname, parse_args(environ.get("CNI_ARGS", "")))


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS ("K=V;K2=V2"): the keys cnm-cni knows; another key is refused unless
    IgnoreUnknown is set, as the reference plugins do."""
    out: dict[str, str] = {}
    for pair in filter(None, text.split(";")):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CniError(BAD_ENVIRONMENT, f"CNI_ARGS: {pair!r} is not KEY=VALUE")
        out[key] = value
    if out.get("IgnoreUnknown", "").lower() not in ("1", "true"):
        unknown = sorted(set(out) - _CNI_ARGS)
        if unknown:
            raise CniError(BAD_ENVIRONMENT, f"CNI_ARGS: unknown argument {unknown[0]!r}",
                           "known: " + ", ".join(sorted(_CNI_ARGS)) + "; or set "
                           "IgnoreUnknown=1")
    return out


# ---------------------------------------------------------------------------- configuration
class Attachment:
    """What one ADD asks for beyond the network: addresses, MAC, names, ports."""

    __slots__ = ("ip", "ip6", "mac", "aliases", "ports", "hostname")

    def __init__(self) -> None:
        self.ip: str | None = None
        self.ip6: str | None = None
        self.mac: str | None = None
        self.aliases: list[str] = []
        self.ports: list[str] = []  # cnm's -p specs
        self.hostname: str | None = None


class NetConf:
    """The plugin configuration of one call, checked."""

    __slots__ = ("version", "name", "network", "socket", "want", "prev_result", "valid",
                 "dns")

    def __init__(self, version: str, name: str, network: str, socket: str | None) -> None:
        self.version, self.name, self.network, self.socket = version, name, network, socket
        self.want = Attachment()
        self.prev_result: dict[str, Any] | None = None
        self.valid: set[tuple[str, str]] = set()  # GC: (container id, ifname) to keep
        self.dns: dict[str, Any] = {}


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON object on stdin (code 6 when it is not one)."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CniError(DECODE_FAILURE, "the configuration on stdin is not JSON", str(e)) from None
    if not isinstance(data, dict):
        raise CniError(DECODE_FAILURE, "the configuration on stdin is not a JSON object")
    return data


def version_of(data: dict[str, Any]) -> str:
    v = data.get("cniVersion")
    if not isinstance(v, str) or not v:
        raise CniError(BAD_CONFIG, "cniVersion is missing from the configuration")
    if v not in VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {v!r} is not supported",
                       "cnm-cni supports " + ", ".join(VERSIONS))
    return v


def parse_config(data: dict[str, Any], inv: Invocation) -> NetConf:
    """The configuration, checked against the command: an unknown key is refused (code 2,
    key and value named), a malformed one too (code 7)."""
    version = version_of(data)
    floor = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(inv.command)
    if floor and not at_least(version, floor):
        raise CniError(INCOMPATIBLE_VERSION, f"{inv.command} needs cniVersion {floor} or "
                       f"later; the configuration says {version}")
    for key, value in data.items():
        if key not in _CONFIG_KEYS and not key.startswith("cni.dev/"):
            hint = (" cnm allocates the addresses of its networks itself"
                    if key == "ipam" else "")
            raise CniError(UNSUPPORTED_FIELD, f"unsupported field {key!r}: "
                           f"{json.dumps(value)[:200]}",
                           f"cnm-cni reads network, socket and runtimeConfig.{hint}")
    name = _string(data, "name", required=True)
    _string(data, "type", required=True)
    assert name is not None
    network = _string(data, "network") or name
    if not _NAME.fullmatch(network):
        raise CniError(BAD_CONFIG, f"network {network!r} is not a cnm network name")
    socket = _string(data, "socket")
    if socket is not None and not (socket.startswith("unix://") and len(socket) > 7):
        raise CniError(BAD_CONFIG, f"socket {socket!r}: expected unix://PATH")
    conf = NetConf(version, name, network, socket)
    prev = data.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise CniError(BAD_CONFIG, "prevResult must be a result object")
        conf.prev_result = prev
    dns = data.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            raise CniError(BAD_CONFIG, "dns must be an object")
        conf.dns = dns
    if inv.command == "GC":
        conf.valid = _attachments(data)
    if inv.command in ("ADD", "CHECK"):
        _wanted(conf, data, inv)
    return conf


def _string(data: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise CniError(BAD_CONFIG, f"{key} is missing from the configuration")
        return None
    if not isinstance(value, str) or not value:
        raise CniError(BAD_CONFIG, f"{key} must be a non-empty string")
    return value


def _attachments(data: dict[str, Any]) -> set[tuple[str, str]]:
    key = "cni.dev/valid-attachments"
    items = data.get(key)
    if not isinstance(items, list):
        raise CniError(BAD_CONFIG, f"GC needs {key}: a list of {{containerID, ifname}}")
    out = set()
    for a in items:
        if not (isinstance(a, dict) and isinstance(a.get("containerID"), str)
                and isinstance(a.get("ifname"), str)):
            raise CniError(BAD_CONFIG, f"{key}: {json.dumps(a)[:200]} is not "
                           "{containerID, ifname}")
        out.add((a["containerID"], a["ifname"]))
    return out


def _wanted(conf: NetConf, data: dict[str, Any], inv: Invocation) -> None:
    """runtimeConfig's capability arguments, args.cni and CNI_ARGS, into conf.want."""
    rc = data.get("runtimeConfig") or {}
    if not isinstance(rc, dict):
        raise CniError(BAD_CONFIG, "runtimeConfig must be an object")
    for key, value in rc.items():
        if key not in CAPABILITIES:
            raise CniError(UNSUPPORTED_FIELD, f"unsupported capability runtimeConfig.{key}: "
                           f"{json.dumps(value)[:200]}",
                           "cnm-cni takes " + ", ".join(CAPABILITIES))
    args = data.get("args")
    cni_args = args.get("cni") if isinstance(args, dict) else None
    cni_args = cni_args if isinstance(cni_args, dict) else {}
    want = conf.want
    ips: list[str] = []
    if rc.get("ips") is not None:
        ips = _strings(rc["ips"], "runtimeConfig.ips")
    elif cni_args.get("ips") is not None:
        ips = _strings(cni_args["ips"], "args.cni.ips")
    elif inv.args.get("IP"):
        ips = [x for x in inv.args["IP"].split(",") if x]
    for ip in ips:
        addr, _, prefix = ip.partition("/")
        if prefix and not prefix.isdecimal():
            raise CniError(BAD_CONFIG, f"ips: {ip!r} is not an address[/prefix]")
        family = "ip6" if ":" in addr else "ip"
        if getattr(want, family) is not None:
            raise CniError(BAD_CONFIG, f"ips: more than one IPv{6 if ':' in addr else 4} "
                           "address asked for; a cnm endpoint has one of each family")
        setattr(want, family, addr)
    mac = rc.get("mac", cni_args.get("mac", inv.args.get("MAC") or None))
    if mac is not None and not isinstance(mac, str):
        raise CniError(BAD_CONFIG, "runtimeConfig.mac must be a string")
    want.mac = mac or None
    want.ports = [_port(m) for m in _list(rc.get("portMappings"), "runtimeConfig.portMappings")]
    aliases = rc.get("aliases")
    if isinstance(aliases, dict):  # podman: {network name: [aliases]}
        aliases = aliases.get(conf.name, aliases.get(conf.network, []))
    want.aliases = _strings(aliases or [], "runtimeConfig.aliases")
    pod = inv.args.get("K8S_POD_NAME", "")
    want.hostname = pod if _NAME.fullmatch(pod) and len(pod) <= 63 else None


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CniError(BAD_CONFIG, f"{what} must be a list")
    return value


def _strings(value: Any, what: str) -> list[str]:
    items = _list(value, what)
    if not all(isinstance(x, str) and x for x in items):
        raise CniError(BAD_CONFIG, f"{what} must be a list of strings")
    return items


def _port(m: Any) -> str:
    """One portMappings entry as cnm's -p spec ([HOST_IP:]HOST_PORT:CONTAINER_PORT/PROTO)."""
    what = f"runtimeConfig.portMappings: {json.dumps(m)[:200]}"
    if not isinstance(m, dict):
        raise CniError(BAD_CONFIG, f"{what} is not an object")
    ports = []
    for key in ("hostPort", "containerPort"):
        p = m.get(key)
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 65535:
            raise CniError(BAD_CONFIG, f"{what}: {key} must be a port number 1-65535")
        ports.append(p)
    proto = m.get("protocol") or "tcp"
    if not isinstance(proto, str) or proto.lower() not in _PROTOCOLS:
        raise CniError(BAD_CONFIG, f"{what}: protocol must be tcp, udp or sctp")
    host_ip = m.get("hostIP") or ""
    if not isinstance(host_ip, str):
        raise CniError(BAD_CONFIG, f"{what}: hostIP must be a string")
    if ":" in host_ip:
        host_ip = f"[{host_ip}]"
    head = f"{host_ip}:" if host_ip else ""
    return f"{head}{ports[0]}:{ports[1]}/{proto.lower()}"


# ---------------------------------------------------------------------------- names
def sandbox_name(container_id: str) -> str:
    """The cnm sandbox of a container: "cni-" and its id, which a runtime's 64-hex ids
    overflow (cnm names have at most 64 characters): then 43 characters of it and a
    checksum of the whole. zlib, not hashlib: hashlib costs ~2.6 ms to import, and the ids
    come from the runtime, which is trusted."""
    if len(container_id) <= 60:
        return f"cni-{container_id}"
    import zlib

    raw = container_id.encode()
    return f"cni-{container_id[:43]}-{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"


LABEL = "cni.containerid"  # the sandbox label that marks it as cnm-cni's, with the full id


# ---------------------------------------------------------------------------- results
def default_holders(endpoints: list[dict[str, Any]]) -> dict[int, str]:
    """family -> id of the endpoint that gives the sandbox its default route (cnm's rule:
    the first, in connection order, with a gateway)."""
    out: dict[int, str] = {}
    for family, key in ((4, "gateway4"), (6, "gateway6")):
        for e in sorted(endpoints, key=lambda e: e.get("order", 0)):
            if e.get(key) and e.get("ifname"):
                out[family] = e["id"]
                break
    return out


def add_result(conf: NetConf, netns: str, ep: dict[str, Any],
               endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """The ADD result for endpoint ``ep`` (one of the sandbox's ``endpoints``), merged
    into prevResult when cnm-cni runs chained after another plugin."""
    prev = conf.prev_result or {}
    interfaces = list(prev.get("interfaces") or [])
    index = len(interfaces)
    interfaces.append({"name": ep["ifname"], "mac": ep["mac"], "sandbox": netns})
    ips = list(prev.get("ips") or [])
    routes = list(prev.get("routes") or [])
    holders = default_holders(endpoints)
    for family, cidr, gw in ((4, ep.get("ipv4"), ep.get("gateway4")),
                             (6, ep.get("ipv6"), ep.get("gateway6"))):
        if not cidr:
            continue
        gateway = gw if gw and gw not in ("0.0.0.0", "::") else None
        ip: dict[str, Any] = {"address": cidr, "interface": index}
        if gateway:
            ip["gateway"] = gateway
        if not at_least(conf.version, "1.0.0"):
            ip["version"] = str(family)
        ips.append(ip)
        if holders.get(family) == ep["id"]:
            route: dict[str, Any] = {"dst": "0.0.0.0/0" if family == 4 else "::/0"}
            if gateway:
                route["gw"] = gateway
            routes.append(route)
    out: dict[str, Any] = {"cniVersion": conf.version, "interfaces": interfaces, "ips": ips}
    if routes:
        out["routes"] = routes
    dns = _merge_dns(prev.get("dns") or {}, conf.dns,
                     {"nameservers": ["127.0.0.11"], "options": ["ndots:0"]}
                     if ep.get("dns") else {})
    if dns:
        out["dns"] = dns
    return out


def _merge_dns(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key in ("nameservers", "search", "options"):
            for value in part.get(key) or []:
                if value not in out.setdefault(key, []):
                    out[key].append(value)
        if part.get("domain") and "domain" not in out:
            out["domain"] = part["domain"]
    return out


def version_result(data: dict[str, Any] | None) -> dict[str, Any]:
    """VERSION's answer, in the version asked when it is one this plugin speaks (an
    unknown one, "9.9.9" or " ", is not echoed back as if it were)."""
    asked = data.get("cniVersion") if data else None
    return {"cniVersion": asked if asked in VERSIONS else LATEST,
            "supportedVersions": list(VERSIONS)}
