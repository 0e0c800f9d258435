"""Docker's remote network driver and IPAM driver on cnm's core: what each call does.

Docker's objects map onto cnm's: a network made with ``docker network create -d cnm`` is a
cnm network (named after ``-o cnm.name`` or Docker's short id, labelled with Docker's id)
of the driver ``-o cnm.driver`` names (bridge by default); an endpoint is a cnm endpoint
named after Docker's EndpointID, reserved by CreateEndpoint; a container's namespace
(Join's SandboxKey) is a *handover* sandbox: cnm makes the endpoint's link and leaves its
inner end in the host namespace (SrcName), and Docker moves it in and configures it.
Published ports are cnm's firewall elements, programmed by ProgramExternalConnectivity.
An endpoint's ``cnm.aliases`` option (``--driver-opt``) gives it names in cnm's DNS.

The IPAM side answers from cnm's IPAM: RequestPool checks or picks a subnet and holds it
until CreateNetwork makes the network that owns it (Docker asks for pools first);
RequestAddress holds an address in the network's space until CreateEndpoint takes it.

Every call runs under the core's lock, so a multi-step call (find or make the sandbox,
join) is one step for everyone else. Errors come back as Docker shows them: a network
driver's ``{"Err": …}``, an IPAM driver's ``{"Error": …}``, both with HTTP 200.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import netaddr

from cnm import names
from cnm.core import Controller
from cnm.docker import wire
from cnm.errors import CnmError, Internal, InvalidArgument, NotFound
from cnm.ipam import parse_cidr, parse_ip
from cnm.model import Endpoint, EndpointSpec, Network, NetworkSpec, Sandbox

log = logging.getLogger("cnm.docker")

Body = Mapping[str, Any]
Answer = dict[str, Any]
ADDRESS_SPACES = {"LocalDefaultAddressSpace": "cnm-local",
                  "GlobalDefaultAddressSpace": "cnm-global"}


@dataclass
class Pool:
    """A subnet RequestPool gave Docker, not yet owned by a network."""

    pool_id: str
    subnet: str
    sub_pool: str | None
    gateway: str | None = None  # with prefix, once Docker asked for it
    aux: set[str] = field(default_factory=set)


class DockerPlugin:
    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.pools: dict[str, Pool] = {}  # pool id -> a pool no network owns yet
        self.held: set[tuple[str, str]] = set()  # (network id, cidr) held for an endpoint
        self.calls: dict[str, Callable[[Body], Answer]] = {
            "Plugin.Activate": lambda b: {"Implements": ["NetworkDriver", "IpamDriver"]},
            "NetworkDriver.GetCapabilities": lambda b: {"Scope": "local",
                                                        "ConnectivityScope": "local"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.ProgramExternalConnectivity": self.program,
            "NetworkDriver.RevokeExternalConnectivity": self.revoke,
            "NetworkDriver.DiscoverNew": lambda b: {},
            "NetworkDriver.DiscoverDelete": lambda b: {},
            "IpamDriver.GetCapabilities": lambda b: {"RequiresMACAddress": False,
                                                     "RequiresRequestReplay": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda b: dict(ADDRESS_SPACES),
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.release_pool,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    # ----------------------------------------------------------------------- dispatch
    def handle(self, method: str, body: Any) -> tuple[int, Answer]:
        """One call (the path without its slash) -> (HTTP status, answer)."""
        call = self.calls.get(method)
        if call is None:
            return 404, {"Err": f"cnm: unknown plugin method {method!r}"}
        key = "Error" if method.startswith("IpamDriver.") else "Err"
        try:
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise InvalidArgument(f"{method}: the request body must be a JSON object")
            with self.c.lock:
                return 200, call(body)
        except CnmError as e:
            log.info("%s refused: %s", method, e.message)
            return 200, {key: e.message + (f" ({e.hint})" if e.hint else "")}
        except Exception as e:  # noqa: BLE001 - the one place a bug becomes an answer
            log.exception("internal error in %s", method)
            return 200, {key: Internal(f"cnm: internal error in {method}: {e}").message}

    # ----------------------------------------------------------------------- lookups
    def network(self, docker_id: str) -> Network:
        for net in self.c.list_networks():
            if net.labels.get(wire.NETWORK_LABEL) == docker_id:
                return net
        raise NotFound(f"network {docker_id[:12]} is not a cnm network (was it removed "
                       "from cnm by hand?)")

    def endpoint(self, body: Body) -> Endpoint:
        eid = wire.text(body, "EndpointID")
        ep = next((e for e in self.c.endpoints_of(network=self.network(
            wire.text(body, "NetworkID")).id) if e.name == eid), None)
        if ep is None:
            raise NotFound(f"endpoint {eid[:12]} not found on its network")
        return ep

    def sandbox_for(self, key: str) -> tuple[Sandbox, bool]:
        """The handover sandbox of Docker's SandboxKey (made on its first Join)."""
        if not key:
            raise InvalidArgument("Join: SandboxKey is empty")
        for sb in self.c.list_sandboxes():
            if sb.labels.get(wire.SANDBOX_LABEL) == key:
                return sb, False
        base = os.path.basename(key)
        name = f"docker-{base}"
        if not names.valid_name(name) or any(s.name == name for s in self.c.list_sandboxes()):
            name = f"docker-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        return self.c.create_handover_sandbox(name, {wire.SANDBOX_LABEL: key}), True

    def network_of_subnet(self, subnet: str) -> Network | None:
        return next((n for n in self.c.list_networks() for s in n.subnets
                     if s.subnet == subnet), None)

    # ----------------------------------------------------------------------- networks
    def create_network(self, b: Body) -> Answer:
        docker_id = wire.text(b, "NetworkID")
        opts = wire.obj(b, "Options")
        generic = {str(k): str(v) for k, v in wire.obj(opts, wire.GENERIC).items()}
        driver = generic.pop(wire.DRIVER_OPTION, "bridge")
        name = generic.pop(wire.NAME_OPTION, docker_id[:12])
        subnets, gateways, ranges, aux = [], [], [], {}
        for d in [*wire.objects(b, "IPv4Data"), *wire.objects(b, "IPv6Data")]:
            pool = wire.text(d, "Pool")
            subnets.append(pool)
            if gw := wire.address(wire.text(d, "Gateway")):
                gateways.append(gw)
            pending = next((p for p in self.pools.values() if p.subnet == pool), None)
            if pending is not None and pending.sub_pool:
                ranges.append(pending.sub_pool)
            given = wire.obj(d, "AuxAddresses")
            for k in given:
                aux[str(k)] = wire.address(wire.text(given, k))
        net = self.c.create_network(NetworkSpec(
            name=name, driver=driver, subnets=tuple(subnets), gateways=tuple(gateways),
            ip_ranges=tuple(ranges), aux_addresses=aux, ipv6=bool(opts.get(wire.ENABLE_IPV6)),
            internal=bool(opts.get(wire.INTERNAL)), options=generic,
            labels={wire.NETWORK_LABEL: docker_id}))
        # The network owns its subnets now: its pools are no longer pending.
        for pid in [p.pool_id for p in self.pools.values()
                    if p.subnet in {s.subnet for s in net.subnets}]:
            del self.pools[pid]
        log.info("docker network %s is cnm network %s", docker_id[:12], net.name)
        return {}

    def delete_network(self, b: Body) -> Answer:
        try:
            net = self.network(wire.text(b, "NetworkID"))
        except NotFound:
            return {}  # gone already: Docker's retry after a failure, or removed by hand
        self.c.remove_network(net.id)
        self.held = {h for h in self.held if h[0] != net.id}
        return {}

    # ----------------------------------------------------------------------- endpoints
    def create_endpoint(self, b: Body) -> Answer:
        net = self.network(wire.text(b, "NetworkID"))
        iface = wire.obj(b, "Interface")
        ip4, ip6 = wire.text(iface, "Address"), wire.text(iface, "AddressIPv6")
        mac = wire.text(iface, "MacAddress") or None
        # The address Docker's RequestAddress held for this endpoint passes to it.
        for cidr in (ip4, ip6):
            if cidr and (net.id, cidr) in self.held:
                self.held.discard((net.id, cidr))
                self.c.release_address(net.id, cidr)
        ep = self.c.create_endpoint(EndpointSpec(
            network=net.id, name=wire.text(b, "EndpointID"), ip=wire.address(ip4) or None,
            ip6=wire.address(ip6) or None, mac=mac,
            aliases=wire.aliases(wire.obj(b, "Options"))))
        out: dict[str, str] = {}
        if not mac and ep.mac:
            out["MacAddress"] = ep.mac
        if not ip4 and ep.ipv4:
            out["Address"] = ep.ipv4
        if not ip6 and ep.ipv6:
            out["AddressIPv6"] = ep.ipv6
        return {"Interface": out} if out else {}

    def delete_endpoint(self, b: Body) -> Answer:
        try:
            ep = self.endpoint(b)
        except NotFound:
            return {}
        self.c.delete_endpoint(ep.id)
        return {}

    def endpoint_info(self, b: Body) -> Answer:
        ep = self.endpoint(b)
        net = self.c.network(ep.network_id)
        return {"Value": {wire.PORTMAP: wire.port_bindings(ep.ports, ep.ip4),
                          wire.EXPOSED: wire.exposed(ep.ports), "cnm.network": net.name,
                          "cnm.endpoint": ep.id, "cnm.driver": net.driver}}

    def join(self, b: Body) -> Answer:
        ep = self.endpoint(b)
        sb, made = self.sandbox_for(wire.text(b, "SandboxKey"))
        try:
            ep = self.c.join(ep.id, sb.id)
        except BaseException:
            if made:
                self.c.remove_sandbox(sb.id)
            raise
        out: Answer = {"InterfaceName": {"SrcName": ep.ifname, "DstPrefix": "eth"},
                       # cnm's networks route for themselves: never docker_gwbridge.
                       "DisableGatewayService": True}
        routes = []
        for key, gw, default in (("Gateway", ep.gateway4, "0.0.0.0/0"),
                                 ("GatewayIPv6", ep.gateway6, "::/0")):
            if gw and netaddr.IPAddress(gw).value == 0:
                # No gateway: the default route goes out of the interface (ipvlan L3).
                routes.append({"Destination": default, "RouteType": 1})
            elif gw:
                out[key] = gw
        if routes:
            out["StaticRoutes"] = routes
        return out

    def leave(self, b: Body) -> Answer:
        try:
            ep = self.endpoint(b)
        except NotFound:
            return {}
        if ep.sandbox_id is None:
            return {}
        sb_id = ep.sandbox_id
        self.c.leave(ep.id)
        if not self.c.endpoints_of(sandbox=sb_id):
            self.c.remove_sandbox(sb_id)
        return {}

    def program(self, b: Body) -> Answer:
        ep = self.endpoint(b)
        specs = wire.port_specs(wire.obj(b, "Options").get(wire.PORTMAP))
        if ep.sandbox_id is None:
            raise InvalidArgument(f"endpoint {ep.name[:12]} is not joined")
        if ep.ports:  # programmed again: the new list replaces the old
            self.revoke(b)
        if specs:
            self.c.publish(ep.sandbox_id, specs, network=ep.network_id)
        return {}

    def revoke(self, b: Body) -> Answer:
        ep = self.endpoint(b)
        if ep.sandbox_id is None:
            return {}
        for m in ep.ports:
            # NotFound: withdrawn with an earlier mapping of the same host port.
            with contextlib.suppress(NotFound):
                self.c.unpublish(ep.sandbox_id, m.host_port, m.proto)
        return {}

    # ----------------------------------------------------------------------- IPAM
    def request_pool(self, b: Body) -> Answer:
        space = wire.text(b, "AddressSpace") or ADDRESS_SPACES["LocalDefaultAddressSpace"]
        opts = wire.obj(b, "Options")
        if opts:
            raise InvalidArgument(f"unknown IPAM option {sorted(opts)[0]!r}: cnm's IPAM "
                                  "takes none")
        version = 6 if b.get("V6") else 4
        wanted = wire.text(b, "Pool") or None
        sub = wire.text(b, "SubPool") or None
        if sub and not wanted:
            raise InvalidArgument(f"ip range {sub} given without a subnet")
        elsewhere = [(p.subnet, f"a pool Docker holds for a network in the making "
                                f"({p.subnet})") for p in self.pools.values()]
        subnet = self.c.pick_subnet(wanted, version, elsewhere)
        if sub is not None:
            r, n = parse_cidr(sub, "ip range"), netaddr.IPNetwork(subnet)
            if r.version != n.version or not (n.first <= r.first and r.last <= n.last):
                raise InvalidArgument(f"ip range {sub} is not inside subnet {subnet}")
            sub = str(r)
        pool_id = f"{space}/{subnet}" + (f"/{sub}" if sub else "")
        self.pools[pool_id] = Pool(pool_id, subnet, sub)
        return {"PoolID": pool_id, "Pool": subnet, "Data": {}}

    def release_pool(self, b: Body) -> Answer:
        self.pools.pop(wire.text(b, "PoolID"), None)
        return {}

    def _subnet_of(self, pool_id: str) -> str:
        parts = pool_id.split("/")
        if len(parts) < 3:
            raise NotFound(f"unknown pool {pool_id!r}")
        return f"{parts[1]}/{parts[2]}"

    def request_address(self, b: Body) -> Answer:
        pool_id = wire.text(b, "PoolID")
        subnet = self._subnet_of(pool_id)
        wanted = wire.text(b, "Address") or None
        opts = wire.obj(b, "Options")
        pending = self.pools.get(pool_id)
        net = self.network_of_subnet(subnet)
        if pending is not None and net is None:
            # Before CreateNetwork: the gateway (or an aux address) of the network to be.
            n = netaddr.IPNetwork(subnet)
            if wanted is None:
                if opts.get(wire.REQUEST_TYPE) != wire.GATEWAY_TYPE:
                    raise InvalidArgument(f"pool {subnet}: an address before the network "
                                          "exists must be the gateway or named")
                ip = netaddr.IPAddress(n.first + 1, version=n.version)
            else:
                ip = parse_ip(wanted)
                if ip.version != n.version or not n.first < int(ip) < n.last:
                    raise InvalidArgument(f"address {ip} is not a usable address of {subnet}")
            cidr = f"{ip}/{n.prefixlen}"
            if opts.get(wire.REQUEST_TYPE) == wire.GATEWAY_TYPE:
                pending.gateway = cidr
            else:
                pending.aux.add(cidr)
            return {"Address": cidr, "Data": {}}
        if net is None:
            raise NotFound(f"unknown pool {pool_id!r}: no cnm network has subnet {subnet}",
                           hint="was the network removed from cnm by hand?")
        version = 6 if ":" in subnet else 4
        cidr = self.c.hold_address(net.id, version, wanted,
                                   f"a container Docker is starting on {net.name}")
        self.held.add((net.id, cidr))
        return {"Address": cidr, "Data": {}}

    def release_address(self, b: Body) -> Answer:
        pool_id = wire.text(b, "PoolID")
        subnet = self._subnet_of(pool_id)
        addr = wire.address(wire.text(b, "Address"))
        pending = self.pools.get(pool_id)
        if pending is not None:
            if pending.gateway and wire.address(pending.gateway) == addr:
                pending.gateway = None
            pending.aux = {a for a in pending.aux if wire.address(a) != addr}
        net = self.network_of_subnet(subnet)
        if net is not None:
            cidr = f"{addr}/{subnet.split('/')[1]}"
            if (net.id, cidr) in self.held:
                self.held.discard((net.id, cidr))
                self.c.release_address(net.id, cidr)
        # An endpoint's address goes back with its DeleteEndpoint; the gateway with the
        # network.
        return {}
