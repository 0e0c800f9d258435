"""The embedded DNS, seen by real clients inside sandboxes of a real cnmd.

Clients are glibc (`getent` through `cnm sandbox exec`, which reads the sandbox's
resolv.conf), `dig`, and dnsagent.py's dnslib client kept running inside a sandbox. Every
query goes to 127.0.0.11 inside a sandbox the test made, or to a fake upstream in a
namespace of the test's own; the daemon never has a real resolver to forward to.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from cnm.testing.netns import Daemon, HostNs, in_ns
from tests.netns.dnstools import (
    EMBEDDED,
    UPSTREAM_NET,
    asker,
    fake_server,
    ip_of,
    ok,
    sandbox_info,
    upstream_ns,
)


def netns(d: Daemon, sandbox: str) -> str:
    return str(sandbox_info(d, sandbox)["netns"])


def getent(d: Daemon, sandbox: str, name: str) -> list[list[str]]:
    """`getent hosts NAME` inside the sandbox: its lines, split ([] when not found)."""
    r = d.cli("sandbox", "exec", sandbox, "--", "getent", "hosts", name)
    assert r.returncode in (0, 2), r.stderr
    return [line.split() for line in r.stdout.splitlines()]


def dig(d: Daemon, sandbox: str, *args: str) -> str:
    r = d.cli("sandbox", "exec", sandbox, "--", "dig", "+time=2", "+tries=1", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def dig_short(d: Daemon, sandbox: str, *args: str) -> list[str]:
    return sorted(dig(d, sandbox, "+short", *args).split())


def restart(d: Daemon, *extra: str) -> None:
    assert d.stop() == 0
    d.start(*extra)


# --------------------------------------------------------------------------- names
def test_names_hostnames_aliases_and_name_dot_network(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.61.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "--hostname", "alpha", "--alias", "api",
       "--alias", "Front", "a")
    ok(d, "sandbox", "create", "--network", "web", "b")
    a_ip, b_ip = ip_of(d, "a", "web"), ip_of(d, "b", "web")

    # glibc through the sandbox's resolv.conf: the sandbox name, its hostname, each
    # alias, NAME.NETWORK; names are case-insensitive.
    for name in ("a", "alpha", "api", "front", "FRONT", "a.web", "A.Web"):
        assert getent(d, "b", name) == [[a_ip, name]], name
    assert getent(d, "a", "b") == [[b_ip, "b"]]
    assert getent(d, "a", "b.web.") == [[b_ip, "b.web"]]

    seen = ok(d, "sandbox", "exec", "b", "--", "cat", "/etc/resolv.conf")
    assert "nameserver 127.0.0.11" in seen.splitlines()
    assert "options ndots:0" in seen.splitlines()

    # dig at the same server: an A record with the embedded server's TTL, not authoritative,
    # recursion available.
    out = dig(d, "b", f"@{EMBEDDED}", "api")
    assert "status: NOERROR" in out
    assert "flags: qr rd ra;" in out
    assert f"api.\t\t\t60\tIN\tA\t{a_ip}" in out
    assert dig_short(d, "b", f"@{EMBEDDED}", "alpha.web") == []  # hostname is not NAME.NET
    assert dig_short(d, "b", f"@{EMBEDDED}", "a.web") == [a_ip]


def test_several_holders_are_all_returned_in_varying_order(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.62.0.0/24", "web")
    for n in ("s1", "s2", "s3"):
        ok(d, "sandbox", "create", "--network", "web", "--alias", "svc", n)
    ok(d, "sandbox", "create", "--network", "web", "client")
    want = sorted(ip_of(d, n, "web") for n in ("s1", "s2", "s3"))

    orders = set()
    with asker(netns(d, "client")) as q:
        for _ in range(30):
            got = q.addresses("svc")
            assert sorted(got) == want
            orders.add(tuple(got))
    # Shuffled: 30 answers all in one order would happen by chance once in 6**29.
    assert len(orders) > 1
    # glibc gets them all too.
    assert sorted(getent(d, "client", "svc")) == [[ip, "svc"] for ip in want]
    assert dig_short(d, "client", f"@{EMBEDDED}", "svc") == want


def test_ptr_names_the_sandbox_on_its_network(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.63.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "--hostname", "alpha", "a")
    ok(d, "sandbox", "create", "--network", "web", "b")
    a_ip = ip_of(d, "a", "web")
    assert dig_short(d, "b", f"@{EMBEDDED}", "-x", a_ip) == ["a.web."]
    # glibc's reverse lookup goes through the same record.
    assert getent(d, "b", a_ip) == [[a_ip, "a.web"]]


def test_aaaa_on_an_ipv6_network_and_nodata_for_the_missing_family(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--ipv6", "--subnet", "10.64.0.0/24", "--subnet",
       "fd00:64::/64", "dual")
    ok(d, "network", "create", "--subnet", "10.65.0.0/24", "v4only")
    ok(d, "sandbox", "create", "--network", "dual", "a")
    ok(d, "sandbox", "create", "--network", "dual", "b")
    ok(d, "network", "connect", "v4only", "b")
    ok(d, "sandbox", "create", "--network", "v4only", "c")
    a4, a6 = ip_of(d, "a", "dual"), ip_of(d, "a", "dual", 6)
    c4 = ip_of(d, "c", "v4only")
    assert a6.startswith("fd00:64::")

    with asker(netns(d, "b")) as q:
        assert q.addresses("a", "AAAA") == [a6]
        assert q.addresses("a", "A") == [a4]
        assert q.addresses("a.dual", "AAAA") == [a6]
        # A name held on an IPv4-only network: no AAAA, but the name exists (NODATA).
        r = q.ask("c", "AAAA")
        assert (r["rcode"], r["answers"]) == ("NOERROR", [])
        assert q.addresses("c", "A") == [c4]
        # Other types of a name held here: NODATA too, never forwarded.
        r = q.ask("a", "MX")
        assert (r["rcode"], r["answers"]) == ("NOERROR", [])
        r = q.ask("a", "ANY")
        assert sorted(x[2] for x in r["answers"]) == sorted([a4, a6])
    rev6 = dig_short(d, "b", f"@{EMBEDDED}", "-x", a6)
    assert rev6 == ["a.dual."]
    # glibc, asking for IPv6 through the sandbox's resolv.conf.
    r = d.cli("sandbox", "exec", "b", "--", "getent", "ahostsv6", "a")
    assert r.returncode == 0 and a6 in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------- scope
def test_a_name_on_a_network_not_shared_is_nxdomain(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.66.0.0/24", "front")
    ok(d, "network", "create", "--subnet", "10.67.0.0/24", "back")
    ok(d, "sandbox", "create", "--network", "front", "web")
    ok(d, "sandbox", "create", "--network", "back", "db")
    ok(d, "sandbox", "create", "--network", "front", "app")
    # An alias is per network: app is "cache" on back only.
    ok(d, "network", "connect", "--alias", "cache", "back", "app")

    with asker(netns(d, "web")) as q:
        for name in ("db", "db.back", "cache", "app.back"):
            r = q.ask(name)
            assert (r["rcode"], r["answers"]) == ("NXDOMAIN", []), name
        # A name held on a shared network answers with that network's address only.
        assert q.addresses("app") == [ip_of(d, "app", "front")]
        assert q.addresses("app.front") == [ip_of(d, "app", "front")]
    with asker(netns(d, "db")) as q:
        assert q.addresses("cache") == [ip_of(d, "app", "back")]
        assert q.addresses("app") == [ip_of(d, "app", "back")]
        assert q.ask("web")["rcode"] == "NXDOMAIN"
    with asker(netns(d, "app")) as q:
        # On both networks: it sees both.
        assert q.addresses("db") == [ip_of(d, "db", "back")]
        assert q.addresses("web") == [ip_of(d, "web", "front")]
        assert sorted(q.addresses("app")) == sorted([ip_of(d, "app", "front"),
                                                     ip_of(d, "app", "back")])
    assert getent(d, "web", "db") == []


def test_names_are_live_when_connect_returns_and_gone_when_disconnect_returns(
        daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.68.0.0/24", "web")
    ok(d, "network", "create", "--subnet", "10.69.0.0/24", "other")
    ok(d, "sandbox", "create", "--network", "web", "watcher")
    ok(d, "sandbox", "create", "--network", "other", "x")
    c = d.client()
    try:
        with asker(netns(d, "watcher")) as q:
            assert q.ask("x")["rcode"] == "NXDOMAIN"
            for round_ in range(5):
                ep = c.connect("web", "x", aliases=[f"x{round_}"])
                ip = ep["ipv4"].split("/")[0]
                # No sleep: the query leaves the moment the API call returned.
                assert q.addresses("x") == [ip], round_
                assert q.addresses(f"x{round_}") == [ip]
                c.disconnect("web", "x")
                assert q.ask("x")["rcode"] == "NXDOMAIN", round_
                assert q.ask(f"x{round_}")["rcode"] != "NOERROR"
            # A new sandbox answers when create returns; a removed one is gone when rm does.
            sb = c.create_sandbox(name="fresh", network="web", aliases=["newbie"])
            ip = sb["endpoints"][0]["ipv4"].split("/")[0]
            assert q.addresses("fresh") == [ip]
            assert q.addresses("newbie") == [ip]
            c.remove_sandbox("fresh")
            r = q.ask("fresh")
            assert r.get("rcode") != "NOERROR" and r.get("answers", []) == [], r
            # A sandbox on the default bridge has no listener until it joins a user-defined
            # network; from then on it is served.
            c.create_sandbox(name="late")
            c.connect("web", "late")
            with asker(netns(d, "late")) as late:
                assert late.addresses("watcher") == [ip_of(d, "watcher", "web")]
            assert "nameserver 127.0.0.11" in ok(d, "sandbox", "exec", "late", "--", "cat",
                                                 "/etc/resolv.conf")
    finally:
        c.close()


# --------------------------------------------------------------------------- forwarding
def test_forwarding_to_upstreams_answer_nxdomain_servfail_and_silence(
        daemon: Daemon, host_ns: HostNs, tmp_path: Path) -> None:
    with upstream_ns(host_ns) as up:
        first, second, silent = up.addresses[:3]
        spec = {
            first: {"*": "answer 203.0.113.2", "missing": "nxdomain", "retry": "servfail",
                    "refuse": "refused", "slow": "silent"},
            second: {"*": "answer 203.0.113.3"},
            silent: {"*": "silent"},
        }
        with fake_server(up.path, spec, tmp_path / "fake.log") as fake:
            # Sanity: the fake answers when asked straight from the host namespace.
            direct = in_ns(host_ns.path, "dig", "+short", "+time=2", "+tries=1",
                           f"@{first}", "probe.example.test").stdout.split()
            assert direct == ["203.0.113.2"]

            restart(daemon, "--dns", first, "--dns", second, "--dns", silent)
            ok(daemon, "network", "create", "--subnet", "10.70.0.0/24", "web")
            ok(daemon, "sandbox", "create", "--network", "web", "a")
            with asker(netns(daemon, "a")) as q:
                # The first upstream answers: nobody else is asked.
                assert q.addresses("www.example.test") == ["203.0.113.2"]
                assert fake.asked("www.example.test") == [first]
                # Its NXDOMAIN is an answer too, passed on as it is.
                r = q.ask("missing.example.test")
                assert (r["rcode"], r["answers"]) == ("NXDOMAIN", [])
                assert fake.asked("missing.example.test") == [first]
                # SERVFAIL and REFUSED: the next upstream is asked at once.
                for name in ("retry.example.test", "refuse.example.test"):
                    r = q.ask(name)
                    assert r["answers"] == [[name + ".", "A", "203.0.113.3"]], r
                    assert r["elapsed"] < 1.0, r
                    assert fake.asked(name) == [first, second]
                # Silence: after one attempt's timeout the next one is asked.
                r = q.ask("slow.example.test", timeout=5)
                assert r["answers"] == [["slow.example.test.", "A", "203.0.113.3"]], r
                assert 1.0 < r["elapsed"] < 3.0, r
                assert fake.asked("slow.example.test") == [first, second]
                # Over TCP, the same rules.
                r = q.ask("tcp.example.test", tcp=True)
                assert r["answers"] == [["tcp.example.test.", "A", "203.0.113.2"]], r
                r = q.ask("retry-tcp.example.test", tcp=True)
                assert r["answers"][0][2] == "203.0.113.3", r
            # glibc in the sandbox: forwarded the same way.
            assert getent(daemon, "a", "glibc.example.test") == [
                ["203.0.113.2", "glibc.example.test"]]


def test_every_upstream_silent_gives_servfail_well_inside_five_seconds(
        daemon: Daemon, host_ns: HostNs, tmp_path: Path) -> None:
    with upstream_ns(host_ns) as up:
        silent = up.addresses[:3]
        with fake_server(up.path, {a: {"*": "silent"} for a in silent},
                         tmp_path / "fake.log") as fake:
            restart(daemon, *(x for a in silent for x in ("--dns", a)))
            ok(daemon, "network", "create", "--subnet", "10.71.0.0/24", "web")
            ok(daemon, "sandbox", "create", "--network", "web", "a")
            with asker(netns(daemon, "a")) as q:
                # A client's default timeout is 5 s: SERVFAIL must reach it before that.
                r = q.ask("nowhere.example.test", timeout=10)
                assert r.get("rcode") == "SERVFAIL", r
                assert r["elapsed"] < 4.5, r
                assert fake.asked("nowhere.example.test") == silent
                r = q.ask("nowhere-tcp.example.test", tcp=True, timeout=10)
                assert r.get("rcode") == "SERVFAIL", r
                assert r["elapsed"] < 4.5, r
                # Names of its own still answer at once meanwhile.
                assert q.addresses("a") == [ip_of(daemon, "a", "web")]


def test_no_upstream_at_all_is_an_immediate_servfail(daemon: Daemon) -> None:
    # The fixture's host resolv.conf has no nameserver.
    ok(daemon, "network", "create", "--subnet", "10.72.0.0/24", "web")
    ok(daemon, "sandbox", "create", "--network", "web", "a")
    with asker(netns(daemon, "a")) as q:
        r = q.ask("elsewhere.example.test")
        assert r.get("rcode") == "SERVFAIL", r
        assert r["elapsed"] < 0.5, r


def test_loopback_upstream_in_the_host_namespace_is_reached(
        daemon: Daemon, host_ns: HostNs, tmp_path: Path) -> None:
    # Like systemd-resolved's stub: 127.0.0.53 on the host's loopback.
    with fake_server(host_ns.path, {"127.0.0.53": {"*": "answer 203.0.113.53"}},
                     tmp_path / "fake.log") as fake:
        direct = in_ns(host_ns.path, "dig", "+short", "+time=2", "+tries=1", "@127.0.0.53",
                       "probe.example.test").stdout.split()
        assert direct == ["203.0.113.53"]
        resolv = tmp_path / "resolv-stub.conf"
        resolv.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.test\n")
        restart(daemon, "--resolv-conf", str(resolv))
        ok(daemon, "network", "create", "--subnet", "10.73.0.0/24", "web")
        ok(daemon, "sandbox", "create", "--network", "web", "a")
        seen = ok(daemon, "sandbox", "exec", "a", "--", "cat", "/etc/resolv.conf")
        assert "127.0.0.53" not in seen and "nameserver 127.0.0.11" in seen
        assert getent(daemon, "a", "stub.example.test") == [
            ["203.0.113.53", "stub.example.test"]]
        assert fake.asked("stub.example.test") == ["127.0.0.53"]


# --------------------------------------------------------------------------- size
def test_a_large_answer_is_truncated_over_udp_and_complete_over_tcp(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.74.0.0/24", "web")
    c = d.client()
    try:
        want = sorted(
            c.create_sandbox(name=f"m{i}", network="web", aliases=["many"])
            ["endpoints"][0]["ipv4"].split("/")[0] for i in range(60))
        c.create_sandbox(name="client", network="web")
    finally:
        c.close()
    with asker(netns(d, "client")) as q:
        # No EDNS: 512 bytes at most, so the 60 records (~1 KB) do not fit.
        r = q.ask("many")
        assert r["rcode"] == "NOERROR" and r["tc"] and r["answers"] == [], r
        assert r["question"] == ["many."] and r["size"] <= 512
        # EDNS with a buffer too small for them: truncated too, with our OPT.
        r = q.ask("many", edns=600)
        assert r["tc"] and r["answers"] == [] and r["opt"] == [1232], r
        # EDNS with room: all of them over UDP.
        r = q.ask("many", edns=4096)
        assert not r["tc"] and sorted(a[2] for a in r["answers"]) == want, r
        r = q.ask("many", tcp=True)
        assert not r["tc"] and sorted(a[2] for a in r["answers"]) == want
    # dig over UDP without EDNS sees the TC flag; dig +tcp gets all 60.
    out = dig(d, "client", f"@{EMBEDDED}", "+noedns", "+ignore", "many")
    assert "flags: qr tc rd ra;" in out
    assert dig_short(d, "client", f"@{EMBEDDED}", "+tcp", "many") == want
    # And dig's default (UDP, then TCP on TC) ends with all of them as well.
    assert dig_short(d, "client", f"@{EMBEDDED}", "+noedns", "many") == want


# --------------------------------------------------------------------------- the sandbox's own
def test_a_sandbox_may_run_its_own_server_on_port_53(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.75.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "dnsbox")
    ok(d, "sandbox", "create", "--network", "web", "peer")
    ns = netns(d, "dnsbox")
    own = ip_of(d, "dnsbox", "web")
    with fake_server(ns, {"0.0.0.0": {"*": "answer 198.51.100.53"}}, tmp_path / "own.log"):
        with asker(ns, own) as at_eth0:
            # Its own server answers at its own address, from inside and from a peer.
            assert at_eth0.addresses("anything.test") == ["198.51.100.53"]
        with asker(netns(d, "peer"), own) as from_peer:
            assert from_peer.addresses("anything.test") == ["198.51.100.53"]
        with asker(ns) as embedded:
            # 127.0.0.11:53 is still cnm's, for names and for forwarding alike.
            assert embedded.addresses("peer") == [ip_of(d, "peer", "web")]
            assert embedded.ask("anything.test")["rcode"] == "SERVFAIL"
            assert embedded.addresses("peer", tcp=True) == [ip_of(d, "peer", "web")]


def test_the_default_bridge_has_no_embedded_dns(daemon: Daemon, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv-host.conf"
    resolv.write_text(f"nameserver {UPSTREAM_NET}.2\nnameserver 127.0.0.53\n")
    restart(daemon, "--resolv-conf", str(resolv))
    d = daemon
    ok(d, "sandbox", "create", "plain")  # on the default bridge
    ok(d, "sandbox", "create", "plain2")
    seen = ok(d, "sandbox", "exec", "plain", "--", "cat", "/etc/resolv.conf")
    # The host's resolvers, minus the loopback one the sandbox cannot reach.
    assert f"nameserver {UPSTREAM_NET}.2" in seen.splitlines()
    assert "127.0.0.11" not in seen and "127.0.0.53" not in seen
    # Nobody answers at 127.0.0.11 there, and sandbox names are not resolved.
    with asker(netns(d, "plain")) as q:
        r = q.ask("plain2", timeout=1)
        assert r.get("error") in ("TimeoutError", "ConnectionRefusedError"), r
    rules = in_ns(netns(d, "plain"), "nft", "list", "ruleset").stdout
    assert "cnm_dns" not in rules


# --------------------------------------------------------------------------- restart
def test_every_listener_answers_right_after_a_restart(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.76.0.0/24", "one")
    ok(d, "network", "create", "--ipv6", "--subnet", "10.77.0.0/24", "--subnet",
       "fd00:77::/64", "two")
    boxes = {"a": "one", "b": "one", "c": "two", "d": "two"}
    for name, net in boxes.items():
        ok(d, "sandbox", "create", "--network", net, "--alias", f"{name}-alias", name)
    ok(d, "network", "connect", "two", "a")
    ips = {n: ip_of(d, n, net) for n, net in boxes.items()}
    with contextlib.ExitStack() as stack:
        qs = {n: stack.enter_context(asker(netns(d, n))) for n in boxes}
        restart(d)
        # Right after the daemon is ready again: every sandbox's listener answers.
        for name, net in boxes.items():
            peer = next(p for p, pn in boxes.items() if pn == net and p != name)
            assert qs[name].addresses(peer, timeout=2) == [ips[peer]], name
            assert qs[name].addresses(f"{peer}-alias") == [ips[peer]], name
            assert qs[name].addresses(peer, tcp=True) == [ips[peer]], name
        assert qs["c"].addresses("d", "AAAA") == [ip_of(d, "d", "two", 6)]
        assert qs["a"].addresses("c.two") == [ips["c"]]
        # The records are whole: scoping still holds after the reload.
        assert qs["b"].ask("c")["rcode"] == "NXDOMAIN"
        # Exactly one redirect per sandbox, to the new listener.
        rules = in_ns(netns(d, "a"), "nft", "-j", "list", "table", "ip", "cnm_dns").stdout
        dnats = [r for r in json.loads(rules)["nftables"] if "rule" in r]
        assert len(dnats) == 2  # udp and tcp


def test_answers_stay_right_while_sandboxes_come_and_go(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.78.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "stay")
    ok(d, "sandbox", "create", "--network", "web", "asker")
    stay = ip_of(d, "stay", "web")
    c = d.client()
    try:
        with asker(netns(d, "asker")) as q:
            for i in range(12):
                c.create_sandbox(name=f"tmp{i}", network="web", aliases=["tmp"])
                assert len(q.addresses("tmp")) == min(i + 1, 3), i
                if i >= 2:
                    c.remove_sandbox(f"tmp{i - 2}")
                    assert len(q.addresses("tmp")) == 2, i
                assert q.addresses("stay") == [stay]
    finally:
        c.close()


def test_cnmd_refuses_an_upstream_that_is_not_an_address(daemon: Daemon) -> None:
    # A name there would be resolved by the host's resolver on every forward, and no
    # reply could ever be matched to it.
    assert daemon.stop() == 0
    with pytest.raises(RuntimeError, match="--dns dns.example: not an IP address"):
        daemon.start("--dns", "dns.example")
    assert daemon.stop() == 2
