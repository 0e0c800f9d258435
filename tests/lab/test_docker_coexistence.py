"""cnm next to a real dockerd (20.10, iptables-nft) managing the same host namespace.

dockerd sets the FORWARD policy to DROP (when it is the one turning IP forwarding on), and
br_netfilter sends frames bridged between two ports of any bridge through that hook:
without help, two cnm sandboxes on one network cannot reach each other. An accept in
cnm's own table does not override a drop in Docker's chain, so cnm inserts
`iifname/oifname "<bridge>" accept comment "cnm"` into Docker's DOCKER-USER chain for each
of its bridges, and touches nothing else of Docker's.

What a user must do:
- dockerd already running when cnmd starts: nothing; cnmd adds its accepts at start and on
  every `network create`, and removes them with the network.
- dockerd started after cnmd (or DOCKER-USER flushed): run `cnm firewall reload` once
  dockerd is up (or restart cnmd). cnm does not watch for dockerd. Docker 20.10 leaves the
  FORWARD policy at ACCEPT when IP forwarding was already on (cnmd turns it on), so traffic
  may keep flowing at first; but as soon as the policy is DROP (a firewall manager, an admin
  hardening the host, a Docker that sets it regardless), cnm networks without their
  accepts are cut: traffic between their sandboxes and out through the host is dropped.

Both daemons run in a throwaway namespace (see cnm/lab/dockerd.py); no image or container is
needed, cnm's sandboxes are the endpoints.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from cnm import names
from cnm.lab.dockerd import Dockerd
from cnm.testing.netns import Daemon, HostNs, can_ping, in_ns

pytestmark = pytest.mark.lab


# --------------------------------------------------------------------------- helpers
def ok(d: Daemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, f"cnm {' '.join(args)} -> {r.returncode}: {r.stderr}"
    return r.stdout


def ruleset(ns: HostNs) -> list[dict[str, Any]]:
    """`nft -j list ruleset` of the test's host namespace."""
    out = in_ns(ns.path, "nft", "-j", "list", "ruleset").stdout
    items: list[dict[str, Any]] = json.loads(out)["nftables"]
    return items


def chain(ns: HostNs, family: str, table: str, name: str) -> dict[str, Any] | None:
    return next((i["chain"] for i in ruleset(ns) if "chain" in i
                 and (i["chain"]["family"], i["chain"]["table"], i["chain"]["name"])
                 == (family, table, name)), None)


def docker_user(ns: HostNs) -> list[dict[str, Any]]:
    """The rules of `ip filter DOCKER-USER`, in order."""
    return [i["rule"] for i in ruleset(ns) if "rule" in i
            and (i["rule"]["family"], i["rule"]["table"], i["rule"]["chain"])
            == ("ip", "filter", "DOCKER-USER")]


RULES_PER_BRIDGE = 4  # within the bridge, replies into it, published ports, out of it


def _bridge_of(rule: dict[str, Any]) -> str:
    """The bridge a cnm rule is about: the first iifname/oifname it compares for equality."""
    for e in rule["expr"]:
        m = e.get("match")
        if m and m.get("op") == "==" and isinstance(m.get("right"), str) and \
                m["left"].get("meta", {}).get("key") in ("iifname", "oifname"):
            return str(m["right"])
    raise AssertionError(f"cnm rule names no bridge: {rule}")


def cnm_accepts(ns: HostNs) -> set[tuple[str, int]]:
    """(bridge, n) for the n-th of cnm's accepts about that bridge in DOCKER-USER; all
    accepts, none there twice."""
    seen: dict[str, list[str]] = {}
    for r in docker_user(ns):
        if r.get("comment") != "cnm":
            continue
        assert r["expr"][-1] == {"accept": None}, r
        body = json.dumps(r["expr"], sort_keys=True)
        rules = seen.setdefault(_bridge_of(r), [])
        assert body not in rules, f"duplicate cnm rule in DOCKER-USER: {body}"
        rules.append(body)
    return {(b, i) for b, rules in seen.items() for i in range(len(rules))}


def both_ways(bridge: str) -> set[tuple[str, int]]:
    return {(bridge, i) for i in range(RULES_PER_BRIDGE)}


def ends_with_dockers_return(ns: HostNs) -> bool:
    """Docker's own rule, a bare `return`, is still DOCKER-USER's last."""
    rules = docker_user(ns)
    return bool(rules) and "comment" not in rules[-1] and {"return": None} in rules[-1]["expr"]


def assert_docker_firewall(ns: HostNs) -> None:
    forward = chain(ns, "ip", "filter", "FORWARD")
    assert forward is not None and forward["policy"] == "drop", forward
    assert chain(ns, "ip", "filter", "DOCKER-USER") is not None
    assert ends_with_dockers_return(ns)


def net_id(d: Daemon, name: str) -> str:
    [net] = json.loads(ok(d, "network", "inspect", name))
    return str(net["id"])


def sandbox(d: Daemon, name: str, network: str) -> tuple[str, str]:
    """Create a sandbox on ``network``; (its netns path, its IPv4 address)."""
    ok(d, "sandbox", "create", "--network", network, name)
    [sb] = json.loads(ok(d, "sandbox", "inspect", name))
    return str(sb["netns"]), str(sb["endpoints"][0]["ipv4"]).split("/")[0]


def cnm_bridges(d: Daemon) -> set[str]:
    """The bridges of all of cnm's bridge networks (the default one's is cnm0)."""
    nets = json.loads(ok(d, "network", "ls", "--format", "json"))
    return {n["options"].get("bridge_name") or names.bridge_name(n["id"])
            for n in nets if n["driver"] == "bridge"}


def delete_cnm_accepts(ns: HostNs) -> None:
    """Remove cnm's rules from DOCKER-USER by hand (what an `iptables -F DOCKER-USER`
    or a firewall manager would do), leaving Docker's return."""
    for r in docker_user(ns):
        if r.get("comment") == "cnm":
            in_ns(ns.path, "nft", "delete", "rule", "ip", "filter", "DOCKER-USER",
                  "handle", str(r["handle"]))


# --------------------------------------------------------------------------- tests
def test_dockerd_first_then_cnmd(host_ns: HostNs, dockerd: Dockerd, cnmd: Daemon) -> None:
    dockerd.start()
    # Docker's firewall is there, in the test's namespace only (the machine's own is
    # compared before and after by the machine_unchanged fixture).
    assert_docker_firewall(host_ns)
    assert cnm_accepts(host_ns) == set()

    cnmd.start()
    ok(cnmd, "network", "create", "--subnet", "10.77.0.0/24", "web")
    web = names.bridge_name(net_id(cnmd, "web"))
    a_ns, a_ip = sandbox(cnmd, "a", "web")
    b_ns, b_ip = sandbox(cnmd, "b", "web")

    # cnm accepted its bridges in DOCKER-USER, ahead of Docker's return.
    accepts = cnm_accepts(host_ns)
    assert both_ways(web) <= accepts
    assert accepts == {x for b in cnm_bridges(cnmd) for x in both_ways(b)}
    assert_docker_firewall(host_ns)
    assert can_ping(a_ns, b_ip) and can_ping(b_ns, a_ip)
    assert can_ping(a_ns, "10.77.0.1") and can_ping(b_ns, "10.77.0.1")
    # A reload replaces cnm's accepts, it does not add a second copy.
    ok(cnmd, "firewall", "reload")
    assert cnm_accepts(host_ns) == accepts

    # Control: without cnm's accepts, Docker's FORWARD drops the bridged frames, so the
    # accepts are what makes the ping above work. The gateway is the host itself (INPUT,
    # not FORWARD) and stays reachable.
    delete_cnm_accepts(host_ns)
    assert cnm_accepts(host_ns) == set()
    assert not can_ping(a_ns, b_ip)
    assert can_ping(a_ns, "10.77.0.1")

    # A firewall reload puts them back.
    ok(cnmd, "firewall", "reload")
    assert cnm_accepts(host_ns) == accepts
    assert ends_with_dockers_return(host_ns)
    assert can_ping(a_ns, b_ip) and can_ping(b_ns, a_ip)

    # Removing the network removes its accepts, and only cnm's rules.
    ok(cnmd, "sandbox", "rm", "a", "b")
    ok(cnmd, "network", "rm", "web")
    after = cnm_accepts(host_ns)
    assert not after & both_ways(web)
    assert after == accepts - both_ways(web)
    assert ends_with_dockers_return(host_ns)
    assert_docker_firewall(host_ns)
    # And a new network gets its own accepts at once, with no reload.
    ok(cnmd, "network", "create", "--subnet", "10.78.0.0/24", "db")
    assert both_ways(names.bridge_name(net_id(cnmd, "db"))) <= cnm_accepts(host_ns)


def test_cnmd_first_then_dockerd_needs_a_firewall_reload(host_ns: HostNs, dockerd: Dockerd,
                                                        cnmd: Daemon) -> None:
    cnmd.start()
    ok(cnmd, "network", "create", "--subnet", "10.79.0.0/24", "web")
    web = names.bridge_name(net_id(cnmd, "web"))
    a_ns, a_ip = sandbox(cnmd, "a", "web")
    b_ns, b_ip = sandbox(cnmd, "b", "web")
    # No dockerd yet: no Docker chains, and cnm's own table lets the traffic through.
    assert chain(host_ns, "ip", "filter", "DOCKER-USER") is None
    assert can_ping(a_ns, b_ip)

    dockerd.start()
    # cnmd does not notice dockerd: DOCKER-USER holds Docker's return and nothing of cnm's.
    assert chain(host_ns, "ip", "filter", "DOCKER-USER") is not None
    assert ends_with_dockers_return(host_ns)
    assert cnm_accepts(host_ns) == set()
    # Docker 20.10 sets FORWARD's policy to DROP only when it turns ip_forward on itself;
    # cnmd had already turned it on for its networks, so here the policy stays ACCEPT and
    # the network still works...
    forward = chain(host_ns, "ip", "filter", "FORWARD")
    assert forward is not None and forward["policy"] == "accept", forward
    assert can_ping(a_ns, b_ip)
    # ...until something sets the policy to DROP (here by hand, as `iptables -P FORWARD
    # DROP` on a hardened host would): then the cnm network is cut.
    in_ns(host_ns.path, "iptables", "-P", "FORWARD", "DROP")
    assert_docker_firewall(host_ns)
    assert not can_ping(a_ns, b_ip)

    # What the user must do after starting dockerd: `cnm firewall reload` (or restart
    # cnmd), which puts cnm's accepts into DOCKER-USER.
    ok(cnmd, "firewall", "reload")
    assert cnm_accepts(host_ns) == {x for b in cnm_bridges(cnmd) for x in both_ways(b)}
    assert both_ways(web) <= cnm_accepts(host_ns)
    assert ends_with_dockers_return(host_ns)
    assert can_ping(a_ns, b_ip) and can_ping(b_ns, a_ip)
    assert can_ping(a_ns, "10.79.0.1")


_SERVE = ("import socket; s = socket.socket(); "
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "s.bind(('0.0.0.0', 9999)); s.listen(8)\n"
          "while True:\n c, a = s.accept(); c.sendall(b'hi'); c.close()")
_CONNECT = ("import socket, sys\n"
            "try:\n"
            " s = socket.create_connection((sys.argv[1], 9999), timeout=2)\n"
            " print(s.recv(10).decode())\n"
            "except OSError as e:\n"
            " print('failed:', e); sys.exit(1)")


def test_cnm_sandboxes_do_not_reach_unpublished_ports_on_docker0(
        host_ns: HostNs, dockerd: Dockerd, cnmd: Daemon, tmp_path: Any) -> None:
    """cnm's accepts in DOCKER-USER must not open Docker's containers to cnm's sandboxes:
    an unpublished port on docker0 stays as closed to them as Docker keeps it."""
    dockerd.start()
    cnmd.start()
    ok(cnmd, "network", "create", "--subnet", "10.78.0.0/24", "web")
    a_ns, _ = sandbox(cnmd, "a", "web")
    docker0 = json.loads(in_ns(host_ns.path, "ip", "-j", "-4", "addr", "show", "docker0").stdout)
    gw = docker0[0]["addr_info"][0]
    ct_ip = gw["local"].rsplit(".", 1)[0] + ".200"  # docker0 is a /16 here; .200 is unused
    # A stand-in for a container: a namespace on docker0 with a server on port 9999.
    ct = f"{host_ns.name}-ct"
    subprocess.run(["ip", "netns", "add", ct], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", host_ns.name, "link", "add", "cnmtdock0", "type", "veth",
                        "peer", "name", "eth0", "netns", ct], check=True)
        subprocess.run(["ip", "-n", host_ns.name, "link", "set", "cnmtdock0", "master",
                        "docker0", "up"], check=True)
        subprocess.run(["ip", "-n", ct, "addr", "add", f"{ct_ip}/{gw['prefixlen']}", "dev",
                        "eth0"], check=True)
        subprocess.run(["ip", "-n", ct, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", ct, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ct, "route", "add", "default", "via", gw["local"]],
                       check=True)
        server = subprocess.Popen(["ip", "netns", "exec", ct, "python3", "-c", _SERVE])
        # Control: the host itself reaches the server (so a failure below is the firewall).
        probe = ["python3", "-c", _CONNECT, ct_ip]
        for _ in range(20):
            if in_ns(host_ns.path, *probe, check=False).returncode == 0:
                break
        assert in_ns(host_ns.path, *probe, check=False).stdout.strip() == "hi"
        r = in_ns(a_ns, *probe, check=False)
        assert r.returncode != 0, f"a cnm sandbox reached an unpublished docker0 port: {r}"
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", ct], check=False)
