"""netfilter over FakeNft: transactions, host switches, tolerant deletes, DOCKER-USER."""

from __future__ import annotations

import logging

import pytest

from cnm import antispoof, firewall
from cnm.errors import KernelError, NotFound
from cnm.firewall import NetworkRules, PortRule
from cnm.netfilter import Netfilter
from cnm.portspec import PortMapping
from cnm.testing import FakeNft

DEFAULT = NetworkRules("cnm0", ("172.17.0.0/16",))
INTERNAL = NetworkRules("br-int", ("10.1.0.0/24", "fd00:1::/64"), internal=True)
V6 = NetworkRules("br-v6", ("10.2.0.0/24", "fd00:2::/64"))
V6_ONLY = NetworkRules("br-v6only", ("fd00:3::/64",))

WEB = PortRule(PortMapping("tcp", "", 8080, 8080, 80, 80), "172.17.0.2", None)
DNS = PortRule(PortMapping("udp", "", 53, 53, 53, 53), "10.2.0.2", "fd00:2::2")

BRIDGE_NF = {"net/bridge/bridge-nf-call-iptables": "1",
             "net/bridge/bridge-nf-call-ip6tables": "1"}


@pytest.fixture
def nft() -> FakeNft:
    return FakeNft()


@pytest.fixture
def nf(nft: FakeNft) -> Netfilter:
    return Netfilter(nft)


def test_rebuild_is_one_transaction_of_the_whole_table(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT, V6], [WEB, DNS])
    # Both of cnm's tables, inet and bridge (the port guards, none here), in one go.
    assert nft.transactions == [firewall.table([DEFAULT, V6], [WEB, DNS])
                                + antispoof.table([])]
    assert nft.elements == {
        "bridges": {'"cnm0"': "", '"br-v6"': ""},
        "same": {'"cnm0" . "cnm0"': "", '"br-v6" . "br-v6"': ""},
        "masq4": {"172.17.0.0/16": "", "10.2.0.0/24": ""},
        "masq6": {"fd00:2::/64": ""},
        "pub4_any": {"tcp . 8080": "172.17.0.2 . 80", "udp . 53": "10.2.0.2 . 53"},
        "pub6_any": {"udp . 53": "fd00:2::2 . 53"},
    }


def test_rebuild_drops_what_the_table_held_before(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT, V6], [WEB, DNS])
    nf.rebuild([DEFAULT], [])
    assert nft.elements == {"bridges": {'"cnm0"': ""}, "same": {'"cnm0" . "cnm0"': ""},
                            "masq4": {"172.17.0.0/16": ""}}


@pytest.mark.parametrize("networks, want", [
    ([], {}),
    ([DEFAULT], {"net/ipv4/conf/cnm0/route_localnet": "1", **BRIDGE_NF,
                 "net/ipv4/ip_forward": "1"}),
    # internal: nothing leaves it, so no forwarding is switched on for it
    ([INTERNAL], {"net/ipv4/conf/br-int/route_localnet": "1", **BRIDGE_NF}),
    ([V6], {"net/ipv4/conf/br-v6/route_localnet": "1", **BRIDGE_NF,
            "net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}),
    ([V6_ONLY], {"net/ipv4/conf/br-v6only/route_localnet": "1", **BRIDGE_NF,
                 "net/ipv6/conf/all/forwarding": "1"}),
    ([INTERNAL, DEFAULT], {"net/ipv4/conf/br-int/route_localnet": "1",
                           "net/ipv4/conf/cnm0/route_localnet": "1", **BRIDGE_NF,
                           "net/ipv4/ip_forward": "1"}),
])
def test_rebuild_sets_the_switches(nft: FakeNft, nf: Netfilter, networks: list[NetworkRules],
                                   want: dict[str, str]) -> None:
    nf.rebuild(networks, [])
    assert nft.sysctls == want


def test_add_network_sets_its_switches(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([], [])
    nf.add_network(V6_ONLY, [V6_ONLY])
    assert nft.transactions[-1] == firewall.add_network(V6_ONLY)
    assert nft.sysctls == {"net/ipv4/conf/br-v6only/route_localnet": "1", **BRIDGE_NF,
                           "net/ipv6/conf/all/forwarding": "1"}


class NoBrNetfilter(FakeNft):
    """A kernel without br_netfilter: its sysctls do not exist."""

    def sysctl(self, key: str, value: str) -> None:
        if key.startswith("net/bridge/"):
            raise NotFound(f"sysctl {key} does not exist")
        super().sysctl(key, value)


def test_missing_br_netfilter_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    nft = NoBrNetfilter()
    with caplog.at_level(logging.WARNING, logger="cnm.netfilter"):
        Netfilter(nft).rebuild([DEFAULT], [])
    assert nft.sysctls == {"net/ipv4/conf/cnm0/route_localnet": "1", "net/ipv4/ip_forward": "1"}
    assert [r.getMessage() for r in caplog.records] == [
        "net/bridge/bridge-nf-call-iptables: sysctl net/bridge/bridge-nf-call-iptables does "
        "not exist",
        "net/bridge/bridge-nf-call-ip6tables: sysctl net/bridge/bridge-nf-call-ip6tables does "
        "not exist"]


def test_other_sysctl_failures_are_errors() -> None:
    class Broken(FakeNft):
        def sysctl(self, key: str, value: str) -> None:
            raise KernelError(f"sysctl {key}={value}: Read-only file system")

    with pytest.raises(KernelError):
        Netfilter(Broken()).rebuild([DEFAULT], [])


# --------------------------------------------------------------------------- deletes


def test_remove_ports_is_one_transaction(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT, V6], [WEB, DNS])
    nf.remove_ports([WEB, DNS])
    assert nft.transactions[-1] == firewall.delete_ports([WEB, DNS])
    assert "pub4_any" in nft.elements and not nft.elements["pub4_any"]
    assert not nft.elements["pub6_any"]


def test_remove_ports_after_a_flush_succeeds(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT, V6], [WEB, DNS])
    nft.elements = {}  # `nft flush ruleset` behind cnm's back
    nf.remove_ports([WEB, DNS])
    assert nft.elements == {}


def test_remove_ports_deletes_what_is_left_when_some_is_gone(nft: FakeNft,
                                                             nf: Netfilter) -> None:
    nf.rebuild([DEFAULT, V6], [WEB, DNS])
    del nft.elements["pub4_any"]["tcp . 8080"]
    nf.remove_ports([WEB, DNS])
    # The batch failed as a whole; line by line, the elements still there went.
    assert nft.elements["pub4_any"] == {} and nft.elements["pub6_any"] == {}
    assert nft.transactions[-2:] == ["delete element inet cnm pub4_any { udp . 53 }\n",
                                     "delete element inet cnm pub6_any { udp . 53 }\n"]


def test_remove_network_after_a_flush_succeeds(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT, V6], [])
    nft.elements = {}
    nf.remove_network(V6, [DEFAULT])
    assert nft.elements == {}


def test_delete_does_not_swallow_other_errors() -> None:
    class Refusing(FakeNft):
        def run(self, text: str) -> str:
            if text.startswith("delete"):
                raise KernelError("nftables refused the change: Error: syntax error")
            return super().run(text)

    with pytest.raises(KernelError):
        Netfilter(Refusing()).remove_ports([WEB])


def test_adding_a_duplicate_element_is_refused(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT], [WEB])
    before = {k: dict(v) for k, v in nft.elements.items()}
    with pytest.raises(KernelError):
        nf.add_ports([WEB])
    assert nft.elements == before


# --------------------------------------------------------------------------- DOCKER-USER


def test_no_docker_user_chain_means_no_docker_rules(nft: FakeNft, nf: Netfilter) -> None:
    nf.rebuild([DEFAULT], [])
    nf.add_network(V6, [DEFAULT, V6])
    nf.remove_network(V6, [DEFAULT])
    assert not any("DOCKER-USER" in t for t in nft.transactions)


def test_docker_user_gets_accepts_for_every_bridge(nft: FakeNft, nf: Netfilter) -> None:
    nft.docker_user = []
    nf.rebuild([DEFAULT, V6], [])
    assert nft.transactions[-1] == firewall.docker_user(["cnm0", "br-v6"], [])


def test_docker_user_replaces_only_cnms_rules_by_handle(nft: FakeNft, nf: Netfilter) -> None:
    nft.docker_user = [
        {"rule": {"handle": 4, "comment": "cnm"}},
        {"rule": {"handle": 5}},  # someone else's, no comment
        {"rule": {"handle": 6, "comment": "mine"}},
        {"rule": {"handle": 9, "comment": "cnm"}},
    ]
    nf.add_network(V6, [DEFAULT, V6])
    # (The text of those rules is pinned in test_firewall.)
    assert nft.transactions[-1] == firewall.docker_user(["cnm0", "br-v6"], [4, 9])


def test_docker_user_forgets_a_removed_network(nft: FakeNft, nf: Netfilter) -> None:
    nft.docker_user = [{"rule": {"handle": 4, "comment": "cnm"}}]
    nf.remove_network(V6, [DEFAULT])
    assert nft.transactions[-1] == firewall.docker_user(["cnm0"], [4])
