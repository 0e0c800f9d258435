"""portspec: Docker's -p grammar, the PortTable's clash rules and host port allocation."""

from __future__ import annotations

import pytest

from cnm.errors import Conflict, Exhausted, InvalidArgument
from cnm.portspec import EPHEMERAL, PortMapping, PortSpec, PortTable, parse

GRAMMAR = "expected [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp|sctp]"

# --------------------------------------------------------------------------- parse


@pytest.mark.parametrize("spec, want", [
    ("80", PortSpec("tcp", "", None, None, 80, 80)),
    ("8080:80", PortSpec("tcp", "", 8080, 8080, 80, 80)),
    ("8080:80/tcp", PortSpec("tcp", "", 8080, 8080, 80, 80)),
    ("53:53/udp", PortSpec("udp", "", 53, 53, 53, 53)),
    ("80/udp", PortSpec("udp", "", None, None, 80, 80)),
    ("9999/sctp", PortSpec("sctp", "", None, None, 9999, 9999)),
    ("127.0.0.1:8080:80", PortSpec("tcp", "127.0.0.1", 8080, 8080, 80, 80)),
    ("127.0.0.1::80", PortSpec("tcp", "127.0.0.1", None, None, 80, 80)),
    ("[2001:db8::1]:8080:80", PortSpec("tcp", "2001:db8::1", 8080, 8080, 80, 80)),
    ("[2001:db8::1]::80/udp", PortSpec("udp", "2001:db8::1", None, None, 80, 80)),
    ("[2001:DB8::0001]:443:443", PortSpec("tcp", "2001:db8::1", 443, 443, 443, 443)),
    # Every address, written out, is the same as none.
    # An explicit 0.0.0.0 or :: is every address of that family only (as in Docker).
    ("0.0.0.0:8080:80", PortSpec("tcp", "0.0.0.0", 8080, 8080, 80, 80)),
    ("[::]:8080:80", PortSpec("tcp", "::", 8080, 8080, 80, 80)),
    ("8080:80/UDP", PortSpec("udp", "", 8080, 8080, 80, 80)),
    # A container range alone publishes the same ports on the host.
    ("8000-8010", PortSpec("tcp", "", 8000, 8010, 8000, 8010)),
    ("8000-8010/udp", PortSpec("udp", "", 8000, 8010, 8000, 8010)),
    ("8000-8010:9000-9010", PortSpec("tcp", "", 8000, 8010, 9000, 9010)),
    # A host range with one container port: one free port of the range, picked later.
    ("8000-8010:80", PortSpec("tcp", "", 8000, 8010, 80, 80)),
    ("10.0.0.1:7000-7001:7000-7001/sctp", PortSpec("sctp", "10.0.0.1", 7000, 7001, 7000, 7001)),
    ("1:65535", PortSpec("tcp", "", 1, 1, 65535, 65535)),
    (" 80 ", PortSpec("tcp", "", None, None, 80, 80)),
])
def test_parse_accepts(spec: str, want: PortSpec) -> None:
    assert parse(spec) == want


@pytest.mark.parametrize("spec, problem", [
    ("80/icmp", "unknown protocol 'icmp'"),
    ("0", "container port 0 is not in 1-65535"),
    ("65536", "container port 65536 is not in 1-65535"),
    ("0:80", "host port 0 is not in 1-65535"),
    ("8080:70000", "container port 70000 is not in 1-65535"),
    ("80-70", "container range 80-70 is reversed"),
    ("8010-8000:80", "host range 8010-8000 is reversed"),
    ("8000-8010:80-85", "the host and container ranges differ in size"),
    ("8080:80-81", "the host and container ranges differ in size"),
    ("999.1.1.1:80:80", "'999.1.1.1' is not an IP address"),
    ("[127.0.0.1]:80:80", "put an IPv6 host address in brackets, and only an IPv6 one"),
])
def test_parse_refusal_names_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse(spec)
    assert e.value.message == f"invalid port spec {spec!r}: {problem}"


def test_parse_unknown_protocol_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as e:
        parse("80/icmp")
    assert e.value.hint == "protocols: tcp, udp, sctp"


@pytest.mark.parametrize("spec", [
    "", "x", "80:", "-80", "8080:80:90", "::1:8080:80", "1.2.3.4.5:80:80", "80/",
    "[fe80::zz]:80:80", "localhost:80:80",
])
def test_parse_refuses_what_is_not_the_grammar_and_shows_it(spec: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse(spec)
    assert e.value.message == f"invalid port spec {spec!r}"
    assert e.value.hint == GRAMMAR


# --------------------------------------------------------------------------- PortMapping


def m(host: int, hend: int | None = None, ctr: int | None = None, cend: int | None = None,
      proto: str = "tcp", ip: str = "") -> PortMapping:
    hend = host if hend is None else hend
    ctr = host if ctr is None else ctr
    cend = ctr + (hend - host) if cend is None else cend
    return PortMapping(proto, ip, host, hend, ctr, cend)


@pytest.mark.parametrize("mapping, text", [
    (m(8080, ctr=80), "8080:80/tcp"),
    (m(53, proto="udp"), "53:53/udp"),
    (m(8081, ctr=81, ip="127.0.0.1"), "127.0.0.1:8081:81/tcp"),
    (m(8443, ctr=443, ip="2001:db8::1"), "[2001:db8::1]:8443:443/tcp"),
    (m(9000, 9005, proto="sctp"), "9000-9005:9000-9005/sctp"),
    (m(7000, 7002, 8000), "7000-7002:8000-8002/tcp"),
])
def test_mapping_str_and_dict_round_trip(mapping: PortMapping, text: str) -> None:
    assert str(mapping) == text
    # What str() prints parses back to the same ports.
    spec = parse(text)
    assert (spec.proto, spec.host_ip, spec.host_port, spec.host_port_end, spec.container_port,
            spec.container_port_end) == (mapping.proto, mapping.host_ip, mapping.host_port,
                                         mapping.host_port_end, mapping.container_port,
                                         mapping.container_port_end)
    d = mapping.to_dict()
    assert d == {"proto": mapping.proto, "host_ip": mapping.host_ip,
                 "host_port": mapping.host_port, "host_port_end": mapping.host_port_end,
                 "container_port": mapping.container_port,
                 "container_port_end": mapping.container_port_end}
    assert PortMapping.from_dict(d) == mapping


def test_mapping_from_dict_takes_json_strings() -> None:
    d: dict[str, object] = {"proto": "udp", "host_ip": "", "host_port": "53",
                            "host_port_end": "53", "container_port": "5353",
                            "container_port_end": "5353"}
    assert PortMapping.from_dict(d) == m(53, ctr=5353, proto="udp")


def test_mapping_range_and_shift() -> None:
    assert (m(80).is_range, m(80).shifted) == (False, False)
    assert (m(8080, ctr=80).is_range, m(8080, ctr=80).shifted) == (False, True)
    assert (m(9000, 9005).is_range, m(9000, 9005).shifted) == (True, False)
    assert (m(7000, 7002, 8000).is_range, m(7000, 7002, 8000).shifted) == (True, True)


# --------------------------------------------------------------------------- PortTable


@pytest.fixture
def table() -> PortTable:
    return PortTable()


@pytest.mark.parametrize("held, new", [
    (m(8080), m(8080, ctr=80)),                          # same port, other container port
    (m(8080, ip="127.0.0.1"), m(8080)),                  # specific vs every address
    (m(8080), m(8080, ip="127.0.0.1")),                  # every address vs specific
    (m(8080, ip="2001:db8::1"), m(8080, ip="2001:db8::1")),              # same specific address
    (m(9000, 9010), m(9010)),                            # single inside a held range
    (m(9005), m(9000, 9010)),                            # range over a held single
    (m(9000, 9010), m(9010, 9020, 100)),                 # overlapping ranges
    (m(9000, 9010, ip="10.0.0.1"), m(8990, 9000)),       # range: any vs specific
])
def test_clash(table: PortTable, held: PortMapping, new: PortMapping) -> None:
    table.add(held, 'sandbox "web"')
    assert table.clash(new) == 'sandbox "web"'


@pytest.mark.parametrize("held, new", [
    (m(8080), m(8080, proto="udp")),
    (m(8080, proto="udp"), m(8080, proto="sctp")),
    (m(8080, ip="127.0.0.1"), m(8080, ip="127.0.0.2")),
    (m(8080, ip="127.0.0.1"), m(8080, ip="2001:db8::1")),
    (m(9000, 9010), m(9011)),
    (m(9000, 9010), m(8990, 8999)),
    (m(9000, 9010), m(9000, 9010, proto="udp")),
    (m(9000, 9010, ip="10.0.0.1"), m(9000, 9010, ip="10.0.0.2")),
])
def test_no_clash(table: PortTable, held: PortMapping, new: PortMapping) -> None:
    table.add(held, 'sandbox "web"')
    assert table.clash(new) is None


def test_clash_of_a_wide_range_scans_the_singles(table: PortTable) -> None:
    # A range wider than the number of single ports held is checked against all of them.
    table.add(m(80), 'sandbox "a"')
    table.add(m(443, proto="udp"), 'sandbox "b"')
    assert table.clash(m(1, 65535)) == 'sandbox "a"'
    assert table.clash(m(1, 65535, proto="udp")) == 'sandbox "b"'
    assert table.clash(m(1, 65535, proto="sctp")) is None
    assert table.clash(m(444, 65535, proto="udp")) is None


def test_clash_names_the_right_holder(table: PortTable) -> None:
    table.add(m(80, ip="127.0.0.1"), 'sandbox "a"')
    table.add(m(80, ip="127.0.0.2"), 'sandbox "b"')
    assert table.clash(m(80, ip="127.0.0.2")) == 'sandbox "b"'


def test_remove_frees_only_that_mapping(table: PortTable) -> None:
    a, b, r = m(80, ip="127.0.0.1"), m(80, ip="127.0.0.2"), m(9000, 9010)
    for x, who in ((a, "a"), (b, "b"), (r, "r")):
        table.add(x, who)
    table.remove(a)
    assert table.clash(m(80, ip="127.0.0.1")) is None
    assert table.clash(m(80, ip="127.0.0.2")) == "b"
    table.remove(r)
    assert table.clash(m(9005)) is None
    table.remove(b)
    assert table.clash(m(80)) is None
    table.remove(b)  # already gone: nothing happens


def test_resolve_fixed_ports(table: PortTable) -> None:
    assert table.resolve(parse("8080:80/udp")) == m(8080, ctr=80, proto="udp")
    assert table.resolve(parse("127.0.0.1:8080:80")) == m(8080, ctr=80, ip="127.0.0.1")
    assert table.resolve(parse("7000-7002:8000-8002")) == m(7000, 7002, 8000)
    assert table.resolve(parse("9000-9005")) == m(9000, 9005)


def test_resolve_uses_the_default_host_address_only_when_none_is_given(
        table: PortTable) -> None:
    assert table.resolve(parse("8080:80"), "192.0.2.1") == m(8080, ctr=80, ip="192.0.2.1")
    assert table.resolve(parse("127.0.0.1:8080:80"), "192.0.2.1").host_ip == "127.0.0.1"
    assert table.resolve(parse("80"), "192.0.2.1").host_ip == "192.0.2.1"


def test_resolve_refuses_a_clash_naming_port_address_and_holder(table: PortTable) -> None:
    table.add(m(8080, ip="127.0.0.1"), 'sandbox "web"')
    with pytest.raises(Conflict) as e:
        table.resolve(parse("127.0.0.1:8080:80"))
    assert e.value.message == ('host port 8080/tcp on 127.0.0.1 is already published by '
                               'sandbox "web"')
    table.add(m(9000, 9010, proto="udp"), 'sandbox "db"')
    with pytest.raises(Conflict) as e:
        table.resolve(parse("9010-9011/udp"))
    assert e.value.message == 'host port 9010-9011/udp is already published by sandbox "db"'


def test_resolve_does_not_reserve(table: PortTable) -> None:
    # Reserving is add(); a resolved mapping that is never added holds nothing.
    table.resolve(parse("8080:80"))
    assert table.clash(m(8080)) is None


def test_ephemeral_ports_follow_a_cursor_per_protocol(table: PortTable) -> None:
    lo, _ = EPHEMERAL
    first = table.resolve(parse("80"))
    assert first == m(lo, ctr=80)
    table.add(first, "a")
    # The cursor moved on even though the port was free again after a remove.
    table.remove(first)
    assert table.resolve(parse("81")) == m(lo + 1, ctr=81)
    # Another protocol has its own cursor.
    assert table.resolve(parse("53/udp")) == m(lo, ctr=53, proto="udp")


def test_ephemeral_skips_held_ports_and_wraps(table: PortTable) -> None:
    lo, hi = EPHEMERAL
    table.add(m(lo), "a")
    table.add(m(lo + 1, lo + 3), "b")
    assert table.resolve(parse("80")) == m(lo + 4, ctr=80)
    # Walk the cursor to the top of the range: the next pick wraps to the bottom,
    # skipping what is held there.
    table.add(m(lo + 5, hi - 1), "c")
    assert table.resolve(parse("80")) == m(hi, ctr=80)
    table.add(m(hi), "d")
    table.remove(m(lo + 1, lo + 3))
    assert table.resolve(parse("80")) == m(lo + 1, ctr=80)


def test_ephemeral_exhaustion(table: PortTable) -> None:
    lo, hi = EPHEMERAL
    table.add(m(lo, hi), "all")
    with pytest.raises(Exhausted) as e:
        table.resolve(parse("80"))
    assert e.value.message == f"no free host port in {lo}-{hi}/tcp for container port 80"
    # Only tcp is full.
    assert table.resolve(parse("80/udp")).host_port == lo


def test_host_range_with_one_container_port_picks_a_free_one(table: PortTable) -> None:
    table.add(m(8000), "a")
    table.add(m(8001, ip="127.0.0.1"), "b")
    got = table.resolve(parse("8000-8003:80"))
    assert got == m(8002, ctr=80)
    assert not got.is_range
    # With a specific address, ports held on every address count, those of another
    # address do not.
    assert table.resolve(parse("127.0.0.2:8000-8003:80")) == m(8001, ctr=80, ip="127.0.0.2")
    # It always starts at the bottom of the range: it keeps no cursor.
    table.add(got, "c")
    assert table.resolve(parse("8000-8003:80")) == m(8003, ctr=80)
    # And it leaves the ephemeral cursor alone.
    assert table.resolve(parse("80")).host_port == EPHEMERAL[0]


def test_host_range_with_one_container_port_exhausted(table: PortTable) -> None:
    table.add(m(8000, 8001), "a")
    table.add(m(8002, proto="tcp"), "b")
    with pytest.raises(Exhausted) as e:
        table.resolve(parse("8000-8002:80"))
    assert e.value.message == "no free host port in 8000-8002/tcp for container port 80"
    assert table.resolve(parse("8000-8002:80/udp")) == m(8000, ctr=80, proto="udp")


@pytest.mark.parametrize("spec, words", [
    ("127.0.0.1:80", "a host address needs a host port after it"),
    ("[2001:db8::1]:80", "a host address needs a host port after it"),
])
def test_a_host_address_without_a_host_port_is_refused(spec: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse(spec)


@pytest.mark.parametrize("a, b, clash", [
    ("0.0.0.0", "", True),            # all IPv4 vs all addresses
    ("0.0.0.0", "::", False),         # all IPv4 vs all IPv6
    ("0.0.0.0", "127.0.0.1", True),
    ("0.0.0.0", "2001:db8::1", False),
    ("::", "2001:db8::1", True),
    ("", "2001:db8::1", True),
    ("127.0.0.1", "127.0.0.2", False),
])
def test_family_wildcards_clash_only_within_their_family(a: str, b: str, clash: bool) -> None:
    ma = PortMapping("tcp", a, 8080, 8080, 80, 80)
    mb = PortMapping("tcp", b, 8080, 8080, 80, 80)
    assert ma.overlaps(mb) is clash and mb.overlaps(ma) is clash


def test_ipv6_loopback_is_refused_it_cannot_carry_published_traffic() -> None:
    with pytest.raises(InvalidArgument, match=r"\[::1\] cannot carry published traffic"):
        parse("[::1]:8080:80")
