"""Records: the per-network name tables the embedded DNS answers from."""

from __future__ import annotations

import ipaddress
import threading

from cnm.dns.records import Entry, Holder, Records, reverse_name


def entry(sandbox: str, ipv4: str | None, network: str = "n1", net_name: str = "web",
          names: tuple[str, ...] | None = None, ipv6: str | None = None) -> Entry:
    return Entry(network_id=network, network_name=net_name, sandbox_id=f"id-{sandbox}",
                 sandbox_name=sandbox, names=names if names is not None else (sandbox,),
                 ipv4=ipv4, ipv6=ipv6)


def test_reverse_names() -> None:
    assert reverse_name("10.0.0.2") == "2.0.0.10.in-addr.arpa"
    nibbles = "2" + ".0" * 29 + ".d.f"  # fd00:0000:...:0002, 32 nibbles reversed
    assert reverse_name("fd00::2") == nibbles + ".ip6.arpa"
    assert reverse_name("fd00::2") == ipaddress.ip_address("fd00::2").reverse_pointer
    assert reverse_name("FD00::A") == reverse_name("fd00::a")


def test_set_answers_every_name_and_name_dot_network() -> None:
    r = Records()
    r.set(entry("a", "10.0.0.2", names=("a", "alpha", "api"), ipv6="fd00::2"))
    holder = Holder("id-a", "10.0.0.2", "fd00::2")
    for name in ("a", "alpha", "api", "a.web"):
        assert r.lookup(["n1"], name) == [holder], name
    assert r.lookup(["n1"], "alpha.web") == []  # only the sandbox name gets .NETWORK
    assert r.lookup(["n1"], "b") == []
    assert r.entry("n1", "id-a") == entry("a", "10.0.0.2", names=("a", "alpha", "api"),
                                          ipv6="fd00::2")
    assert r.entry("n1", "id-b") is None


def test_name_dot_network_is_lower_case() -> None:
    r = Records()
    r.set(entry("Web1", "10.0.0.2", net_name="Front", names=("web1",)))
    assert r.lookup(["n1"], "web1.front") != []
    assert r.ptr(["n1"], reverse_name("10.0.0.2")) == "web1.front"


def test_a_name_held_twice_by_one_sandbox_is_one_holder() -> None:
    r = Records()
    # The hostname equals the name, and an alias equals NAME.NETWORK.
    r.set(entry("a", "10.0.0.2", names=("a", "a", "a.web")))
    assert len(r.lookup(["n1"], "a")) == 1
    assert len(r.lookup(["n1"], "a.web")) == 1


def test_several_holders_and_removing_one_keeps_the_others() -> None:
    r = Records()
    for i, sb in enumerate(("s1", "s2", "s3"), start=2):
        r.set(entry(sb, f"10.0.0.{i}", names=(sb, "svc")))
    assert [h.sandbox_id for h in r.lookup(["n1"], "svc")] == ["id-s1", "id-s2", "id-s3"]
    r.remove("n1", "id-s2")
    assert [h.ipv4 for h in r.lookup(["n1"], "svc")] == ["10.0.0.2", "10.0.0.4"]
    assert r.lookup(["n1"], "s2") == [] and r.lookup(["n1"], "s2.web") == []
    assert r.ptr(["n1"], reverse_name("10.0.0.3")) is None
    assert r.ptr(["n1"], reverse_name("10.0.0.4")) == "s3.web"
    r.remove("n1", "id-s1")
    r.remove("n1", "id-s3")
    assert r.lookup(["n1"], "svc") == []
    assert not r.held_anywhere("svc")


def test_replace_drops_the_old_names_and_addresses() -> None:
    r = Records()
    r.set(entry("a", "10.0.0.2", names=("a", "old")))
    r.set(entry("a", "10.0.0.9", names=("a", "new")))
    assert r.lookup(["n1"], "old") == []
    assert r.lookup(["n1"], "new") == [Holder("id-a", "10.0.0.9", None)]
    assert r.lookup(["n1"], "a") == [Holder("id-a", "10.0.0.9", None)]  # not twice
    assert r.ptr(["n1"], reverse_name("10.0.0.2")) is None
    assert r.ptr(["n1"], reverse_name("10.0.0.9")) == "a.web"


def test_names_are_per_network_and_the_view_decides() -> None:
    r = Records()
    r.set(entry("app", "10.0.0.2", network="front", net_name="front", names=("app",)))
    r.set(entry("app", "10.1.0.2", network="back", net_name="back", names=("app", "cache")))
    assert r.lookup(["front"], "cache") == []
    assert [h.ipv4 for h in r.lookup(["back"], "cache")] == ["10.1.0.2"]
    assert [h.ipv4 for h in r.lookup(["front", "back"], "app")] == ["10.0.0.2", "10.1.0.2"]
    assert r.lookup([], "app") == []
    assert r.lookup(["front"], "app.back") == []
    # Removing one network's entry leaves the other's.
    r.remove("back", "id-app")
    assert r.lookup(["back"], "app") == []
    assert r.lookup(["front"], "app") != []


def test_held_anywhere_sees_every_network() -> None:
    r = Records()
    assert not r.held_anywhere("db")
    r.set(entry("db", "10.1.0.2", network="back", names=("db", "pg")))
    for name in ("db", "pg", "db.web"):
        assert r.held_anywhere(name), name
    assert not r.held_anywhere("web")
    r.remove("back", "id-db")
    assert not r.held_anywhere("db")


def test_ptr_is_scoped_by_the_view_and_ipv6_too() -> None:
    r = Records()
    r.set(entry("a", "10.0.0.2", ipv6="fd00::2"))
    assert r.ptr(["n1"], reverse_name("10.0.0.2")) == "a.web"
    assert r.ptr(["n1"], reverse_name("fd00::2")) == "a.web"
    assert r.ptr(["n2"], reverse_name("10.0.0.2")) is None
    assert r.ptr(["n1"], reverse_name("10.0.0.3")) is None


def test_an_endpoint_without_addresses_holds_names_but_no_ptr() -> None:
    r = Records()
    r.set(entry("a", None))
    assert r.lookup(["n1"], "a") == [Holder("id-a", None, None)]
    r.remove("n1", "id-a")
    assert r.lookup(["n1"], "a") == []


def test_every_change_bumps_the_generation_and_only_a_change() -> None:
    r = Records()
    g = r.generation
    r.set(entry("a", "10.0.0.2"))
    assert r.generation == g + 1
    r.set(entry("a", "10.0.0.3"))  # a replacement is a change
    assert r.generation == g + 2
    r.remove("n1", "id-a")
    assert r.generation == g + 3
    r.remove("n1", "id-a")  # already gone: nothing changed, caches stay valid
    r.remove("n9", "id-zz")
    assert r.generation == g + 3
    r.lookup(["n1"], "a")
    r.held_anywhere("a")
    r.ptr(["n1"], "x")
    assert r.generation == g + 3


def test_readers_never_see_a_half_made_list() -> None:
    """The DNS thread reads without the lock while the controller changes names."""
    r = Records()
    r.set(entry("base", "10.0.0.1", names=("svc",)))
    stop = threading.Event()
    bad: list[object] = []

    def read() -> None:
        while not stop.is_set():
            hs = r.lookup(["n1"], "svc")
            if not hs or any(not isinstance(h, Holder) for h in hs):
                bad.append(hs)

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(3000):
            r.set(entry(f"s{i % 50}", f"10.0.1.{i % 50 + 2}", names=("svc",)))
            if i % 3 == 0:
                r.remove("n1", f"id-s{(i + 7) % 50}")
    finally:
        stop.set()
        t.join()
    assert bad == []
