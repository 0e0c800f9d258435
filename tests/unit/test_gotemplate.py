"""cnm.gotemplate: the Go text/template subset of --format, against what Go (and so docker
and podman) prints for the same template and data."""

from __future__ import annotations

from typing import Any

import pytest

from cnm.gotemplate import TemplateError, gostr, printf, render_all, tabwrite

# A network as the API gives it (the fields docker's network has too: Name, Id, Driver,
# Scope, Internal, Labels, Options).
NET: dict[str, Any] = {
    "id": "3f2a9c1b7d4e8f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718",
    "name": "web", "driver": "bridge", "scope": "local", "internal": False, "ipv6": True,
    "labels": {"team": "a", "env": "prod"}, "options": {"mtu": "1400"},
    "subnets": [{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1", "ip_range": None},
                {"subnet": "fd00:1::/64", "gateway": "fd00:1::1", "ip_range": None}],
    "endpoints": [], "created": "2026-12-02T10:00:00.000000Z",
}


def one(src: str, value: Any = NET) -> str:
    return render_all(src, [value])


@pytest.mark.parametrize("src, want", [
    # Fields: docker's CamelCase names find the API's snake_case keys.
    ("{{.Name}}", "web"),
    ("{{.ID}}", NET["id"]),
    ("{{.Id}}", NET["id"]),
    ("{{.Driver}}/{{.Scope}}", "bridge/local"),
    ("{{.name}}", "web"),
    # Go's %v: booleans, maps (sorted keys), lists, nil, a missing map key.
    ("{{.Internal}} {{.IPv6}}", "false true"),
    ("{{.Labels}}", "map[env:prod team:a]"),
    ("{{.Labels.team}}", "a"),
    ("{{.Labels.nope}}", "<no value>"),
    ("{{(index .Subnets 0).IPRange}}", "<nil>"),
    ("{{.Endpoints}}", "[]"),
    # Nested paths, index, range (with and without variables), a map ranged in key order.
    ("{{(index .Subnets 1).Gateway}}", "fd00:1::1"),
    ("{{index .Options \"mtu\"}}", "1400"),
    ("{{index .Labels \"nope\"}}", "<no value>"),
    ("{{range .Subnets}}{{.Subnet}} {{end}}", "10.1.0.0/24 fd00:1::/64 "),
    ("{{range $i, $s := .Subnets}}{{$i}}={{$s.Gateway}};{{end}}", "0=10.1.0.1;1=fd00:1::1;"),
    ("{{range $k, $v := .Labels}}{{$k}}:{{$v}},{{end}}", "env:prod,team:a,"),
    ("{{range .Endpoints}}x{{else}}none{{end}}", "none"),
    ("{{range .Subnets}}{{$.Name}}{{end}}", "webweb"),
    # json: compact, as Go's json.Marshal.
    ("{{json .Labels}}", '{"team":"a","env":"prod"}'),
    ("{{json .Subnets}}",
     '[{"subnet":"10.1.0.0/24","gateway":"10.1.0.1","ip_range":null},'
     '{"subnet":"fd00:1::/64","gateway":"fd00:1::1","ip_range":null}]'),
    ("{{json .Name}}", '"web"'),
    # join, printf, pipelines, conditionals, docker's string functions.
    ("{{join (split \"a,b,c\" \",\") \"-\"}}", "a-b-c"),
    ('{{printf "%s is %d%%" .Name 5}}', "web is 5%"),
    ('{{printf "%-5s|%5s|%q|%v|%t" .Name .Driver .Scope .Labels .IPv6}}',
     'web  |bridge|"local"|map[env:prod team:a]|true'),
    ('{{printf "%03d %x" 7 255}}', "007 ff"),
    ("{{.Name | upper}}", "WEB"),
    ("{{.Name | printf \"<%s>\"}}", "<web>"),
    ("{{if .Internal}}internal{{else if .IPv6}}dual{{else}}v4{{end}}", "dual"),
    ("{{if eq .Driver \"macvlan\" \"bridge\"}}yes{{end}}", "yes"),
    ("{{if and .IPv6 (not .Internal)}}ok{{end}}", "ok"),
    ("{{with .Labels.team}}team {{.}}{{end}}", "team a"),
    ("{{with .Labels.nope}}x{{else}}no team{{end}}", "no team"),
    ("{{len .Subnets}} {{len .Name}}", "2 3"),
    ("{{lower \"ABC\"}} {{title \"web app\"}} {{truncate .ID 12}}",
     "abc Web App " + NET["id"][:12]),
    # Trim markers and comments.
    ("a  {{- .Name -}}  b", "awebb"),
    ("{{/* a comment */}}{{.Name}}", "web"),
    ("x\\ty", "x\ty"),
])
def test_template_prints_what_go_prints(src: str, want: str) -> None:
    assert one(src) == want


@pytest.mark.parametrize("src, needle", [
    ("{{.Nmae}}", "can't evaluate field Nmae"),
    ("{{.Name", "unclosed action"),
    ("{{nosuch .Name}}", 'function "nosuch" not defined'),
    ("{{range .Subnets}}", "has no {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{if .Name}}a{{else}}b", "has no {{end}}"),
    ("{{index .Subnets 5}}", "index out of range: 5"),
    ("{{join .Name \",\"}}", "join wants a list"),
    ("{{.Name.First}}", "can't evaluate field First in a string"),
    ("{{json}}", "wrong number of arguments for json"),
    ("{{.Name .Driver}}", "only functions take arguments"),
    ("{{template \"x\"}}", "not supported"),
    ("{{\"unterminated}}", "unclosed action"),
])
def test_bad_templates_are_refused_by_what_is_wrong(src: str, needle: str) -> None:
    with pytest.raises(TemplateError) as e:
        one(src)
    assert needle in e.value.message
    assert e.value.code == "invalid-argument"  # exit 2, like any bad input


def test_an_unknown_field_names_the_fields_there_are() -> None:
    with pytest.raises(TemplateError) as e:
        one("{{.Nmae}}")
    assert e.value.hint is not None and "name" in e.value.hint.split(", ")


def test_table_has_docker_headers_and_tabwriter_columns() -> None:
    """`docker network ls --format 'table {{.ID}}\\t{{.Name}}\\t{{.Driver}}\\t{{.Scope}}'`
    prints exactly this layout (tabwriter: minimum width 10, padding 3)."""
    nets = [{**NET, "id": NET["id"][:12]},
            {**NET, "id": "0123456789ab", "name": "bridge", "driver": "bridge"},
            {**NET, "id": "ba9876543210", "name": "none", "driver": "null"}]
    out = render_all("table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", nets,
                     {"id": "NETWORK ID", "name": "NAME", "driver": "DRIVER",
                      "scope": "SCOPE"})
    assert out.split("\n") == [
        "NETWORK ID     NAME      DRIVER    SCOPE",
        "3f2a9c1b7d4e   web       bridge    local",
        "0123456789ab   bridge    bridge    local",
        "ba9876543210   none      null      local",
    ]


def test_table_header_of_an_unnamed_field_is_its_name_in_capitals() -> None:
    out = render_all("table {{.IPv6}}\t{{.HostPort}}", [{"ipv6": True, "host_port": 80,
                                                        "id": "x"}])
    assert out.split("\n") == ["IPV6      HOST PORT", "true      80"]


def test_gostr_and_printf_edge_cases() -> None:
    assert gostr(None) == "<nil>"
    assert gostr([1, [True, "a"]]) == "[1 [true a]]"
    assert gostr({"b": 1, "a": {"c": None}}) == "map[a:map[c:<nil>] b:1]"
    assert gostr(2.0) == "2"
    assert printf("%d", "x") == "%!d(string=x)"
    assert printf("%s %s", "a") == "a %!s(MISSING)"
    assert printf("%s", "a", "b") == "a%!(EXTRA b)"


def test_tabwrite_leaves_the_last_cell_unpadded() -> None:
    assert tabwrite(["a\tbb", "ccc\td"]) == "a         bb\nccc       d"


def test_every_object_gets_its_own_line() -> None:
    assert render_all("{{.Name}}", [NET, {**NET, "name": "db"}]) == "web\ndb"
    assert render_all("{{.Name}}", []) == ""
