"""The embedded DNS under malformed input: a flood of broken packets at one sandbox's
listener, then garbage TCP connections, and it still answers every sandbox correctly.

The packets come from dnsagent.py inside the sandbox (one process sends them all) to
127.0.0.11:53, the address the sandbox's resolv.conf names.
"""

from __future__ import annotations

import json

from cnm.testing.netns import Daemon
from tests.netns.dnstools import EMBEDDED, agent, asker, ip_of, ok, sandbox_info

PACKETS = 100_000


def test_a_flood_of_malformed_packets_leaves_dns_answering(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.79.0.0/24", "web")
    ok(d, "network", "create", "--subnet", "10.80.0.0/24", "other")
    ok(d, "sandbox", "create", "--network", "web", "--alias", "target", "victim")
    ok(d, "sandbox", "create", "--network", "web", "bystander")
    ok(d, "sandbox", "create", "--network", "other", "far")
    victim_ns = sandbox_info(d, "victim")["netns"]
    me = ip_of(d, "victim", "web")

    out = agent(victim_ns, "flood", EMBEDDED, str(PACKETS), "20240601", "target", me,
                timeout=120)
    report = json.loads(out.stdout)
    print(report)
    assert report["sent"] == PACKETS
    # Every kind of damage was in the mix.
    assert set(report["kinds"]) == {"random", "big", "truncated", "bitflip", "labels",
                                    "pointer", "counts", "response", "opcode", "edns"}
    # Between bursts a good query got its right answer every time: the listener read
    # (rather than lost) the burst before it and kept working.
    assert report["bad_sync"] == 0, report
    # The kernel dropped (almost) nothing for a full buffer: the packets were really read.
    assert report["rcvbuf_errors"] < PACKETS // 100, report
    # A response is never answered: two servers must not bounce packets off each other.
    assert report["replies_to_responses"] == 0, report

    tcp = json.loads(agent(victim_ns, "tcpgarbage", EMBEDDED, "target", me).stdout)
    # Every broken connection was closed by the server, with at most a FORMERR for a
    # whole message it could not read.
    outcomes = dict(tcp["cases"])
    assert outcomes == {
        "nothing": "closed",
        "random": "closed",
        "short length": "closed",
        "zero length": "closed",
        "huge length, few bytes": "closed",
        "length then garbage": outcomes["length then garbage"],
        "compression cycle": "FORMERR closed",
        "response": "closed",
        "good then garbage": "NOERROR closed",
    }, outcomes
    assert outcomes["length then garbage"] in ("closed", "FORMERR closed")
    assert tcp["good"]["answers"] == [["target.", "A", me]], tcp

    # Afterwards: right answers, over UDP and TCP, here and in the other sandboxes.
    with asker(victim_ns) as q:
        assert q.addresses("bystander") == [ip_of(d, "bystander", "web")]
        # An alias is no NAME.NETWORK: not ours, so forwarded (and no upstream here).
        assert q.ask("target.web")["rcode"] == "SERVFAIL"
        assert q.addresses("victim.web") == [me]
        assert q.addresses("bystander", tcp=True) == [ip_of(d, "bystander", "web")]
        assert q.ask("far")["rcode"] == "NXDOMAIN"
    with asker(sandbox_info(d, "far")["netns"]) as q:
        assert q.addresses("far") == [ip_of(d, "far", "other")]
    # The DNS thread is alive for new listeners too.
    ok(d, "sandbox", "create", "--network", "web", "newcomer")
    with asker(sandbox_info(d, "newcomer")["netns"]) as q:
        assert q.addresses("target") == [me]
    # Nothing blew up on the way: no traceback in the daemon's log.
    assert "Traceback" not in d.log.read_text()
