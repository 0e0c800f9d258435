"""Requests over cnm.limits are refused before the core takes its lock, whoever sends them;
subnet checks are by sorting, so even a request past the bounds (called directly) is cheap;
and openapi.yaml states bounds no looser than the server's."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cnm import limits
from cnm.api.server import openapi_document
from cnm.core import Controller
from cnm.errors import InvalidArgument
from cnm.ipam import plan_subnets
from cnm.model import ConnectSpec, EndpointSpec, NetworkSpec, SandboxSpec

HUGE = tuple(f"10.{i // 256 % 256}.{i % 256}.0/24" for i in range(100_000))


@pytest.mark.parametrize("call", [
    lambda c: c.create_network(NetworkSpec(name="n", subnets=HUGE)),
    lambda c: c.create_network(NetworkSpec(name="n", labels={"k": "v" * 100_000})),
    lambda c: c.create_network(NetworkSpec(name="n", labels={str(i): "" for i in range(10**5)})),
    lambda c: c.create_sandbox(SandboxSpec(name="s", aliases=("a",) * 10_000)),
    lambda c: c.connect(ConnectSpec(network="bridge", sandbox="s", ports=("80",) * 10_000)),
    lambda c: c.create_endpoint(EndpointSpec(network="bridge", name="e", ip="1" * 10_000)),
    lambda c: c.join("e", "s", "x" * 10_000),
    lambda c: c.publish("s", ["80"] * 10_000),
], ids=["subnets", "label-length", "label-count", "aliases", "ports", "ip", "ifname",
        "publish"])
def test_an_oversized_request_is_refused_without_the_lock(ctl: Controller, call: Any) -> None:
    """Another thread holds the core's lock throughout: the refusal comes all the same,
    so it was decided without the lock (and without waiting behind other requests)."""
    outcome: list[BaseException] = []
    with ctl.lock:
        t = threading.Thread(target=lambda: outcome.append(_raises(call, ctl)), daemon=True)
        t.start()
        t.join(60)  # a guard against a hang (the test's failure), not a speed check
        assert not t.is_alive(), "the oversized request waited for the lock"
    assert isinstance(outcome[0], InvalidArgument), outcome
    assert "at most" in outcome[0].message


def _raises(call: Any, ctl: Controller) -> BaseException:
    try:
        call(ctl)
    except BaseException as e:  # noqa: BLE001 - handed to the test thread
        return e
    return AssertionError("accepted")


def test_ten_thousand_subnets_are_checked_by_sorting() -> None:
    """Past the bound (a direct call): an overlap between the first and the last of 20,000
    subnets is still found, which the pairwise check did in ~n²/2 = 2e8 comparisons."""
    nets = [f"10.{i // 256 % 256}.{i % 256}.0/24" for i in range(1, 20_000)]
    nets.append("10.0.0.0/16")  # overlaps the first 255
    with pytest.raises(InvalidArgument, match="overlaps subnet"):
        plan_subnets(nets, [], [], {}, ipv6=False, pools=(), taken=[])
    ok = plan_subnets(nets[:-1], ["10.77.3.9"], ["10.50.1.0/25"], {}, ipv6=False, pools=(),
                      taken=[])
    assert len(ok) == len(nets) - 1
    assert next(s for s in ok if s.subnet == "10.77.3.0/24").gateway == "10.77.3.9"


@pytest.mark.parametrize("subnet,words", [
    ("127.0.0.0/8", "loopback"), ("127.5.0.0/16", "loopback"), ("224.0.0.0/4", "multicast"),
    ("239.1.0.0/16", "multicast"), ("::ffff:10.0.0.0/104", "IPv4-mapped"),
    ("fd00::1/128", "one address"), ("10.9.0.1/32", "one address"), ("ff02::/16", "multicast"),
    ("0.0.0.0/0", "this network"), ("::1/128", "loopback"),
])
def test_subnets_no_endpoint_can_live_in_are_refused(ctl: Controller, subnet: str,
                                                     words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as e:
        ctl.create_network(NetworkSpec(name="n", subnets=(subnet,), ipv6=True))
    assert subnet in e.value.message
    assert "n" not in {n.name for n in ctl.list_networks()}


def _body_schemas() -> dict[str, dict[str, Any]]:
    schemas = openapi_document()["components"]["schemas"]
    out = {}
    for name in ("NetworkCreate", "Connect", "EndpointCreate", "Join", "Disconnect",
                 "SandboxCreate", "Publish"):
        props = {}
        for field, prop in schemas[name]["properties"].items():
            if "$ref" in prop:
                prop = {**schemas[prop["$ref"].rsplit("/", 1)[1]],
                        **{k: v for k, v in prop.items() if k != "$ref"}}
            props[field] = prop
        out[name] = props
    return out


@pytest.mark.parametrize("schema,field", [(s, f) for s, props in _body_schemas().items()
                                          for f in props])
def test_the_document_is_no_looser_than_the_server(schema: str, field: str) -> None:
    prop = _body_schemas()[schema][field]
    bound = limits.FIELDS.get(field)
    if prop["type"] == "boolean":
        return
    assert bound is not None, f"{schema}.{field} has no bound in cnm.limits"
    if prop["type"] == "string":
        assert prop.get("maxLength", 10**9) <= bound.length, f"{schema}.{field}"
        if field in ("name", "sandbox") and schema != "Disconnect":
            assert prop.get("minLength", 0) >= 1, f"{schema}.{field} allows an empty string"
    elif prop["type"] == "array":
        assert prop.get("maxItems", 10**9) <= bound.count, f"{schema}.{field}"
        assert prop["items"].get("maxLength", 10**9) <= bound.length, f"{schema}.{field}"
    else:
        assert prop.get("maxProperties", 10**9) <= bound.count, f"{schema}.{field}"
        values = prop["additionalProperties"]
        assert values.get("maxLength", 10**9) <= bound.length, f"{schema}.{field}"
        # OpenAPI 3.0 has no propertyNames: the key bound is the extension x-propertyNames.
        assert prop["x-propertyNames"]["maxLength"] <= bound.key, f"{schema}.{field}"


def test_the_body_limit_is_documented() -> None:
    text = openapi_document()["info"]["description"]
    assert f"{limits.MAX_BODY} bytes" in text and "413" in text
