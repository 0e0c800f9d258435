"""firewall: the elements each network and each published mapping adds, and DOCKER-USER."""

from __future__ import annotations

import pytest

from cnm import firewall
from cnm.firewall import NetworkRules, PortRule, network_elements, port_elements
from cnm.portspec import PortMapping

# --------------------------------------------------------------------------- networks

BASE = [("bridges", '"br0"'), ("same", '"br0" . "br0"')]


@pytest.mark.parametrize("rules, extra", [
    (NetworkRules("br0", ("10.0.0.0/24",)), [("masq4", "10.0.0.0/24")]),
    (NetworkRules("br0", ("10.0.0.0/24", "fd00::/64")),
     [("masq4", "10.0.0.0/24"), ("masq6", "fd00::/64")]),
    (NetworkRules("br0", ("fd00::/64",)), [("masq6", "fd00::/64")]),
    (NetworkRules("br0", ("10.0.0.0/24", "fd00::/64"), masquerade=False), []),
    (NetworkRules("br0", ("10.0.0.0/24",), icc=False),
     [("icc_off", '"br0" . "br0"'), ("masq4", "10.0.0.0/24")]),
    # internal: never masqueraded, whatever the option says
    (NetworkRules("br0", ("10.0.0.0/24", "fd00::/64"), internal=True), [("internal", '"br0"')]),
    (NetworkRules("br0", ("10.0.0.0/24",), internal=True, icc=False),
     [("icc_off", '"br0" . "br0"'), ("internal", '"br0"')]),
    (NetworkRules("br0", ("10.0.0.0/24",), internal=True, masquerade=False),
     [("internal", '"br0"')]),
    (NetworkRules("br0", ()), []),
])
def test_network_elements(rules: NetworkRules, extra: list[tuple[str, str]]) -> None:
    assert network_elements(rules) == BASE + extra


def test_network_add_and_delete_commands_mirror_each_other() -> None:
    rules = NetworkRules("br.x-1", ("10.0.0.0/24",), icc=False)
    assert firewall.add_network(rules) == (
        'add element inet cnm bridges { "br.x-1" }\n'
        'add element inet cnm same { "br.x-1" . "br.x-1" }\n'
        'add element inet cnm icc_off { "br.x-1" . "br.x-1" }\n'
        'add element inet cnm masq4 { 10.0.0.0/24 }\n')
    assert firewall.delete_network(rules) == firewall.add_network(rules).replace(
        "add element", "delete element")


# --------------------------------------------------------------------------- ports


def rule(proto: str, host_ip: str, hport: int, hend: int, cport: int, cend: int,
         a4: str | None = "172.17.0.2", a6: str | None = None) -> PortRule:
    return PortRule(PortMapping(proto, host_ip, hport, hend, cport, cend), a4, a6)


V4, V6 = "10.0.0.2", "fd00::2"


@pytest.mark.parametrize("r, want", [
    # single port, every address
    (rule("tcp", "", 8080, 8080, 80, 80, V4, None),
     [("pub4_any", "tcp . 8080", "10.0.0.2 . 80")]),
    (rule("udp", "", 53, 53, 53, 53, V4, V6),
     [("pub4_any", "udp . 53", "10.0.0.2 . 53"), ("pub6_any", "udp . 53", "fd00::2 . 53")]),
    (rule("sctp", "", 9, 9, 9, 9, None, V6),
     [("pub6_any", "sctp . 9", "fd00::2 . 9")]),
    # single port on a specific address: that address's family only
    (rule("tcp", "127.0.0.1", 8081, 8081, 81, 81, V4, V6),
     [("pub4_addr", "tcp . 127.0.0.1 . 8081", "10.0.0.2 . 81")]),
    (rule("tcp", "::1", 8443, 8443, 443, 443, V4, V6),
     [("pub6_addr", "tcp . ::1 . 8443", "fd00::2 . 443")]),
    # identity range: one interval element per family, the address range spelled out
    (rule("udp", "", 9000, 9005, 9000, 9005, V4, V6),
     [("pub4_range", "udp . 0.0.0.0/0 . 9000-9005", "10.0.0.2"),
      ("pub6_range", "udp . ::/0 . 9000-9005", "fd00::2")]),
    (rule("tcp", "192.0.2.1", 9000, 9001, 9000, 9001, V4, V6),
     [("pub4_range", "tcp . 192.0.2.1 . 9000-9001", "10.0.0.2")]),
    (rule("tcp", "2001:db8::1", 9000, 9001, 9000, 9001, V4, V6),
     [("pub6_range", "tcp . 2001:db8::1 . 9000-9001", "fd00::2")]),
    # shifted range: one hash element per port, container port shifted along
    (rule("tcp", "", 7000, 7002, 8000, 8002, V4, None),
     [("pub4_any", "tcp . 7000", "10.0.0.2 . 8000"),
      ("pub4_any", "tcp . 7001", "10.0.0.2 . 8001"),
      ("pub4_any", "tcp . 7002", "10.0.0.2 . 8002")]),
    (rule("udp", "192.0.2.1", 7000, 7001, 8000, 8001, V4, V6),
     [("pub4_addr", "udp . 192.0.2.1 . 7000", "10.0.0.2 . 8000"),
      ("pub4_addr", "udp . 192.0.2.1 . 7001", "10.0.0.2 . 8001")]),
    (rule("tcp", "", 7000, 7001, 8000, 8001, V4, V6),
     [("pub4_any", "tcp . 7000", "10.0.0.2 . 8000"),
      ("pub4_any", "tcp . 7001", "10.0.0.2 . 8001"),
      ("pub6_any", "tcp . 7000", "fd00::2 . 8000"),
      ("pub6_any", "tcp . 7001", "fd00::2 . 8001")]),
])
def test_port_elements(r: PortRule, want: list[tuple[str, str, str]]) -> None:
    assert port_elements(r) == want


@pytest.mark.parametrize("host_ip, hend", [("::1", 8080), ("2001:db8::1", 8090), ("", 8080)])
def test_endpoint_without_ipv6_gets_no_ipv6_element(host_ip: str, hend: int) -> None:
    # An IPv6 host address and an endpoint with no IPv6: nothing to lead to.
    r = rule("tcp", host_ip, 8080, hend, 8080, hend, V4, None)
    got = port_elements(r)
    assert all(not name.startswith("pub6") for name, _, _ in got)
    assert got == ([] if host_ip else [("pub4_any", "tcp . 8080", "10.0.0.2 . 8080")])


def test_ipv4_host_address_on_an_ipv6_only_endpoint_gives_nothing() -> None:
    assert port_elements(rule("tcp", "127.0.0.1", 80, 80, 80, 80, None, V6)) == []


def test_port_add_and_delete_commands() -> None:
    rules = [rule("tcp", "", 8080, 8080, 80, 80, V4, V6),
             rule("udp", "", 9000, 9001, 9000, 9001, V4, None)]
    assert firewall.add_ports(rules) == (
        "add element inet cnm pub4_any { tcp . 8080 : 10.0.0.2 . 80 }\n"
        "add element inet cnm pub6_any { tcp . 8080 : fd00::2 . 80 }\n"
        "add element inet cnm pub4_range { udp . 0.0.0.0/0 . 9000-9001 : 10.0.0.2 }\n")
    # A delete names the key only.
    assert firewall.delete_ports(rules) == (
        "delete element inet cnm pub4_any { tcp . 8080 }\n"
        "delete element inet cnm pub6_any { tcp . 8080 }\n"
        "delete element inet cnm pub4_range { udp . 0.0.0.0/0 . 9000-9001 }\n")
    assert firewall.add_ports([]) == firewall.delete_ports([]) == ""


# --------------------------------------------------------------------------- DOCKER-USER


def test_docker_user_replaces_old_rules_with_four_narrow_accepts_per_bridge() -> None:
    text = firewall.docker_user(["cnm0", "br-b"], [12, 7])
    lines = text.splitlines()
    assert lines[:2] == ["delete rule ip filter DOCKER-USER handle 12",
                         "delete rule ip filter DOCKER-USER handle 7"]
    rules = lines[2:]
    assert len(rules) == 8
    assert all(r.startswith("insert rule ip filter DOCKER-USER ") for r in rules)
    assert all(r.endswith('accept comment "cnm"') for r in rules)
    cnm0 = [r for r in rules if '"cnm0"' in r]
    # Within the bridge, replies and published ports into it, and out of it to anything
    # but Docker's bridges; never a bare "iifname X accept" that would open docker0.
    assert any('iifname "cnm0" oifname "cnm0" accept' in r for r in cnm0)
    assert any('oifname "cnm0" ct state established,related accept' in r for r in cnm0)
    assert any('oifname "cnm0" ct status dnat accept' in r for r in cnm0)
    assert any('oifname != { "cnm0", "docker0" } oifname != "br-*" accept' in r for r in cnm0)
    assert not any(r.endswith('DOCKER-USER iifname "cnm0" accept comment "cnm"') for r in rules)


def test_docker_user_with_no_bridges_only_deletes() -> None:
    assert firewall.docker_user([], [3]) == "delete rule ip filter DOCKER-USER handle 3\n"
    assert firewall.docker_user([], []) == ""


def test_an_explicit_family_wildcard_publishes_on_that_family_only() -> None:
    v4 = PortRule(PortMapping("tcp", "0.0.0.0", 8080, 8080, 80, 80), "10.1.0.2", "fd00::2")
    v6 = PortRule(PortMapping("tcp", "::", 8081, 8081, 80, 80), "10.1.0.2", "fd00::2")
    both = PortRule(PortMapping("tcp", "", 8082, 8082, 80, 80), "10.1.0.2", "fd00::2")
    assert port_elements(v4) == [("pub4_any", "tcp . 8080", "10.1.0.2 . 80")]
    assert port_elements(v6) == [("pub6_any", "tcp . 8081", "fd00::2 . 80")]
    assert [m for m, _, _ in port_elements(both)] == ["pub4_any", "pub6_any"]
