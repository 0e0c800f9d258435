"""The lab file's schema: every refusal names FILE:LINE:COLUMN and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnm.lab import schema
from cnm.lab.schema import LabFileError

FORMAT = Path(__file__).parents[2] / "netns-lab" / "labs" / "FORMAT.md"


def refused(text: str) -> str:
    with pytest.raises(LabFileError) as e:
        schema.parse(text, "t.yaml")
    return e.value.message


def test_the_format_pages_example_loads() -> None:
    example = FORMAT.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    lab = schema.parse(example, "FORMAT.md")
    assert lab.name == "example"
    assert [h.name for h in lab.hosts] == ["h1", "router"]
    assert lab.links[0].ends[1].ifname == "p0" and lab.links[1].ends[1].ifname == "p1"
    assert lab.network("web").options == {"icc": "true"}
    assert lab.sandbox("web2").attachments[0].aliases == ("www",)
    assert lab.features == ("netem",) and lab.needs_vm
    assert [c.kind for c in lab.checks] == ["ping", "dns", "dns", "tcp", "tcp", "ping"]
    assert lab.checks[1].expect == "addresses" and lab.checks[1].expect_addresses == ("web2",)


def test_defaults_one_host_and_the_default_bridge() -> None:
    lab = schema.parse("name: a\nsandboxes:\n  s1:\n")
    assert [h.name for h in lab.hosts] == ["host"]
    assert lab.sandbox("s1").host == "host"
    assert lab.sandbox("s1").attachments[0].network == "bridge"
    assert not lab.needs_vm


@pytest.mark.parametrize(("text", "where", "what"), [
    ("name: a\nbogus: 1\n", "2:1", "unknown key 'bogus' (allowed: name, title"),
    ("title: x\n", "1:1", "missing key 'name'"),
    ("name: A_B\n", "1:7", "lab name 'A_B' is invalid"),
    ("name: a\nname: b\n", "2:1", "duplicate key 'name'"),
    ("name: a\nsandboxes:\n  s1: {networks: [web]}\n", "3:19",
     "no network 'web' in this lab (networks: bridge, host, none)"),
    ("name: a\nsandboxes:\n  s1:\n  s1:\n", "4:3", "duplicate name 's1'"),
    ("name: a\nhosts: {h1: {}}\nsandboxes:\n  h1:\n", "4:3",
     "sandbox name 'h1' is already the name of a host"),
    ("name: a\nnetworks:\n  web: {subnet: 10.0.0.1/24}\n", "3:17",
     "'10.0.0.1/24' is not a subnet"),
    ("name: a\nnetworks:\n  web: {subnet: 10.0.0.0/24, gateway: 10.1.0.1}\n", "3:39",
     "10.1.0.1 is in none of its subnets"),
    ("name: a\nnetworks:\n  web: {subnet: 10.0.0.0/24}\nsandboxes:\n"
     "  s: {networks: [{network: web, ip: 10.9.0.2}]}\n", "5:37", "is not in network web's"),
    ("name: a\nnetworks:\n  bridge: {}\n", "3:3", "pre-defined"),
    ("name: a\nnetworks:\n  x: {subnet: 10.0.0.0/16}\n  y: {subnet: 10.0.1.0/24}\n", "3:3",
     "networks x and y have overlapping subnets"),
    ("name: a\nchecks:\n  - {ping: 10.0.0.1, from: nosuch}\n", "3:28",
     "'nosuch' is not a host or a sandbox"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {ping: nosuch, from: s}\n", "4:12",
     "'nosuch' is not an IP address, a sandbox, a host or gateway@NETWORK"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {ping: s@web, from: s}\n", "4:12",
     "sandbox 's' is not on network 'web'"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {ping: s, from: s, expect: maybe}\n", "4:32",
     "'maybe' (allowed: reach, blocked)"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {tcp: s, from: s}\n", "4:5",
     "a tcp check needs a port"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {ping: s, dns: x, from: s}\n", "4:5",
     "exactly one of"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {dns: x, from: s}\n", "4:5",
     "a dns check needs expect"),
    ("name: a\nsandboxes: {s: }\nchecks:\n  - {dns: x, from: host, expect: nxdomain}\n",
     "4:20", "a dns check runs in a sandbox"),
    ("name: a\nsandboxes: {s: {serve: [tcp/http]}}\n", "2:25", "is not PROTO/PORT"),
    ("name: a\nswitches: {lan: }\nlinks:\n  - ends: [host, lan]\n", "4:12",
     "needs an ifname"),
    ("name: a\nlinks:\n  - ends: ['host:eth1', 'nowhere:eth0']\n", "3:25",
     "'nowhere' is not a host or a switch"),
    ("name: a\nswitches: {lan: }\nlinks:\n  - ends: [{node: lan, address: 10.0.0.1/24},"
     " 'host:e']\n", "4:24", "a switch port has no address"),
    ("name: a\nlinks:\n  - ends: ['host:e', lan]\n    impair: {delay: 10}\n", "3:22",
     "'lan' is not a host or a switch"),
    ("name: a\nswitches: {lan: }\nlinks:\n  - ends: ['host:e', lan]\n"
     "    impair: {delay: fast}\n", "5:21", "'fast' is not a duration"),
    ("name: a\nswitches: {lan: }\nlinks:\n  - ends: ['host:e', lan]\n"
     "    impair: {jitter: 1ms}\n", "5:13", "jitter needs a delay"),
    ("name: a\nrequires: [quantum]\n", "2:12", "unknown 'quantum' (allowed: ipvlan"),
    ("name: a\nhosts: {h1: , h2: }\nsandboxes: {s: }\n", "3:15", "which host?"),
    ("name: a\nhosts: {r: {cnmd: false}, h: }\nnetworks: {n: {hosts: [r]}}\n", "3:24",
     "host 'r' runs no cnmd"),
    ("name: a\ncluster: {store: consul, members: [host]}\n", "2:18", "'consul' is not"),
    ("name: a\ncluster: {store: etcd, members: [host]}\n", "2:10",
     "host 'host' has no link address"),
    ("name: a\nhosts: {h1: , h2: }\nlinks: [{ends: ['h1:e0', 'h2:e0']}]\n"
     "cluster: {store: etcd, members: [h1, h1]}\n", "4:33", "a host is listed twice"),
    ("name: a\nhosts: {h1: , h2: }\nlinks: [{ends: [{node: h1, ifname: e0, address: "
     "10.9.0.1/24}, {node: h2, ifname: e0, address: 10.9.0.2/24}]}]\n"
     "cluster: {store: etcd, members: [h1], tls: maybe}\n", "4:44",
     "cluster.tls must be a bool, not 'maybe'"),
    ("name: a\nhosts: {h: {docker: true, cnmd: false}, g: }\n", "2:21",
     "the host needs cnmd"),
    ("name: a\nhosts: {host: {docker: true}}\nnetworks: {web: }\nsandboxes:\n"
     "  c: {docker: nginx, networks: [web]}\n", "5:15",
     "image 'nginx' is not one the lab can make (there is no registry; allowed: busybox)"),
    ("name: a\nnetworks: {web: }\nsandboxes:\n  c: {docker: busybox, networks: [web]}\n",
     "4:15", "host 'host' runs no dockerd (give it docker: true)"),
    ("name: a\nhosts: {host: {docker: true}}\nsandboxes:\n  c: {docker: busybox}\n", "4:6",
     "a Docker container goes on the lab's cnm networks only, not 'bridge'"),
    ("name: a\nhosts: {host: {docker: true}}\nnetworks: {web: }\nsandboxes:\n"
     "  c: {docker: busybox, networks: [{network: web, ifname: e1}]}\n", "5:6",
     "ifname on network 'web' is not possible for a Docker container"),
    ("name: a\nsandboxes: {s: {networks: [host, bridge]}}\n", "2:28",
     "a sandbox on 'host' can be on no other network"),
    ("name: a\nchecks:\n  - {ping: host, from: host}\n", "3:12",
     "host 'host' has no address"),
    ("name: a\nsandboxes:\n  s: [1, 2\n", "4:1", "not valid YAML"),
])
def test_refusals_name_line_column_and_what(text: str, where: str, what: str) -> None:
    msg = refused(text)
    assert msg.startswith(f"t.yaml:{where}: "), msg
    assert what in msg, msg


def test_an_empty_file_is_refused() -> None:
    assert "empty" in refused("")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match=re.escape(str(tmp_path / "no.yaml"))):
        schema.load(str(tmp_path / "no.yaml"))


def test_impairments_and_features_are_typed() -> None:
    lab = schema.parse("name: a\nswitches: {lan: }\nnetworks: {v: {driver: ipvlan}}\n"
                       "links:\n  - ends: ['host:e', {node: lan, hairpin: true,"
                       " impair: {loss: 1%}}]\n"
                       "    impair: {delay: 1.5s, jitter: 200us, rate: 10mbit}\n")
    link = lab.links[0]
    assert link.impair is not None
    assert (link.impair.delay_ms, link.impair.jitter_ms, link.impair.rate) == \
        (1500.0, 0.2, "10mbit")
    assert link.ends[1].impair is not None and link.ends[1].impair.loss_pct == 1.0
    assert link.ends[1].hairpin
    assert lab.features == ("ipvlan", "netem")


def test_a_cluster_with_tls() -> None:
    text = ("name: a\nhosts: {h1: , h2: }\nlinks: [{ends: [{node: h1, ifname: e0, "
            "address: 10.9.0.1/24}, {node: h2, ifname: e0, address: 10.9.0.2/24}]}]\n"
            "cluster: {store: etcd, members: [h1]%s}\n")
    lab = schema.parse(text % ", tls: true", "t.yaml")
    assert lab.cluster is not None and lab.cluster.tls
    lab = schema.parse(text % "", "t.yaml")
    assert lab.cluster is not None and not lab.cluster.tls


def test_the_shipped_peer_labs_read_as_their_parts() -> None:
    labs = FORMAT.parent
    ov = schema.load(str(labs / "overlay.yaml"))
    assert ov.cluster is not None and ov.cluster.members == ("h1", "h2", "h3")
    assert [ov.address_of(h) for h in ov.cluster.members] == [
        "192.168.90.1", "192.168.90.2", "192.168.90.3"]
    assert ov.network("ov").hosts == ("h1", "h2", "h3")
    dk = schema.load(str(labs / "docker.yaml"))
    assert dk.host("host").docker and dk.sandbox("ctr").docker == "busybox"
    assert dk.sandbox("sbx").docker is None
    # web is made through dockerd: its containers are on it.
    assert dk.docker_networks("host") == ("web",)
    assert not dk.needs_vm
