from __future__ import annotations

import pytest

from cnm.drivers.bridge import BridgeDriver, BridgeOptions
from cnm.errors import InvalidArgument


def test_defaults() -> None:
    assert BridgeOptions.parse({}) == BridgeOptions()
    assert BridgeOptions.parse({}).to_dict() == {"icc": "true", "masquerade": "true",
                                                  "anti_spoofing": "true"}


def test_docker_aliases_map_to_canonical_keys() -> None:
    opts = BridgeOptions.parse({
        "com.docker.network.bridge.name": "br-web",
        "com.docker.network.driver.mtu": "1400",
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "0",
        "com.docker.network.bridge.host_binding_ipv4": "192.0.2.1",
    })
    assert opts == BridgeOptions(bridge_name="br-web", mtu=1400, icc=False, masquerade=False,
                                 host_binding_ipv4="192.0.2.1")
    assert opts.to_dict() == {"bridge_name": "br-web", "mtu": "1400", "icc": "false",
                              "masquerade": "false", "host_binding_ipv4": "192.0.2.1",
                              "anti_spoofing": "true"}


def test_canonical_keys_and_round_trip() -> None:
    raw = {"bridge_name": "br0", "mtu": "9000", "icc": "yes", "masquerade": "off",
           "anti_spoofing": "false"}
    stored = BridgeDriver().parse_options(raw).to_dict()
    assert stored == {"bridge_name": "br0", "mtu": "9000", "icc": "true", "masquerade": "false",
                      "anti_spoofing": "false"}
    assert BridgeDriver().parse_options(stored).to_dict() == stored


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidArgument) as e:
        BridgeOptions.parse({"mtu": "1500", "com.docker.network.bridge.colour": "red"})
    assert "'com.docker.network.bridge.colour'" in e.value.message
    assert e.value.hint is not None and "bridge_name" in e.value.hint


@pytest.mark.parametrize("raw, words", [
    ({"mtu": "abc"}, "option mtu"),
    ({"mtu": "67"}, "68-65535"),
    ({"mtu": "65536"}, "68-65535"),
    ({"mtu": "-1500"}, "option mtu"),
    ({"mtu": ""}, "option mtu"),
    ({"com.docker.network.driver.mtu": "1e3"}, "option mtu"),
    ({"icc": "maybe"}, "option icc"),
    ({"com.docker.network.bridge.enable_ip_masquerade": "2"}, "option masquerade"),
    ({"anti_spoofing": "sometimes"}, "option anti_spoofing"),
    ({"anti_spoofing": ""}, "option anti_spoofing"),
    ({"bridge_name": "a-very-long-bridge"}, "option bridge_name"),
    ({"bridge_name": "br 0"}, "option bridge_name"),
    ({"bridge_name": ""}, "option bridge_name"),
    ({"host_binding_ipv4": "300.1.1.1"}, "host_binding_ipv4"),
    ({"host_binding_ipv4": "fd00::1"}, "not IPv4"),
])
def test_bad_values_are_refused(raw: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        BridgeOptions.parse(raw)
    assert words in e.value.message


def test_mtu_of_unicode_digits_is_an_invalid_argument() -> None:
    # "²" is a digit to str.isdigit but not to int(): this once escaped as a ValueError.
    with pytest.raises(InvalidArgument, match="option mtu"):
        BridgeOptions.parse({"mtu": "1²"})


def test_alias_and_canonical_together_are_refused() -> None:
    with pytest.raises(InvalidArgument) as e:
        BridgeOptions.parse({"mtu": "1500", "com.docker.network.driver.mtu": "1500"})
    assert "option mtu given twice" in e.value.message
