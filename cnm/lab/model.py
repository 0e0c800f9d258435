"""A lab as typed records: what `cnm lab` reads from one YAML file (netns-lab/labs/FORMAT.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Kernel features a lab may need; any of them puts the lab in the VM tier.
FEATURES = ("ipvlan", "vlan", "dummy", "netem", "esp")
# Peers a lab may need beside cnm (installed by the `lab` step of scripts/packages.txt).
PEERS = ("docker", "etcd")
EXPECT_TRAFFIC = ("reach", "blocked")
CHECK_KINDS = ("ping", "tcp", "udp", "http", "dns", "mtu")
PREDEFINED_NETWORKS = ("bridge", "host", "none")
# Images a docker sandbox may name: made on the spot (there is no registry); busybox is
# Debian's busybox-static (cnm.lab.dockerd.Dockerd.image).
DOCKER_IMAGES = ("busybox",)


@dataclass(frozen=True)
class Impairment:
    """netem on an interface: None leaves that property alone."""

    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss_pct: float | None = None
    rate: str | None = None  # tc's rate syntax: 10mbit, 512kbit


@dataclass(frozen=True)
class Route:
    to: str  # CIDR or "default"
    via: str


@dataclass(frozen=True)
class Host:
    """A namespace of the lab's: with ``cnmd`` a host running its own cnmd, else a plain one
    (a router, a LAN machine)."""

    name: str
    cnmd: bool = True
    forwarding: bool = False
    routes: tuple[Route, ...] = ()
    docker: bool = False  # a dockerd beside cnmd, cnm as its plugin


@dataclass(frozen=True)
class Switch:
    """A LAN: a bridge in a namespace of its own."""

    name: str
    hairpin: bool = False  # every port reflects frames back (what a VEPA switch does)


@dataclass(frozen=True)
class LinkEnd:
    node: str  # a host or a switch
    ifname: str  # on a switch, the port's name (p0, p1, ... by default)
    addresses: tuple[str, ...] = ()  # CIDRs; none on a switch port
    hairpin: bool = False  # on a switch port only
    impair: Impairment | None = None


@dataclass(frozen=True)
class Link:
    """A veth pair between two nodes (the underlay)."""

    name: str
    ends: tuple[LinkEnd, LinkEnd]
    mtu: int | None = None
    impair: Impairment | None = None  # on both ends


@dataclass(frozen=True)
class Network:
    name: str
    driver: str = "bridge"
    subnets: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    aux_addresses: dict[str, str] = field(default_factory=dict)
    ipv6: bool = False
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()  # the hosts it is made on (resolved: never empty)


@dataclass(frozen=True)
class Attachment:
    """One network of a sandbox (an endpoint)."""

    network: str
    ip: str | None = None
    ip6: str | None = None
    aliases: tuple[str, ...] = ()
    mac: str | None = None
    ifname: str = ""
    impair: Impairment | None = None


@dataclass(frozen=True)
class Service:
    """A listener of the shipped echo server (cnm.lab.echo)."""

    proto: str  # tcp, udp, http
    port: int


@dataclass(frozen=True)
class Sandbox:
    name: str
    host: str
    attachments: tuple[Attachment, ...]
    ports: tuple[str, ...] = ()  # published, `-p` syntax
    hostname: str | None = None
    serve: tuple[Service, ...] = ()
    run: tuple[str, ...] = ()  # argv started inside the sandbox after up
    docker: str | None = None  # an image: the sandbox is a Docker container


@dataclass(frozen=True)
class Check:
    kind: str  # one of CHECK_KINDS
    source: str  # `from`: a sandbox or a host
    target: str  # a reference (address, NODE, NODE@NET, gateway@NET) or, for dns, a name
    label: str
    expect: str = "reach"  # reach/blocked; dns: addresses, nxdomain, unresolved; mtu: N
    expect_addresses: tuple[str, ...] = ()  # dns: references to resolve
    port: int | None = None
    seen_as: str | None = None  # the source address the echo server must report
    family: int = 4
    record: str = "A"  # dns
    timeout: float = 2.0
    mtu: int | None = None


@dataclass(frozen=True)
class Cluster:
    store: str  # etcd
    members: tuple[str, ...]  # hosts running an etcd member
    tls: bool = False  # members and cnmds speak TLS, with certificates `up` makes


@dataclass(frozen=True)
class Lab:
    name: str
    path: str
    title: str = ""
    description: str = ""
    requires: tuple[str, ...] = ()
    hosts: tuple[Host, ...] = ()
    switches: tuple[Switch, ...] = ()
    links: tuple[Link, ...] = ()
    networks: tuple[Network, ...] = ()
    sandboxes: tuple[Sandbox, ...] = ()
    checks: tuple[Check, ...] = ()
    cluster: Cluster | None = None

    @property
    def features(self) -> tuple[str, ...]:
        """The kernel features it needs: declared, and implied by what it uses."""
        need = {r for r in self.requires if r in FEATURES}
        if any(n.driver == "ipvlan" for n in self.networks):
            need.add("ipvlan")
        impaired = [lk.impair for lk in self.links] + [e.impair for lk in self.links
                                                         for e in lk.ends]
        impaired += [a.impair for s in self.sandboxes for a in s.attachments]
        if any(i is not None for i in impaired):
            need.add("netem")
        return tuple(sorted(need))

    def docker_networks(self, host: str) -> tuple[str, ...]:
        """The networks of ``host`` that its Docker containers are on: made through
        dockerd (``docker network create -d cnm``), so Docker knows them too."""
        return tuple(dict.fromkeys(a.network for s in self.sandboxes
                                   if s.docker and s.host == host for a in s.attachments))

    @property
    def needs_vm(self) -> bool:
        return bool(self.features)

    def address_of(self, node: str) -> str:
        """The first address of ``node``'s links, without its prefix ("" if none): what a
        cluster's etcd member listens on and its cnmd advertises."""
        for lk in self.links:
            for e in lk.ends:
                if e.node == node and e.addresses:
                    return e.addresses[0].split("/")[0]
        return ""

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def sandbox(self, name: str) -> Sandbox:
        return next(s for s in self.sandboxes if s.name == name)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)
