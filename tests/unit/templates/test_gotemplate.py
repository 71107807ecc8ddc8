"""Go text/template semantics, checked against what Go itself prints."""

from __future__ import annotations

from typing import Any

import pytest

from metalflow.templates.gotemplate import FieldMap, GoTemplateError, render

DATA: dict[str, Any] = {
    "name": "sm01",
    "disks": ["/dev/sda", "/dev/sdb"],
    "labels": {"rack": "r1", "zone": "z"},
    "empty": "",
    "none": None,
    "count": 3,
    "ratio": 2.5,
    "on": True,
    "nested": {"a": {"b": "deep"}},
}


def run(text: str, data: Any = None, probe: bool = False) -> str:
    return render(text, DATA if data is None else data, limit=1 << 20, probe=probe)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a {{- .name -}} b", "asm01b"),
        ("a  \n {{- .name }}\n", "asm01\n"),
        ("{{ .name -}}\n\n  x", "sm01x"),
        ("{{-3}}", "-3"),
        ("{{/* comment */}}x", "x"),
        ("a {{- /* trimmed */ -}} b", "ab"),
        ("{{ . | len }}", "9"),
        ("{{ .nested.a.b }}", "deep"),
        ("{{ $.name }}", "sm01"),
        (
            "{{ .disks }} {{ .labels }} {{ .on }} {{ .count }} {{ .ratio }}",
            "[/dev/sda /dev/sdb] map[rack:r1 zone:z] true 3 2.5",
        ),
        ("{{ .none }}", "<no value>"),
        ("{{ 1e6 }} {{ 0.5 }} {{ 0x1F }} {{ 'a' }} {{ 0600 }}", "1e+06 0.5 31 97 384"),
        ('{{ "tab\\there" }} {{ `raw\\n` }}', "tab\there raw\\n"),
    ],
)
def test_printing_and_trimming(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ if .on }}yes{{ else }}no{{ end }}", "yes"),
        ("{{ if .empty }}a{{ else if .none }}b{{ else if .count }}c{{ else }}d{{ end }}", "c"),
        ("{{ if not .empty }}blank{{ end }}", "blank"),
        ("{{ if and .on .count }}both{{ end }}", "both"),
        ('{{ or .empty .none "fallback" }}', "fallback"),
        ("{{ and .empty .missing_is_never_evaluated }}", ""),
        ("{{ range $i, $d := .disks }}{{ $i }}:{{ $d }};{{ end }}", "0:/dev/sda;1:/dev/sdb;"),
        ("{{ range .disks }}[{{ . }}]{{ end }}", "[/dev/sda][/dev/sdb]"),
        ("{{ range $k, $v := .labels }}{{ $k }}={{ $v }} {{ end }}", "rack=r1 zone=z "),
        ("{{ range .none }}x{{ else }}none{{ end }}", "none"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        ("{{ with .nested.a }}{{ .b }}{{ end }}", "deep"),
        ("{{ with .empty }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ $x := .name }}{{ $x }}-{{ $x | upper }}", "sm01-SM01"),
        ("{{ range .disks }}{{ $.name }}{{ end }}", "sm01sm01"),
        (
            '{{ eq .count 3 }} {{ ne .name "x" }} {{ lt 1 2 }} {{ ge 2.5 .ratio }}',
            "true true true true",
        ),
        ('{{ eq .name "a" "sm01" }}', "true"),
    ],
)
def test_control_flow(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{{ printf "%s has %d disks (%v) %q" .name 2 .on "a\\"b" }}',
            'sm01 has 2 disks (true) "a\\"b"',
        ),
        ('{{ printf "%05.1f|%-5s|%5s|%x" 3.14159 "ab" "cd" 255 }}', "003.1|ab   |   cd|ff"),
        ('{{ printf "%d" "x" }} {{ printf "%s" }}', "%!d(string=x) %!s(MISSING)"),
        ('{{ print "a" 1 2 "b" }}', "a1 2b"),
        ('{{ default "x" .empty }} {{ default "x" .name }} {{ .empty | default "y" }}', "x sm01 y"),
        (
            '{{ index .disks 1 }} {{ index .labels "rack" }} {{ index .nested "a" "b" }}',
            "/dev/sdb r1 deep",
        ),
        ('{{ (index .disks 0) | printf "%s!" }}', "/dev/sda!"),
        ('{{ len (index .nested "a") }}', "1"),
        (
            '{{ quote .name }} {{ squote .name }} {{ upper "ab" }} {{ lower "AB" }}',
            "\"sm01\" 'sm01' AB ab",
        ),
        (
            '{{ trim "  x \\n" }} {{ trimPrefix "/dev/" "/dev/sda" }} '
            '{{ trimSuffix ".gz" "a.gz" }}',
            "x sda a",
        ),
        ('{{ replace "-" "_" "a-b-c" }} {{ join "," .disks }}', "a_b_c /dev/sda,/dev/sdb"),
        ('{{ (split ":" "a:b")._1 }} {{ splitList ":" "a:b" }}', "b [a b]"),
        ("{{ toYaml .labels }}", "rack: r1\nzone: z"),
        (
            '{{ toJson .labels }} {{ toJson "<&>" }}',
            '{"rack":"r1","zone":"z"} "\\u003c\\u0026\\u003e"',
        ),
        ('{{ b64enc "hello" }} {{ b64dec "aGVsbG8=" }}', "aGVsbG8= hello"),
        ('{{ indent 2 "a\\nb" }}|{{ nindent 2 "c" }}', "  a\n  b|\n  c"),
        (
            '{{ contains "sd" .name }} {{ hasPrefix "sm" .name }} {{ hasSuffix "01" .name }}',
            "false true true",
        ),
        ("{{ first .disks }} {{ last .disks }}", "/dev/sda /dev/sdb"),
        (
            '{{ formatPartition "/dev/nvme0n1" 1 }} {{ formatPartition "/dev/sda" 2 }}',
            "/dev/nvme0n1p1 /dev/sda2",
        ),
        ('{{ formatPartition "/dev/disk/by-id/x" 3 }}', "/dev/disk/by-id/x-part3"),
    ],
)
def test_functions(text: str, expected: str) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a\nb\n{{ .device_2 }}", 3, 'no entry for key "device_2"'),
        ("{{ .nested.a.c }}", 1, 'key "c"'),
        ("{{ .none.x }}", 1, "nil value"),
        ("{{ .name.x }}", 1, "can't evaluate field"),
        ("x\n\n{{ nosuch .name }}", 3, 'function "nosuch" not defined'),
        ("{{ if .on }}\n{{ end }}\n{{ end }}", 3, "unexpected {{end}}"),
        ("{{ if .on }}\nx", 1, "without {{end}}"),
        ("ok\n{{ .name", 2, "unclosed action"),
        ('{{ "abc }}', 1, "unterminated quoted string"),
        ("{{ $nope }}", 1, 'undefined variable "$nope"'),
        ("{{ index .disks 5 }}", 1, "index out of range"),
        ("{{ (.name }}", 1, "unclosed left paren"),
        ("{{ .name 1 }}", 1, "can't give argument to non-function"),
        ('{{ template "x" }}', 1, "not supported"),
        ("{{ else }}", 1, "unexpected {{else}}"),
        ("{{}}", 1, "missing value"),
    ],
)
def test_errors_name_the_problem_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(GoTemplateError) as err:
        run(text)
    assert err.value.line == line
    assert fragment in err.value.message


def test_field_map_folds_go_names() -> None:
    data = {"H": FieldMap({"name_servers": ["a"], "userData": "u", "DHCP": FieldMap({"mac": "m"})})}
    assert run("{{ .H.NameServers }} {{ .H.UserData }} {{ .H.Dhcp.MAC }}", data) == "[a] u m"


def test_probe_absorbs_missing_data() -> None:
    text = "{{ .device_1 }} {{ index .Hardware.Disks 0 }} {{ range .X }}no{{ end }}"
    assert run(text, {}, probe=True) == "probe-device-1 probe-hardware-disks-0 "


def test_output_limit() -> None:
    with pytest.raises(GoTemplateError, match="exceeds"):
        render(
            "{{ range .a }}{{ range $.a }}xxxxxxxxxx{{ end }}{{ end }}",
            {"a": list(range(100))},
            limit=1000,
        )


def test_netmask_to_prefix_length() -> None:
    assert run('{{ netmaskToPrefixLength "255.255.255.0" }}') == "24"
    with pytest.raises(GoTemplateError, match="not a netmask"):
        run('{{ netmaskToPrefixLength "255.0.255.0" }}')
