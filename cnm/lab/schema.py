"""Read a lab file into a `Lab`, refusing anything wrong with FILE:LINE:COLUMN and what.

YAML is composed (not loaded) so every value keeps its position; everything, the
references between parts included, is checked here, before anything runs.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any, TypeVar

import yaml

from cnm.errors import InvalidArgument
from cnm.lab import model as m

NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
IFNAME = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
RESERVED = ("gateway",)
T = TypeVar("T")


class LabFileError(InvalidArgument):
    """A lab file refused; the message starts with FILE:LINE:COLUMN."""


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self._c = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node | None, what: str) -> LabFileError:
        if node is None:
            return LabFileError(f"{self.path}: {what}")
        mk = node.start_mark
        return LabFileError(f"{self.path}:{mk.line + 1}:{mk.column + 1}: {what}")

    def mapping(self, node: yaml.Node, where: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise self.fail(k, f"{where}: keys must be strings")
            if key in out:
                raise self.fail(k, f"{where}: duplicate key {key!r}")
            if key not in allowed:
                raise self.fail(k, f"{where}: unknown key {key!r} (allowed: "
                                   + ", ".join(allowed) + ")")
            out[key] = (k, v)
        for key in required:
            if key not in out:
                raise self.fail(node, f"{where}: missing key {key!r}")
        return out

    def named(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """A mapping NAME -> body whose names must be valid lab names."""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping of names")
        seen: set[str] = set()
        out = []
        for k, v in node.value:
            name = self.scalar(k, f"a name in {where}", str)
            if name in seen:
                raise self.fail(k, f"{where}: duplicate name {name!r}")
            seen.add(name)
            out.append((name, k, v))
        return out

    def scalar(self, node: yaml.Node, where: str, kind: type[T]) -> T:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{where} must be a {kind.__name__}")
        value = self._c.construct_object(node)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = node.value
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(node, f"{where} must be a {kind.__name__}, not {node.value!r}")
        return value

    def string_list(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode):
            return [(self.scalar(node, where, str), node)]
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{where} must be a string or a list of strings")
        return [(self.scalar(n, f"an item of {where}", str), n) for n in node.value]

    def options(self, node: yaml.Node, where: str) -> dict[str, str]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping")
        out: dict[str, str] = {}
        for k, v in node.value:
            key = self.scalar(k, f"a key of {where}", str)
            if not isinstance(v, yaml.ScalarNode):
                raise self.fail(v, f"{where}.{key} must be a scalar")
            value = self._c.construct_object(v)
            out[key] = ("true" if value else "false") if isinstance(value, bool) else v.value
        return out


def _name(r: _Reader, node: yaml.Node, name: str, what: str) -> str:
    if not NAME.match(name):
        raise r.fail(node, f"{what} name {name!r} is invalid: 1-15 of a-z, 0-9 and -, "
                           "starting with a letter")
    if name in RESERVED:
        raise r.fail(node, f"{what} name {name!r} is reserved")
    return name


def _cidr(r: _Reader, node: yaml.Node, text: str, where: str, host: bool) -> str:
    try:
        if host:
            ipaddress.ip_interface(text)
            if "/" not in text:
                raise ValueError
        else:
            ipaddress.ip_network(text, strict=True)
    except ValueError:
        want = "an address with its prefix (10.0.0.1/24)" if host else "a subnet (10.0.0.0/24)"
        raise r.fail(node, f"{where}: {text!r} is not {want}") from None
    return text


def _ip(r: _Reader, node: yaml.Node, text: str, where: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise r.fail(node, f"{where}: {text!r} is not an IP address") from None
    return text


DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
RATE = re.compile(r"^\d+(?:\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")


def _impair(r: _Reader, node: yaml.Node, where: str) -> m.Impairment:
    f = r.mapping(node, where, ("delay", "jitter", "loss", "rate"))
    vals: dict[str, Any] = {}
    for key in ("delay", "jitter"):
        if key in f:
            text = r.scalar(f[key][1], f"{where}.{key}", str)
            mt = DURATION.match(text)
            if not mt:
                raise r.fail(f[key][1], f"{where}.{key}: {text!r} is not a duration "
                                        "(10ms, 1.5s, 200us)")
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[mt.group(2)]
            vals[f"{key}_ms"] = float(mt.group(1)) * scale
    if "loss" in f:
        text = r.scalar(f["loss"][1], f"{where}.loss", str).rstrip("%")
        try:
            loss = float(text)
        except ValueError:
            loss = -1
        if not 0 <= loss <= 100:
            raise r.fail(f["loss"][1], f"{where}.loss: expected a percentage 0-100 (1%)")
        vals["loss_pct"] = loss
    if "rate" in f:
        text = r.scalar(f["rate"][1], f"{where}.rate", str)
        if not RATE.match(text):
            raise r.fail(f["rate"][1], f"{where}.rate: {text!r} is not a rate (10mbit)")
        vals["rate"] = text
    if "jitter_ms" in vals and "delay_ms" not in vals:
        raise r.fail(node, f"{where}: jitter needs a delay")
    return m.Impairment(**vals)


def _bool(r: _Reader, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, where: str,
          default: bool = False) -> bool:
    return r.scalar(fields[key][1], f"{where}.{key}", bool) if key in fields else default


def load(path: str) -> m.Lab:
    """The lab in ``path``; LabFileError names what is wrong and where."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LabFileError(f"cannot read lab file {path}: {e.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = "<lab>") -> m.Lab:
    r = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mk = e.problem_mark or e.context_mark
        where = f"{path}:{mk.line + 1}:{mk.column + 1}" if mk else path
        raise LabFileError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    if root is None:
        raise LabFileError(f"{path}: the file is empty (a lab needs at least a name)")
    top = r.mapping(root, "the lab", ("name", "title", "description", "requires", "hosts",
                                      "switches", "links", "networks", "sandboxes",
                                      "checks", "cluster"), required=("name",))
    name = r.scalar(top["name"][1], "name", str)
    if not LAB_NAME.match(name):
        raise r.fail(top["name"][1], f"lab name {name!r} is invalid: 1-20 of a-z, 0-9 and "
                                     "-, starting with a letter")
    b = _Builder(r, top)
    return m.Lab(
        name=name, path=path,
        title=r.scalar(top["title"][1], "title", str) if "title" in top else "",
        description=(r.scalar(top["description"][1], "description", str)
                     if "description" in top else ""),
        requires=b.requires(), hosts=b.hosts, switches=b.switches, links=b.links,
        networks=b.networks, sandboxes=b.sandboxes, checks=b.checks(), cluster=b.cluster())


class _Builder:
    """Builds the parts in dependency order, each checking its references to the ones
    before it."""

    def __init__(self, r: _Reader, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
        self.r, self.top = r, top
        self.nodes: dict[str, str] = {}  # every name of the lab -> what it is
        self.hosts = self._hosts()
        self.switches = self._switches()
        self.links = self._links()
        self.networks = self._networks()
        self.sandboxes = self._sandboxes()

    def _claim(self, node: yaml.Node, name: str, what: str) -> str:
        _name(self.r, node, name, what)
        if name in self.nodes:
            raise self.r.fail(node, f"{what} name {name!r} is already the name of a "
                                    f"{self.nodes[name]}")
        self.nodes[name] = what
        return name

    def requires(self) -> tuple[str, ...]:
        if "requires" not in self.top:
            return ()
        allowed = (*m.FEATURES, *m.PEERS)
        out = []
        for value, node in self.r.string_list(self.top["requires"][1], "requires"):
            if value not in allowed:
                raise self.r.fail(node, f"requires: unknown {value!r} (allowed: "
                                        + ", ".join(allowed) + ")")
            out.append(value)
        return tuple(out)

    def _hosts(self) -> tuple[m.Host, ...]:
        r = self.r
        if "hosts" not in self.top:
            self.nodes["host"] = "host"
            return (m.Host("host"),)
        out = []
        for name, k, v in r.named(self.top["hosts"][1], "hosts"):
            self._claim(k, name, "host")
            where = f"hosts.{name}"
            if isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null"):
                out.append(m.Host(name))
                continue
            f = r.mapping(v, where, ("cnmd", "forwarding", "routes", "docker"))
            routes = []
            if "routes" in f:
                seq = f["routes"][1]
                if not isinstance(seq, yaml.SequenceNode):
                    raise r.fail(seq, f"{where}.routes must be a list")
                for item in seq.value:
                    rf = r.mapping(item, f"a route of {where}", ("to", "via"),
                                   required=("to", "via"))
                    to = r.scalar(rf["to"][1], "to", str)
                    if to != "default":
                        _cidr(r, rf["to"][1], to, f"{where}.routes.to", host=False)
                    via = _ip(r, rf["via"][1], r.scalar(rf["via"][1], "via", str),
                              f"{where}.routes.via")
                    routes.append(m.Route(to, via))
            host = m.Host(name, cnmd=_bool(r, f, "cnmd", where, True),
                          forwarding=_bool(r, f, "forwarding", where),
                          routes=tuple(routes), docker=_bool(r, f, "docker", where))
            if host.docker and not host.cnmd:
                raise r.fail(f["docker"][1], f"{where}.docker: dockerd uses cnm as its "
                                             "network plugin, so the host needs cnmd")
            out.append(host)
        if not out:
            raise r.fail(self.top["hosts"][1], "hosts: a lab needs at least one host")
        if not any(h.cnmd for h in out):
            raise r.fail(self.top["hosts"][1], "hosts: at least one host must run cnmd")
        return tuple(out)

    def _switches(self) -> tuple[m.Switch, ...]:
        if "switches" not in self.top:
            return ()
        out = []
        for name, k, v in self.r.named(self.top["switches"][1], "switches"):
            self._claim(k, name, "switch")
            if isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null"):
                out.append(m.Switch(name))
                continue
            f = self.r.mapping(v, f"switches.{name}", ("hairpin",))
            out.append(m.Switch(name, hairpin=_bool(self.r, f, "hairpin", f"switches.{name}")))
        return tuple(out)

    def _links(self) -> tuple[m.Link, ...]:
        r = self.r
        if "links" not in self.top:
            return ()
        seq = self.top["links"][1]
        if not isinstance(seq, yaml.SequenceNode):
            raise r.fail(seq, "links must be a list")
        out: list[m.Link] = []
        ifnames: set[tuple[str, str]] = set()
        ports: dict[str, int] = {}
        for i, item in enumerate(seq.value):
            where = f"links[{i}]"
            f = r.mapping(item, where, ("name", "ends", "mtu", "impair"), required=("ends",))
            name = (r.scalar(f["name"][1], f"{where}.name", str) if "name" in f
                    else f"link{i}")
            if any(lk.name == name for lk in out):
                raise r.fail(f.get("name", (item, item))[1], f"{where}: duplicate link "
                                                              f"name {name!r}")
            ends_node = f["ends"][1]
            if not isinstance(ends_node, yaml.SequenceNode) or len(ends_node.value) != 2:
                raise r.fail(ends_node, f"{where}.ends must be a list of two ends")
            ends = []
            for j, en in enumerate(ends_node.value):
                ends.append(self._end(en, f"{where}.ends[{j}]", ifnames, ports))
            if ends[0].node == ends[1].node:
                raise r.fail(ends_node, f"{where}: both ends are on {ends[0].node!r}")
            mtu = None
            if "mtu" in f:
                mtu = r.scalar(f["mtu"][1], f"{where}.mtu", int)
                if not 68 <= mtu <= 65535:
                    raise r.fail(f["mtu"][1], f"{where}.mtu: {mtu} is not in 68-65535")
            impair = _impair(r, f["impair"][1], f"{where}.impair") if "impair" in f else None
            out.append(m.Link(name, (ends[0], ends[1]), mtu, impair))
        return tuple(out)

    def _end(self, node: yaml.Node, where: str, ifnames: set[tuple[str, str]],
             ports: dict[str, int]) -> m.LinkEnd:
        r = self.r
        if isinstance(node, yaml.ScalarNode):
            text = r.scalar(node, where, str)
            owner, _, ifname = text.partition(":")
            f: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        else:
            f = r.mapping(node, where, ("node", "ifname", "address", "hairpin", "impair"),
                          required=("node",))
            owner = r.scalar(f["node"][1], f"{where}.node", str)
            ifname = r.scalar(f["ifname"][1], f"{where}.ifname", str) if "ifname" in f else ""
        kind = self.nodes.get(owner)
        if kind not in ("host", "switch"):
            raise r.fail(node, f"{where}: {owner!r} is not a host or a switch of this lab")
        if kind == "switch":
            for key in ("address",):
                if key in f:
                    raise r.fail(f[key][0], f"{where}: a switch port has no {key}")
            if not ifname:
                ifname = f"p{ports.get(owner, 0)}"
            ports[owner] = ports.get(owner, 0) + 1
        elif "hairpin" in f:
            raise r.fail(f["hairpin"][0], f"{where}: hairpin is for a switch's port")
        if not ifname:
            raise r.fail(node, f"{where}: the end on host {owner!r} needs an ifname "
                               "(host:eth1)")
        if not IFNAME.match(ifname):
            raise r.fail(node, f"{where}: {ifname!r} is not an interface name (1-15 of "
                               "a-z, A-Z, 0-9, _ . -)")
        if (owner, ifname) in ifnames:
            raise r.fail(node, f"{where}: {owner} already has an interface {ifname!r}")
        ifnames.add((owner, ifname))
        addresses: list[str] = []
        if "address" in f:
            for text, an in r.string_list(f["address"][1], f"{where}.address"):
                addresses.append(_cidr(r, an, text, f"{where}.address", host=True))
        return m.LinkEnd(owner, ifname, tuple(addresses),
                         hairpin=_bool(r, f, "hairpin", where),
                         impair=_impair(r, f["impair"][1], f"{where}.impair")
                         if "impair" in f else None)

    def _networks(self) -> tuple[m.Network, ...]:
        r = self.r
        if "networks" not in self.top:
            return ()
        cnmd_hosts = tuple(h.name for h in self.hosts if h.cnmd)
        out = []
        for name, k, v in r.named(self.top["networks"][1], "networks"):
            where = f"networks.{name}"
            if name in m.PREDEFINED_NETWORKS:
                raise r.fail(k, f"network {name!r} is pre-defined on every host: use it "
                                "without declaring it")
            _name(r, k, name, "network")
            f = r.mapping(v, where, ("driver", "subnet", "gateway", "ip_range",
                                     "aux_addresses", "ipv6", "internal", "options",
                                     "hosts")) if not (
                isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null")) else {}
            driver = r.scalar(f["driver"][1], f"{where}.driver", str) if "driver" in f \
                else "bridge"
            subnets = tuple(_cidr(r, n, t, f"{where}.subnet", host=False)
                            for t, n in r.string_list(f["subnet"][1], f"{where}.subnet")
                            ) if "subnet" in f else ()
            gateways = tuple(_ip(r, n, t, f"{where}.gateway")
                             for t, n in r.string_list(f["gateway"][1], f"{where}.gateway")
                             ) if "gateway" in f else ()
            ranges = tuple(_cidr(r, n, t, f"{where}.ip_range", host=False)
                           for t, n in r.string_list(f["ip_range"][1], f"{where}.ip_range")
                           ) if "ip_range" in f else ()
            if gateways and not subnets:
                raise r.fail(f["gateway"][1], f"{where}.gateway needs a subnet")
            nets = [ipaddress.ip_network(s) for s in subnets]
            for t, node in zip(gateways, (n for _, n in r.string_list(
                    f["gateway"][1], "gateway")) if "gateway" in f else (), strict=False):
                if not any(ipaddress.ip_address(t) in n for n in nets):
                    raise r.fail(node, f"{where}.gateway: {t} is in none of its subnets")
            aux = r.options(f["aux_addresses"][1], f"{where}.aux_addresses") \
                if "aux_addresses" in f else {}
            options = r.options(f["options"][1], f"{where}.options") if "options" in f else {}
            hosts = cnmd_hosts
            if "hosts" in f:
                hosts = tuple(self._host_ref(n, t, f"{where}.hosts", cnmd=True)
                              for t, n in r.string_list(f["hosts"][1], f"{where}.hosts"))
            out.append(m.Network(name, driver, subnets, gateways, ranges, aux,
                                 ipv6=_bool(r, f, "ipv6", where),
                                 internal=_bool(r, f, "internal", where),
                                 options=options, hosts=hosts))
        for i, a in enumerate(out):
            for b in out[i + 1:]:
                shared = set(a.hosts) & set(b.hosts)
                if shared and any(ipaddress.ip_network(x).overlaps(ipaddress.ip_network(y))
                                  for x in a.subnets for y in b.subnets):
                    raise r.fail(self.top["networks"][1],
                                 f"networks {a.name} and {b.name} have overlapping subnets "
                                 f"on host {sorted(shared)[0]}")
        return tuple(out)

    def _host_ref(self, node: yaml.Node, name: str, where: str, cnmd: bool = False) -> str:
        if self.nodes.get(name) != "host":
            raise self.r.fail(node, f"{where}: {name!r} is not a host of this lab (hosts: "
                                    + ", ".join(h.name for h in self.hosts) + ")")
        if cnmd and not next(h for h in self.hosts if h.name == name).cnmd:
            raise self.r.fail(node, f"{where}: host {name!r} runs no cnmd")
        return name

    def _sandboxes(self) -> tuple[m.Sandbox, ...]:
        r = self.r
        if "sandboxes" not in self.top:
            return ()
        out = []
        for name, k, v in r.named(self.top["sandboxes"][1], "sandboxes"):
            self._claim(k, name, "sandbox")
            where = f"sandboxes.{name}"
            f = r.mapping(v, where, ("host", "networks", "ports", "hostname", "serve", "run",
                                     "docker")) if not (
                isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null")) else {}
            cnmd = [h.name for h in self.hosts if h.cnmd]
            if "host" in f:
                host = self._host_ref(f["host"][1], r.scalar(f["host"][1], f"{where}.host",
                                                             str), f"{where}.host", cnmd=True)
            elif len(cnmd) == 1:
                host = cnmd[0]
            else:
                raise r.fail(v, f"{where}: which host? (missing key 'host'; hosts: "
                                + ", ".join(cnmd) + ")")
            atts = self._attachments(f["networks"][1] if "networks" in f else None, where, host)
            ports = tuple(t for t, _ in r.string_list(f["ports"][1], f"{where}.ports")
                          ) if "ports" in f else ()
            serve = []
            if "serve" in f:
                for t, n in r.string_list(f["serve"][1], f"{where}.serve"):
                    proto, _, port = t.partition("/")
                    if proto not in ("tcp", "udp", "http") or not port.isdigit() \
                            or not 0 < int(port) < 65536:
                        raise r.fail(n, f"{where}.serve: {t!r} is not PROTO/PORT (tcp/80, "
                                        "udp/53, http/8080)")
                    serve.append(m.Service(proto, int(port)))
            run: tuple[str, ...] = ()
            if "run" in f:
                node = f["run"][1]
                if isinstance(node, yaml.ScalarNode):
                    run = tuple(shlex.split(r.scalar(node, f"{where}.run", str)))
                else:
                    run = tuple(t for t, _ in r.string_list(node, f"{where}.run"))
                if not run:
                    raise r.fail(node, f"{where}.run is empty")
            docker = None
            if "docker" in f:
                docker = self._docker(f["docker"][1], where, host, atts, v)
            out.append(m.Sandbox(
                name, host, atts, ports,
                hostname=r.scalar(f["hostname"][1], f"{where}.hostname", str)
                if "hostname" in f else None,
                serve=tuple(serve), run=run, docker=docker))
        return tuple(out)

    def _docker(self, node: yaml.Node, where: str, host: str,
                atts: tuple[m.Attachment, ...], body: yaml.Node) -> str:
        """A Docker container's image and what of a sandbox Docker can give it."""
        r = self.r
        image = r.scalar(node, f"{where}.docker", str)
        if image not in m.DOCKER_IMAGES:
            raise r.fail(node, f"{where}.docker: image {image!r} is not one the lab can "
                               "make (there is no registry; allowed: "
                               + ", ".join(m.DOCKER_IMAGES) + ")")
        if not next(h for h in self.hosts if h.name == host).docker:
            raise r.fail(node, f"{where}.docker: host {host!r} runs no dockerd (give it "
                               "docker: true)")
        for i, a in enumerate(atts):
            if a.network in m.PREDEFINED_NETWORKS:
                raise r.fail(body, f"{where}: a Docker container goes on the lab's cnm "
                                   f"networks only, not {a.network!r} (Docker's own "
                                   "bridge, host and none are not cnm's)")
            what = ("ifname" if a.ifname else "impair" if a.impair is not None
                    else "mac" if a.mac and i else "")
            if what:
                raise r.fail(body, f"{where}: {what} on network {a.network!r} is not "
                                   "possible for a Docker container (Docker names its "
                                   "interfaces and sets a MAC on the first network only)")
        return image

    def _attachments(self, node: yaml.Node | None, where: str,
                     host: str) -> tuple[m.Attachment, ...]:
        r = self.r
        if node is None:
            return (m.Attachment("bridge"),)
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise r.fail(node, f"{where}.networks must be a non-empty list")
        out: list[m.Attachment] = []
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                net = r.scalar(item, f"{where}.networks", str)
                f: dict[str, tuple[yaml.Node, yaml.Node]] = {}
            else:
                f = r.mapping(item, f"a network of {where}", ("network", "ip", "ip6",
                                                              "aliases", "mac", "ifname",
                                                              "impair"), required=("network",))
                net = r.scalar(f["network"][1], "network", str)
            nw = next((n for n in self.networks if n.name == net), None)
            if net not in m.PREDEFINED_NETWORKS and nw is None:
                raise r.fail(item, f"{where}: no network {net!r} in this lab (networks: "
                                   + ", ".join([*m.PREDEFINED_NETWORKS,
                                                *(n.name for n in self.networks)]) + ")")
            if nw is not None and host not in nw.hosts:
                raise r.fail(item, f"{where}: network {net!r} is not on host {host!r}")
            if any(a.network == net for a in out):
                raise r.fail(item, f"{where}: network {net!r} is listed twice")
            if net in ("host", "none") and (out or len(node.value) > 1):
                raise r.fail(item, f"{where}: a sandbox on {net!r} can be on no other network")
            ip = _ip(r, f["ip"][1], r.scalar(f["ip"][1], "ip", str), f"{where}.ip") \
                if "ip" in f else None
            ip6 = _ip(r, f["ip6"][1], r.scalar(f["ip6"][1], "ip6", str), f"{where}.ip6") \
                if "ip6" in f else None
            if ip and nw is not None and nw.subnets and not any(
                    ipaddress.ip_address(ip) in ipaddress.ip_network(s) for s in nw.subnets):
                raise r.fail(f["ip"][1], f"{where}: {ip} is not in network {net}'s subnets "
                                         + ", ".join(nw.subnets))
            aliases = tuple(t for t, _ in r.string_list(f["aliases"][1], "aliases")
                            ) if "aliases" in f else ()
            ifname = r.scalar(f["ifname"][1], "ifname", str) if "ifname" in f else ""
            if ifname and not IFNAME.match(ifname):
                raise r.fail(f["ifname"][1], f"{where}: {ifname!r} is not an interface name")
            out.append(m.Attachment(
                net, ip, ip6, aliases,
                mac=r.scalar(f["mac"][1], "mac", str) if "mac" in f else None,
                ifname=ifname,
                impair=_impair(r, f["impair"][1], f"{where}.impair") if "impair" in f
                else None))
        return tuple(out)

    def cluster(self) -> m.Cluster | None:
        r = self.r
        if "cluster" not in self.top:
            return None
        f = r.mapping(self.top["cluster"][1], "cluster", ("store", "members", "tls"),
                      required=("store", "members"))
        store = r.scalar(f["store"][1], "cluster.store", str)
        if store != "etcd":
            raise r.fail(f["store"][1], f"cluster.store: {store!r} is not supported "
                                        "(allowed: etcd)")
        members = tuple(self._host_ref(n, t, "cluster.members")
                        for t, n in r.string_list(f["members"][1], "cluster.members"))
        if not members:
            raise r.fail(f["members"][1], "cluster.members: at least one host")
        if len(set(members)) != len(members):
            raise r.fail(f["members"][1], "cluster.members: a host is listed twice")
        probe = m.Lab("", "", hosts=self.hosts, links=self.links)
        for h in [*members, *(h.name for h in self.hosts if h.cnmd)]:
            if not probe.address_of(h):
                raise r.fail(self.top["cluster"][1],
                             f"cluster: host {h!r} has no link address (an etcd member "
                             "listens on its host's first link address, and every cnmd "
                             "host advertises its own)")
        return m.Cluster(store, members, tls=_bool(r, f, "tls", "cluster"))

    def checks(self) -> tuple[m.Check, ...]:
        r = self.r
        if "checks" not in self.top:
            return ()
        seq = self.top["checks"][1]
        if not isinstance(seq, yaml.SequenceNode):
            raise r.fail(seq, "checks must be a list")
        return tuple(self._check(item, f"checks[{i}]") for i, item in enumerate(seq.value))

    def _check(self, node: yaml.Node, where: str) -> m.Check:
        r = self.r
        f = r.mapping(node, where, (*m.CHECK_KINDS, "from", "expect", "port", "seen_as",
                                    "family", "type", "timeout", "name"), required=("from",))
        kinds = [k for k in m.CHECK_KINDS if k in f]
        if len(kinds) != 1:
            raise r.fail(node, f"{where}: a check has exactly one of "
                               + ", ".join(m.CHECK_KINDS))
        kind = kinds[0]
        target_node = f[kind][1]
        target = r.scalar(target_node, f"{where}.{kind}", str)
        source = r.scalar(f["from"][1], f"{where}.from", str)
        if self.nodes.get(source) not in ("host", "sandbox"):
            raise r.fail(f["from"][1], f"{where}.from: {source!r} is not a host or a sandbox "
                                       "of this lab")
        family = r.scalar(f["family"][1], f"{where}.family", int) if "family" in f else 4
        if family not in (4, 6):
            raise r.fail(f["family"][1], f"{where}.family: expected 4 or 6")
        port = None
        if "port" in f:
            if kind not in ("tcp", "udp", "http"):
                raise r.fail(f["port"][0], f"{where}: port is for tcp, udp and http checks")
            port = r.scalar(f["port"][1], f"{where}.port", int)
            if not 0 < port < 65536:
                raise r.fail(f["port"][1], f"{where}.port: {port} is not in 1-65535")
        elif kind in ("tcp", "udp"):
            raise r.fail(node, f"{where}: a {kind} check needs a port")
        elif kind == "http":
            port = 80
        seen_as = None
        if "seen_as" in f:
            if kind not in ("tcp", "udp", "http"):
                raise r.fail(f["seen_as"][0], f"{where}: seen_as is for tcp, udp and http")
            seen_as = r.scalar(f["seen_as"][1], f"{where}.seen_as", str)
            self._ref(f["seen_as"][1], seen_as, f"{where}.seen_as")
        timeout = r.scalar(f["timeout"][1], f"{where}.timeout", float) \
            if "timeout" in f else 2.0
        if not 0 < timeout <= 60:
            raise r.fail(f["timeout"][1], f"{where}.timeout: expected 0-60 seconds")
        record = "A" if family == 4 else "AAAA"
        if "type" in f:
            if kind != "dns":
                raise r.fail(f["type"][0], f"{where}: type is for dns checks")
            record = r.scalar(f["type"][1], f"{where}.type", str).upper()
            if record not in ("A", "AAAA"):
                raise r.fail(f["type"][1], f"{where}.type: expected A or AAAA")
        expect, mtu = "reach", None
        addrs: tuple[str, ...] = ()
        en = f["expect"][1] if "expect" in f else None
        if kind == "dns":
            if self.nodes.get(source) != "sandbox":
                raise r.fail(f["from"][1], f"{where}.from: a dns check runs in a sandbox")
            if en is None:
                raise r.fail(node, f"{where}: a dns check needs expect (addresses, nxdomain "
                                   "or unresolved)")
            if isinstance(en, yaml.ScalarNode) and en.value in ("nxdomain", "unresolved"):
                expect = en.value
            else:
                expect = "addresses"
                items = r.string_list(en, f"{where}.expect")
                for t, n in items:
                    self._ref(n, t, f"{where}.expect")
                addrs = tuple(t for t, _ in items)
        elif kind == "mtu":
            if en is None:
                raise r.fail(node, f"{where}: an mtu check needs expect (the path MTU)")
            mtu = r.scalar(en, f"{where}.expect", int)
            if not 68 <= mtu <= 65535:
                raise r.fail(en, f"{where}.expect: {mtu} is not in 68-65535")
            expect = str(mtu)
            self._ref(target_node, target, f"{where}.{kind}")
        else:
            if en is not None:
                expect = r.scalar(en, f"{where}.expect", str)
                if expect not in m.EXPECT_TRAFFIC:
                    raise r.fail(en, f"{where}.expect: {expect!r} (allowed: "
                                     + ", ".join(m.EXPECT_TRAFFIC) + ")")
            if seen_as and expect == "blocked":
                raise r.fail(f["seen_as"][0], f"{where}: seen_as makes no sense if blocked")
            self._ref(target_node, target, f"{where}.{kind}")
        label = r.scalar(f["name"][1], f"{where}.name", str) if "name" in f else \
            _label(kind, source, target, port)
        return m.Check(kind, source, target, label, expect, addrs, port, seen_as, family,
                       record, timeout, mtu)

    def _ref(self, node: yaml.Node, text: str, where: str) -> None:
        """A reference: an IP address, NODE, NODE@NETWORK (sandbox) or NODE@IFNAME (host),
        gateway@NETWORK."""
        r = self.r
        try:
            ipaddress.ip_address(text)
            return
        except ValueError:
            pass
        name, _, sub = text.partition("@")
        if name == "gateway":
            if not sub or not any(n.name == sub for n in self.networks):
                raise r.fail(node, f"{where}: {text!r}: gateway@NETWORK names a network of "
                                   "this lab")
            return
        kind = self.nodes.get(name)
        if kind == "sandbox":
            sb = next(s for s in self.sandboxes if s.name == name)
            if sub and not any(a.network == sub for a in sb.attachments):
                raise r.fail(node, f"{where}: sandbox {name!r} is not on network {sub!r}")
            if all(a.network in ("host", "none") for a in sb.attachments) and not sub:
                host = sb.host
                if not self._host_addresses(host):
                    raise r.fail(node, f"{where}: sandbox {name!r} has no address of its own")
            return
        if kind == "host":
            if not self._host_addresses(name, sub):
                raise r.fail(node, f"{where}: host {name!r} has no address"
                                   + (f" on {sub}" if sub else "")
                                   + " (give one of its link ends an address)")
            return
        raise r.fail(node, f"{where}: {text!r} is not an IP address, a sandbox, a host or "
                           "gateway@NETWORK")

    def _host_addresses(self, host: str, ifname: str = "") -> list[str]:
        return [a for lk in self.links for e in lk.ends if e.node == host
                and (not ifname or e.ifname == ifname) for a in e.addresses]


def _label(kind: str, source: str, target: str, port: int | None) -> str:
    return f"{kind} {source} → {target}" + (f":{port}" if port and kind != "dns" else "")

