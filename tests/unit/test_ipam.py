from __future__ import annotations

import netaddr
import pytest

from cnm.errors import Conflict, Exhausted, InvalidArgument
from cnm.ipam import (
    DEFAULT_POOLS,
    NetworkAddresses,
    Pool,
    Taken,
    free_subnet,
    parse_cidr,
    parse_ip,
    plan_subnets,
)
from cnm.model import Subnet

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text", ["10.0.0.0", "10.0.0.300/24", "10.0.0.0/33", "banana/8", ""])
def test_parse_cidr_names_the_bad_input(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_cidr(text)
    assert repr(text) in e.value.message
    assert e.value.message.startswith("invalid subnet")


def test_parse_cidr_without_prefix_says_cidr_is_expected() -> None:
    with pytest.raises(InvalidArgument, match="CIDR"):
        parse_cidr("10.1.0.0")


def test_parse_cidr_host_bits_set_hints_the_network() -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_cidr("10.1.2.3/16", "ip range")
    assert "host bits" in e.value.message
    assert "ip range" in e.value.message
    assert e.value.hint == "did you mean 10.1.0.0/16?"


def test_parse_cidr_accepts_both_families() -> None:
    assert str(parse_cidr("10.1.0.0/16")) == "10.1.0.0/16"
    assert str(parse_cidr("fd00:1::/64")) == "fd00:1::/64"


@pytest.mark.parametrize("text", ["10", "1.2.3", "10.0.0.256", "fd00:::1", "x"])
def test_parse_ip_names_the_bad_input(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_ip(text, "gateway")
    assert repr(text) in e.value.message
    assert "gateway" in e.value.message


def test_parse_ip_accepts_both_families() -> None:
    assert parse_ip("10.0.0.1").version == 4
    assert parse_ip("fd00::1").version == 6


# --------------------------------------------------------------------------- pools


def test_pool_parse() -> None:
    assert Pool.parse("base=10.10.0.0/16,size=24") == Pool("10.10.0.0/16", 24)
    assert Pool.parse(" size=24 , base=10.10.0.0/16") == Pool("10.10.0.0/16", 24)
    p6 = Pool.parse("base=fd00:1::/48,size=64")
    assert p6 == Pool("fd00:1::/48", 64) and p6.version == 6


@pytest.mark.parametrize(
    "text, words",
    [
        ("10.10.0.0/16", "base=CIDR,size=N"),
        ("base=10.10.0.0/16", "needs base and size"),
        ("size=24", "needs base and size"),
        ("base=10.10.0.0/16,size=24,color=red", "base=CIDR,size=N"),
        ("base=10.10.0.0/16,size=big", "'big'"),
        ("base=10.10.0.0/16,size=8", "between 16 and 30"),
        ("base=10.10.0.0/16,size=31", "between 16 and 30"),
        ("base=fd00::/48,size=127", "between 48 and 126"),
        ("base=10.10.0.1/16,size=24", "host bits"),
    ],
)
def test_pool_parse_refuses_bad_forms(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        Pool.parse(text)
    assert words in e.value.message


# --------------------------------------------------------------------------- free_subnet


def test_free_subnet_first_of_first_pool() -> None:
    assert free_subnet(DEFAULT_POOLS, 4, []) == "172.17.0.0/16"
    assert free_subnet(DEFAULT_POOLS, 6, []) == "fd63:6e6d::/64"


def test_free_subnet_skips_a_candidate_with_any_overlap() -> None:
    taken = [Taken("172.17.200.0/24", "x")]
    assert free_subnet(DEFAULT_POOLS, 4, taken) == "172.18.0.0/16"


def test_free_subnet_skips_nested_and_covering_ranges() -> None:
    # 172.16.0.0/12 covers every 172.x pool; the nested /24 must not shorten that range.
    taken = [Taken("172.16.0.0/12", "a"), Taken("172.18.5.0/24", "b")]
    assert free_subnet(DEFAULT_POOLS, 4, taken) == "192.168.0.0/20"
    taken = [Taken("172.18.5.0/24", "b"), Taken("172.16.0.0/12", "a")]
    assert free_subnet(DEFAULT_POOLS, 4, taken) == "192.168.0.0/20"


def test_free_subnet_jumps_to_the_next_aligned_candidate() -> None:
    pool = [Pool("10.0.0.0/16", 24)]
    # Blocked: 10.0.0.0-10.0.0.255 and 10.0.1.128-10.0.2.255 (two ranges merged); 10.0.1.0/24
    # is half-free only. The next whole candidate is 10.0.3.0/24, not 10.0.4.0/24.
    taken = [Taken("10.0.0.0/24", "a"), Taken("10.0.1.128/25", "b"), Taken("10.0.2.0/24", "c")]
    assert free_subnet(pool, 4, taken) == "10.0.3.0/24"
    # A free gap before the blocking ranges is found.
    assert free_subnet(pool, 4, taken[1:]) == "10.0.0.0/24"


def test_free_subnet_respects_a_range_starting_below_the_pool() -> None:
    with pytest.raises(Exhausted):
        free_subnet([Pool("10.128.0.0/9", 24)], 4, [Taken("10.0.0.0/8", "everything")])


def test_free_subnet_ignores_the_other_family() -> None:
    assert free_subnet(DEFAULT_POOLS, 4, [Taken("fd63:6e6d::/48", "v6")]) == "172.17.0.0/16"
    assert free_subnet(DEFAULT_POOLS, 6, [Taken("172.17.0.0/16", "v4")]) == "fd63:6e6d::/64"


def test_free_subnet_exhausted() -> None:
    pool = [Pool("10.0.0.0/23", 24)]
    taken = [Taken("10.0.0.0/24", "a"), Taken("10.0.1.0/24", "b")]
    with pytest.raises(Exhausted) as e:
        free_subnet(pool, 4, taken)
    assert "IPv4" in e.value.message
    assert e.value.hint is not None and "--default-address-pool" in e.value.hint


def test_over_a_thousand_networks_fit_in_the_default_pools() -> None:
    taken: list[Taken] = []
    for i in range(1100):
        taken.append(Taken(free_subnet(DEFAULT_POOLS, 4, taken), f"network {i}"))
    nets = sorted(netaddr.IPNetwork(t.cidr) for t in taken)
    assert len({str(n) for n in nets}) == 1100
    for a, b in zip(nets, nets[1:], strict=False):
        assert a.last < b.first, f"{a} overlaps {b}"
    # Docker's pools are used first, in order.
    assert [t.cidr for t in taken[:3]] == ["172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16"]


# --------------------------------------------------------------------------- plan_subnets


def plan(subnets: list[str] | None = None, gateways: list[str] | None = None,
         ip_ranges: list[str] | None = None, aux: dict[str, str] | None = None, *,
         ipv6: bool = False, taken: list[Taken] | None = None,
         routes: list[Taken] | None = None) -> tuple[Subnet, ...]:
    return plan_subnets(subnets or [], gateways or [], ip_ranges or [], aux or {}, ipv6=ipv6,
                        pools=DEFAULT_POOLS, taken=taken or [], routes=routes or [])


def test_plan_automatic_subnet() -> None:
    assert plan() == (Subnet("172.17.0.0/16", "172.17.0.1"),)


def test_plan_gateway_default_is_first_usable() -> None:
    assert plan(["10.1.0.0/24"]) == (Subnet("10.1.0.0/24", "10.1.0.1"),)
    (v6,) = [s for s in plan(["fd00:1::/64"], ipv6=True) if s.version == 6]
    assert v6 == Subnet("fd00:1::/64", "fd00:1::1")


def test_plan_matches_gateway_range_and_aux_to_the_containing_subnet() -> None:
    out = plan(["10.1.0.0/24", "10.2.0.0/24"], gateways=["10.2.0.254", "10.1.0.10"],
               ip_ranges=["10.2.0.128/25"], aux={"a": "10.1.0.5", "b": "10.2.0.6"})
    assert out == (
        Subnet("10.1.0.0/24", "10.1.0.10", None, {"a": "10.1.0.5"}),
        Subnet("10.2.0.0/24", "10.2.0.254", "10.2.0.128/25", {"b": "10.2.0.6"}),
    )


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(subnets=["10.1.0.0/24"], gateways=["10.9.0.1"]),
         "gateway 10.9.0.1 is not inside any requested subnet"),
        (dict(gateways=["10.9.0.1"]), "gateway 10.9.0.1 is not inside any requested subnet"),
        (dict(subnets=["10.1.0.0/24"], gateways=["10.1.0.1", "10.1.0.2"]),
         "subnet 10.1.0.0/24 has more than one gateway"),
        (dict(subnets=["10.1.0.0/24"], gateways=["10.1.0.0"]), "not a usable address"),
        (dict(subnets=["10.1.0.0/24"], gateways=["10.1.0.255"]), "not a usable address"),
        (dict(subnets=["10.1.0.0/24"], ip_ranges=["10.2.0.0/25"]),
         "ip range 10.2.0.0/25 is not inside any requested subnet"),
        (dict(subnets=["10.1.0.0/24"], ip_ranges=["10.1.0.0/25", "10.1.0.128/25"]),
         "more than one ip range"),
        (dict(subnets=["10.1.0.0/24"], aux={"r": "10.3.0.1"}), "not inside any requested"),
        (dict(subnets=["10.1.0.0/24"], aux={"r": "10.1.0.1"}), "also an aux address"),
        (dict(subnets=["10.1.0.0/16", "10.1.2.0/24"]), "overlaps subnet 10.1.0.0/16"),
        (dict(subnets=["10.1.0.0/24"], gateways=["nope"]), "'nope'"),
    ],
)
def test_plan_refuses(kw: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        plan(**kw)  # type: ignore[arg-type]
    assert words in e.value.message


def test_plan_ipv6_subnet_needs_ipv6() -> None:
    with pytest.raises(InvalidArgument) as e:
        plan(["fd00:1::/64"])
    assert "fd00:1::/64 is IPv6" in e.value.message
    assert e.value.hint == "add --ipv6"


def test_plan_overlap_with_taken_names_the_holder() -> None:
    taken = [Taken("10.1.0.0/16", 'network "blue" (10.1.0.0/16)')]
    with pytest.raises(Conflict) as e:
        plan(["10.1.2.0/24"], taken=taken)
    assert 'network "blue"' in e.value.message
    assert "10.1.2.0/24" in e.value.message


def test_plan_explicit_subnet_may_overlap_a_route_automatic_avoids_it() -> None:
    routes = [Taken("172.17.0.0/16", "route 172.17.0.0/16 via eth0")]
    assert plan(["172.17.0.0/24"], routes=routes)[0].subnet == "172.17.0.0/24"
    assert plan(routes=routes)[0].subnet == "172.18.0.0/16"


def test_plan_automatic_avoids_taken() -> None:
    taken = [Taken("172.17.0.0/16", "a"), Taken("172.18.0.0/16", "b")]
    assert plan(taken=taken)[0].subnet == "172.19.0.0/16"


def test_plan_ipv6_adds_an_automatic_64() -> None:
    out = plan(ipv6=True)
    assert out == (Subnet("172.17.0.0/16", "172.17.0.1"),
                   Subnet("fd63:6e6d::/64", "fd63:6e6d::1"))
    # Explicit IPv4 only: the IPv6 /64 still comes from the pool, and vice versa.
    assert [s.subnet for s in plan(["10.1.0.0/24"], ipv6=True)] == ["10.1.0.0/24",
                                                                     "fd63:6e6d::/64"]
    assert [s.subnet for s in plan(["fd00:1::/64"], ipv6=True)] == ["fd00:1::/64",
                                                                     "172.17.0.0/16"]


def test_plan_without_ipv6_has_no_ipv6_subnet() -> None:
    assert all(s.version == 4 for s in plan(["10.1.0.0/24"]))


# --------------------------------------------------------------------------- addresses


def space(subnet: str = "10.0.0.0/24", gateway: str | None = "10.0.0.1",
          ip_range: str | None = None, aux: dict[str, str] | None = None) -> NetworkAddresses:
    return NetworkAddresses([Subnet(subnet, gateway, ip_range, aux or {})])


def test_addresses_are_serial_and_skip_the_gateway() -> None:
    a = space()
    assert [a.allocate(4, f"s{i}") for i in range(3)] == ["10.0.0.2/24", "10.0.0.3/24",
                                                           "10.0.0.4/24"]
    assert a.holder("10.0.0.3/24") == "s1"


def test_dynamic_addresses_come_from_the_ip_range() -> None:
    a = space(ip_range="10.0.0.128/25")
    assert a.allocate(4, "x") == "10.0.0.128/24"
    assert a.allocate(4, "y") == "10.0.0.129/24"


def test_static_address_outside_the_range_but_inside_the_subnet() -> None:
    a = space(ip_range="10.0.0.128/25")
    assert a.allocate(4, "x", "10.0.0.5") == "10.0.0.5/24"
    # Dynamic allocation skips a statically held address.
    b = space()
    b.allocate(4, "x", "10.0.0.2")
    assert b.allocate(4, "y") == "10.0.0.3/24"


@pytest.mark.parametrize("ip", ["10.0.1.5", "10.0.0.0", "10.0.0.255"])
def test_static_address_must_be_usable_in_the_subnet(ip: str) -> None:
    with pytest.raises(InvalidArgument, match="not a usable address of 10.0.0.0/24"):
        space().allocate(4, "x", ip)


def test_static_address_of_the_other_family() -> None:
    with pytest.raises(InvalidArgument, match="not an IPv4 address"):
        space().allocate(4, "x", "fd00::5")


@pytest.mark.parametrize("ip", ["10.0.0.1", "10.0.0.9"])
def test_gateway_and_aux_are_reserved(ip: str) -> None:
    a = space(aux={"router": "10.0.0.9"})
    with pytest.raises(Conflict, match="reserved"):
        a.allocate(4, "x", ip)


def test_aux_address_is_skipped_by_dynamic_allocation() -> None:
    a = space(aux={"r": "10.0.0.2"})
    assert a.allocate(4, "x") == "10.0.0.3/24"


def test_double_static_names_the_holder() -> None:
    a = space()
    a.allocate(4, 'sandbox "web"', "10.0.0.7")
    with pytest.raises(Conflict) as e:
        a.allocate(4, 'sandbox "db"', "10.0.0.7")
    assert "10.0.0.7" in e.value.message
    assert e.value.hint == 'by sandbox "web"'


def test_exhaustion() -> None:
    a = space("10.0.0.0/29")  # usable .1-.6, gateway .1
    got = [a.allocate(4, f"s{i}") for i in range(5)]
    assert got == [f"10.0.0.{i}/29" for i in range(2, 7)]
    with pytest.raises(Exhausted, match="10.0.0.0/29"):
        a.allocate(4, "one too many")


def test_released_address_is_reused_only_after_wrapping() -> None:
    a = space("10.0.0.0/29")
    first = a.allocate(4, "a")
    a.allocate(4, "b")
    a.release(first)
    assert a.holder(first) is None
    assert [a.allocate(4, c) for c in "cde"] == ["10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"]
    assert a.allocate(4, "f") == first  # wrapped
    with pytest.raises(Exhausted):
        a.allocate(4, "g")


def test_mark_holds_an_address_loaded_from_the_store() -> None:
    a = space()
    a.mark("10.0.0.2/24", 'sandbox "old"')
    assert a.allocate(4, "new") == "10.0.0.3/24"
    with pytest.raises(Conflict) as e:
        a.allocate(4, "x", "10.0.0.2")
    assert e.value.hint == 'by sandbox "old"'


def test_family_without_subnet() -> None:
    a = space()
    assert not a.has(6)
    assert a.allocate(6, "x") is None
    with pytest.raises(InvalidArgument, match="no IPv6 subnet"):
        a.allocate(6, "x", "fd00::5")


def test_ipv6_allocation() -> None:
    a = space("fd00:1::/64", "fd00:1::1")
    assert a.allocate(6, "x") == "fd00:1::2/64"
    assert a.allocate(6, "y", "fd00:1::ffff") == "fd00:1::ffff/64"


def test_rollback_hands_the_same_address_out_again() -> None:
    a = space()
    a.allocate(4, "a")
    failed = a.allocate(4, "b")
    a.rollback(failed)
    assert a.holder(failed) is None
    assert a.allocate(4, "c") == failed == "10.0.0.3/24"
    # release (a real endpoint going away) does not rewind.
    a.release(failed)
    assert a.allocate(4, "d") == "10.0.0.4/24"


def test_rollback_of_a_static_address_does_not_rewind() -> None:
    a = space()
    a.allocate(4, "a")                     # .2, cursor at .3
    a.release("10.0.0.2/24")
    static = a.allocate(4, "b", "10.0.0.2")
    a.rollback(static)
    assert a.holder(static) is None
    assert a.allocate(4, "c") == "10.0.0.3/24"
