"""Encrypted overlays on a kernel without ESP algorithms (this machine's): the part that
needs none works (cnm's nft table and its block policy: nothing leaves in the clear), and
the join that needs an SA fails saying what the kernel lacks, leaving nothing behind. With
ESP, tests/netns/test_overlay_esp_vm.py runs instead (the VM tier)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from cnm.esp import AEAD
from cnm.testing.cluster import Host, Lab, wait_for
from cnm.testing.netns import run


def kernel_has_esp() -> bool:
    ns = f"cnmtest-{secrets.token_hex(4)}"
    run("ip", "netns", "add", ns)
    try:
        return run("ip", "-n", ns, "xfrm", "state", "add", "src", "10.0.0.1", "dst", "10.0.0.2",
                   "proto", "esp", "spi", "0x1000", "mode", "transport", "aead", AEAD,
                   "0x" + "11" * 20, "128", check=False).returncode == 0
    finally:
        run("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if kernel_has_esp():
        pytest.skip("this kernel has ESP: tests/netns/test_overlay_esp_vm.py covers it")
    made = Lab.make(2, members=1)
    try:
        yield made
    finally:
        made.close()


def esp_table(h: Host) -> str:
    return run("ip", "netns", "exec", h.ns.name, "nft", "list", "table", "inet", "cnm_esp",
               check=False).stdout


def policies(h: Host) -> str:
    return run("ip", "-n", h.ns.name, "xfrm", "policy").stdout


def test_a_join_needing_esp_fails_naming_it_and_leaves_nothing(lab: Lab) -> None:
    h1, h2 = lab.hosts
    assert h1.cli("network", "create", "-d", "overlay", "-o", "encrypted=true", "sec",
                  "-o", "vni=7001").returncode == 0
    wait_for("sec on h2", lambda: h2.cli("network", "inspect", "sec").returncode == 0)
    # No peer yet: no SA needed. Marks and the cleartext drop are there, and the block
    # policy under them.
    r = h1.cli("sandbox", "create", "--network", "sec", "a")
    assert r.returncode == 0, r.stderr
    table = esp_table(h1)
    # (nft lists the raw payload match in hex: 7001 is 0x1b59)
    assert "@th,96,24 0x1b59" in table and "meta ipsec missing" in table, table
    assert "action block" in policies(h1) and "0xe5c0000" in policies(h1)
    # h2 knows a (a peer on h1): its join needs SAs, which this kernel cannot make.
    wait_for("a announced to h2", lambda: bool(h2.client().network("sec").get("endpoints")))
    r = h2.cli("sandbox", "create", "--network", "sec", "b")
    assert r.returncode != 0
    assert "cannot do ESP" in r.stderr and AEAD in r.stderr, r.stderr
    assert h2.cli("sandbox", "inspect", "b").returncode != 0
    assert esp_table(h2) == "" and "0xe5c0000" not in policies(h2)
    assert "cnmx" not in run("ip", "-n", h2.ns.name, "link").stdout
    # h1's side goes with its last endpoint and the network.
    assert h1.cli("sandbox", "rm", "a").returncode == 0
    assert h1.cli("network", "rm", "sec").returncode == 0
    wait_for("h1's ESP state gone",
             lambda: esp_table(h1) == "" and "0xe5c0000" not in policies(h1))
