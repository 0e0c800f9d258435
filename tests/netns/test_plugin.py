"""cnm.testing.plugin as a runtime author would use it: a test suite outside this repo
loads it with ``-p cnm.testing.plugin`` and gets throwaway namespaces and a real cnmd."""

from __future__ import annotations

import subprocess

import pytest

pytest_plugins = ["pytester"]

OUTSIDE = '''
from cnm.testing.netns import can_ping


def test_two_sandboxes_reach_each_other(daemon, host_ns):
    print("HOST_NS", host_ns.name)
    c = daemon.client()
    c.create_network(name="lab", subnets=["10.123.0.0/24"])
    a = c.create_sandbox(name="a", network="lab")
    c.create_sandbox(name="b", network="lab")
    b_ip = c.sandbox("b")["endpoints"][0]["ipv4"].split("/")[0]
    assert can_ping(a["netns"], b_ip)
    c.close()


def test_the_stack_fixture_runs_the_core_in_process(stack):
    stack.controller.create_network(__import__("cnm.model").model.NetworkSpec("x"))
    assert "x" in [n.name for n in stack.controller.list_networks()]
'''


def test_the_plugin_gives_an_outside_suite_namespaces_and_a_daemon(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outside=OUTSIDE)
    result = pytester.runpytest_subprocess("-p", "cnm.testing.plugin", "-s", "-q")
    result.assert_outcomes(passed=2)
    (line,) = [x for x in result.outlines if x.startswith("HOST_NS")]
    name = line.split()[1]
    # The throwaway host namespace went with the test.
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name.startswith("cnmtest-") and name not in netns
