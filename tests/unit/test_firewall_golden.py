"""The whole `inet cnm` table and the `bridge cnm` table of port guards, rendered from
fixed plans, against golden files.

Each plan's rendering must equal tests/unit/golden/NAME.nft byte for byte. After an
intended change to the rendering, regenerate them and review the diff:

    CNM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_firewall_golden.py

Every golden file is also fed to nft's own parser (``nft -c``: check only, nothing is
applied), so a file that reads well but that nft would refuse cannot pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cnm import antispoof, firewall
from cnm.antispoof import PortGuard
from cnm.firewall import NetworkRules, PortRule
from cnm.portspec import PortMapping

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CNM_UPDATE_GOLDEN") == "1"

DEFAULT = NetworkRules("cnm0", ("172.17.0.0/16",))
INTERNAL = NetworkRules("br-internal", ("10.1.0.0/24",), internal=True)
NO_ICC = NetworkRules("br-noicc", ("10.2.0.0/24",), icc=False)
NO_MASQ = NetworkRules("br-nomasq", ("10.3.0.0/24",), masquerade=False)
DUAL = NetworkRules("br-dual", ("10.4.0.0/24", "fd00:4::/64"))


def _m(proto: str, host_ip: str, hport: int, hend: int, cport: int, cend: int) -> PortMapping:
    return PortMapping(proto, host_ip, hport, hend, cport, cend)


PORTS = [
    # 8080:80 on the default bridge (IPv4-only endpoint: no IPv6 element)
    PortRule(_m("tcp", "", 8080, 8080, 80, 80), "172.17.0.2", None),
    # 127.0.0.1:8081:81
    PortRule(_m("tcp", "127.0.0.1", 8081, 8081, 81, 81), "172.17.0.2", None),
    # 9000-9005:9000-9005/udp: one interval element
    PortRule(_m("udp", "", 9000, 9005, 9000, 9005), "172.17.0.3", None),
    # 7000-7002:8000-8002: one hash element per port
    PortRule(_m("tcp", "", 7000, 7002, 8000, 8002), "172.17.0.3", None),
    # 192.0.2.10:6000-6001:6000-6001/sctp on a specific address
    PortRule(_m("sctp", "192.0.2.10", 6000, 6001, 6000, 6001), "172.17.0.4", None),
    # 53:53/udp on a dual-stack endpoint: an IPv4 and an IPv6 element
    PortRule(_m("udp", "", 53, 53, 53, 53), "10.4.0.2", "fd00:4::2"),
    # [::1]:8443:443 and [2001:db8::1]:7443:443: IPv6 only
    PortRule(_m("tcp", "::1", 8443, 8443, 443, 443), "10.4.0.2", "fd00:4::2"),
    PortRule(_m("tcp", "2001:db8::1", 7443, 7443, 443, 443), "10.4.0.2", "fd00:4::2"),
    # [::]-less identity range on the dual-stack endpoint: v4 and v6 interval elements
    PortRule(_m("tcp", "", 10000, 10010, 10000, 10010), "10.4.0.3", "fd00:4::3"),
]

PLANS: dict[str, tuple[list[NetworkRules], list[PortRule]]] = {
    "empty": ([], []),
    "default_bridge": ([DEFAULT], []),
    "network_options": ([DEFAULT, INTERNAL, NO_ICC, NO_MASQ, DUAL], []),
    "published_ports": ([DEFAULT, DUAL], PORTS),
}


# The anti-spoofing table (cnm.antispoof): dual-stack, IPv4-only and IPv6-only endpoints.
GUARD_PLANS: dict[str, list[PortGuard]] = {
    "port_guards": [
        PortGuard("cnmv0123456789a", "02:42:0a:04:00:02", "10.4.0.2", "fd00:4::2"),
        PortGuard("cnmv0123456789b", "02:42:AC:11:00:02", "172.17.0.2", None),
        PortGuard("cnmv0123456789c", "02:42:fd:00:00:05", None, "fd00:5::5"),
    ],
}
NAMES = sorted([*PLANS, *GUARD_PLANS])


def _render(name: str) -> str:
    if name in GUARD_PLANS:
        return antispoof.table(GUARD_PLANS[name])
    networks, ports = PLANS[name]
    return firewall.table(networks, ports)


def _nft_check_argv() -> list[str]:
    """How to run nft's parser here, or skip saying what is missing (never as root)."""
    nft = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if os.geteuid() == 0:
        # CI runs as root: this check must run there, so a missing nft is a failure.
        assert nft is not None, "nft is not installed (apt-get install nftables)"
        return [nft, "-c", "-f"]
    if nft is None:
        pytest.skip("nft is not installed and not root")
    # nft needs CAP_NET_ADMIN even to check; a user namespace of our own gives it.
    argv = ["unshare", "-rn", nft, "-c", "-f"]
    probe = subprocess.run([*argv, "/dev/null"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"not root, and nft -c cannot run in a user namespace: "
                    f"{probe.stderr.strip()}")
    return argv


@pytest.mark.parametrize("name", NAMES)
def test_table_matches_golden_file(name: str) -> None:
    text = _render(name)
    path = GOLDEN / f"{name}.nft"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with CNM_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (
        f"rendering differs from {path.name}; if intended, regenerate with CNM_UPDATE_GOLDEN=1 "
        "and review the diff")


def test_every_golden_file_has_a_plan() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.nft")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_golden_file_is_valid_nft(name: str) -> None:
    argv = _nft_check_argv()
    path = GOLDEN / f"{name}.nft"
    done = subprocess.run([*argv, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, f"nft refused {path.name}:\n{done.stderr}"
