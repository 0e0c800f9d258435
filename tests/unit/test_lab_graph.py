"""The lab graph's DOT source is stable (golden file), and the check table renders."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cnm.lab import checks, graph, schema
from cnm.lab import model as m

TOP = Path(__file__).parents[2]
GOLDEN = Path(__file__).parent / "golden" / "lab-macvlan.dot"


def test_the_dot_source_of_a_lab_is_stable() -> None:
    lab = schema.load(str(TOP / "netns-lab" / "labs" / "macvlan.yaml"))
    text = graph.dot(lab)
    if os.environ.get("CNM_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert graph.dot(schema.load(str(TOP / "netns-lab" / "labs" / "macvlan.yaml"))) == text


def test_every_shipped_lab_renders_with_graphviz(tmp_path: Path) -> None:
    assert shutil.which("dot"), "graphviz (scripts/packages.txt, step test) is not installed"
    for f in sorted((TOP / "netns-lab" / "labs").glob("*.yaml")):
        out = tmp_path / f"{f.stem}.svg"
        graph.render(schema.load(str(f)), str(out))
        assert out.read_text().lstrip().startswith(("<?xml", "<svg")), f.name
    r = subprocess.run(["dot", "-Tplain"], input=graph.dot(schema.load(
        str(TOP / "netns-lab" / "labs" / "macvlan.yaml"))), capture_output=True, text=True)
    assert "router" in r.stdout and "lan" in r.stdout


def test_an_unknown_output_format_is_refused(tmp_path: Path) -> None:
    lab = schema.parse("name: a\n")
    with pytest.raises(Exception, match=r"end it in \.svg, \.png or \.dot"):
        graph.render(lab, str(tmp_path / "lab.gif"))
    assert not (tmp_path / "lab.gif").exists()


def test_the_check_table() -> None:
    lab = schema.parse("name: a\nsandboxes: {s: , t: }\nchecks:\n"
                       "  - {ping: t, from: s}\n  - {tcp: t, port: 80, from: s, seen_as: s}\n")
    results = [checks.Result(lab.checks[0], "reach", "reach", True),
               checks.Result(lab.checks[1], "reach, seen as 10.0.0.2", "blocked", False)]
    assert checks.table(results).splitlines() == [
        "CHECK         EXPECTED                 GOT      RESULT",
        "ping s → t    reach                    reach    PASS",
        "tcp s → t:80  reach, seen as 10.0.0.2  blocked  FAIL",
        "1/2 checks passed",
    ]


def test_expectations_read_as_written_before_the_lab_is_up() -> None:
    lab = schema.parse("name: a\nsandboxes: {s: , t: }\nchecks:\n"
                       "  - {dns: t, from: s, expect: [t, 10.0.0.9]}\n"
                       "  - {dns: x, from: s, expect: nxdomain}\n"
                       "  - {mtu: t, from: s, expect: 1400}\n")
    assert [checks.expected_text(None, c) for c in lab.checks] == \
        ["10.0.0.9 t", "nxdomain", "1400"]
    assert isinstance(lab.checks[0], m.Check)
