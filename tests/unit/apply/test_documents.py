"""Parsing applied YAML: kinds, ordering, and errors that name the field."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow import yamlload
from metalflow.apply import documents
from metalflow.apply.documents import MachineDoc, TemplateDoc, WorkflowDoc, parse
from metalflow.errors import Invalid
from metalflow.inventory.schemas import (
    MAX_BMC_OPTIONS_JSON,
    MAX_LABELS_JSON,
    MAX_METADATA_JSON,
    normalize_mac,
)

HARDWARE = """\
apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {name: hw1, namespace: lab}
spec:
  disks: [{device: /dev/sda}]
  interfaces:
    - dhcp:
        mac: "AA-BB-CC-DD-EE-01"
        arch: x86_64
        uefi: true
        ip: {address: 192.0.2.5, netmask: 255.255.255.0, gateway: 192.0.2.1}
        name_servers: [192.0.2.53]
        vlan_id: "20"
      netboot: {allowPXE: true, allowWorkflow: true}
"""


def test_kinds_are_ordered_machines_templates_workflows() -> None:
    text = (
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec: {templateRef: t, hardwareRef: hw1}\n---\n"
        "version: '0.1'\nname: bare\ntasks: []\n---\n" + HARDWARE
    )
    docs = parse(text)
    assert [type(d) for d in docs] == [MachineDoc, TemplateDoc, WorkflowDoc]
    machine = docs[0]
    assert isinstance(machine, MachineDoc)
    assert machine.spec.project == "lab"
    iface = machine.spec.interfaces[0]
    assert (iface.mac, iface.ip, iface.vlan) == ("aa:bb:cc:dd:ee:01", "192.0.2.5", 20)
    assert iface.netboot.allow_pxe is True
    assert machine.hardware_spec is not None and machine.hardware_spec["disks"][0]["device"]
    workflow = docs[2]
    assert isinstance(workflow, WorkflowDoc)
    assert (workflow.template, workflow.machine) == ("t", "hw1")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("a: {b: c\n\nd: e]\n", "yaml", "line 3"),
        ("- 1\n- 2\n", "documents[0]", "must be a mapping"),
        ("apiVersion: v9\nkind: Machine\n", "documents[0].apiVersion", "not known"),
        (
            "apiVersion: metalflow/v1\nkind: Machine\nmetadata: {name: a}\nextra: 1\n",
            "documents[0].extra",
            "unknown field",
        ),
        (
            HARDWARE.replace("uefi: true", "uefi: true\n        colour: red"),
            "spec.interfaces[0].dhcp.colour",
            "unknown field 'colour'",
        ),
        (
            HARDWARE.replace('vlan_id: "20"', 'vlan_id: "9000"'),
            "documents[0].spec.interfaces.0.vlan",
            "less than or equal to 4094",
        ),
        (
            "apiVersion: metalflow/v1\nkind: Workflow\nmetadata: {name: w}\nspec: {template: t}\n",
            "documents[0].spec.machine",
            "needs machine or a hardwareMap",
        ),
        ("", "yaml", "no documents"),
        (
            HARDWARE.replace("ip: {address", "ip: 192.0.2.5\n        x: {address"),
            "spec.interfaces[0].dhcp.x",
            "unknown field 'x'",
        ),
        (
            HARDWARE.replace('vlan_id: "20"', "vlan_id: abc"),
            "spec.interfaces[0].dhcp.vlan_id",
            "must be a VLAN number",
        ),
        (
            HARDWARE.replace("  interfaces:\n", "  interfaces: 5\n  resources:\n"),
            "spec.interfaces",
            "must be a list",
        ),
    ],
)
def test_errors_name_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(Invalid) as info:
        parse(text)
    assert info.value.field == field
    assert words in info.value.message


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-", ""]), st.booleans())
def test_mac_normalisation(raw: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in raw)
    if upper:
        text = text.upper()
    assert normalize_mac(text) == ":".join(f"{b:02x}" for b in raw)


@given(st.text(max_size=40))
def test_parse_raises_only_invalid(text: str) -> None:
    with contextlib.suppress(Invalid):
        parse(text)


@pytest.mark.parametrize(
    ("driver", "words"),
    [
        ("ipmi", "'not a host!!' is neither an IP address nor a host name; write the BMC's"),
        ("redfish", "'not a host!!' is not a host name, IP address or URL"),
    ],
)
def test_a_bmc_address_that_is_no_host_fails_the_apply_naming_the_field(
    driver: str, words: str
) -> None:
    text = (
        "apiVersion: metalflow/v1\nkind: Machine\nmetadata: {name: m1}\nspec:\n"
        f"  bmc: {{driver: {driver}, address: 'not a host!!', username: admin, password: pw}}\n"
    )
    with pytest.raises(Invalid) as info:
        parse(text)
    assert info.value.field == "documents[0].spec.bmc.address"
    assert words in info.value.message


# --- limits: aliases, nesting, free-form fields, documents per stream, one name once -----------


def machine_doc(name: str = "web1", spec: str = "{}", labels: str = "{}") -> str:
    return (
        "apiVersion: metalflow/v1\nkind: Machine\n"
        f"metadata: {{name: {name}, labels: {labels}}}\nspec: {spec}\n"
    )


def refused(text: str) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse(text)
    return info.value


def test_an_alias_bomb_in_spec_metadata_is_refused_naming_the_line() -> None:
    levels = ['    l0: &l0 "lol"']
    levels += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = machine_doc(spec="\n  metadata:\n" + "\n".join(levels))
    assert len(text) < 700
    error = refused(text)
    assert error.field == "yaml"
    found = re.match(r"invalid YAML: line (\d+): alias \*l(\d) repeats more than", error.message)
    assert found is not None, error.message
    assert int(found[1]) == 7 + int(found[2])  # l0 is on line 6, the alias on its user's line
    assert f"at least {yamlload.MIN_ALIAS_BUDGET:,}" in error.message


def test_deep_nesting_is_refused_naming_the_line_and_the_limit() -> None:
    error = refused(machine_doc(spec="{metadata: {x: " + "[" * 3000 + "]" * 3000 + "}}"))
    assert error.field == "yaml"
    assert error.message == (
        "invalid YAML: line 4: nesting deeper than 100 levels; flatten the document"
    )


@pytest.mark.parametrize(
    ("text", "field", "limit"),
    [
        (
            machine_doc(spec=f"{{metadata: {{blob: {'x' * MAX_METADATA_JSON}}}}}"),
            "documents[0].spec.metadata",
            MAX_METADATA_JSON,
        ),
        (
            machine_doc(labels=f"{{big: {'x' * MAX_LABELS_JSON}}}"),
            "documents[0].metadata.labels",
            MAX_LABELS_JSON,
        ),
        (
            machine_doc(spec=f"{{bmc: {{driver: manual, options: {{o: {'x' * 20_000}}}}}}}"),
            "documents[0].spec.bmc.options",
            MAX_BMC_OPTIONS_JSON,
        ),
        (
            HARDWARE + f"  vendorData: {'v' * MAX_METADATA_JSON}\n",
            "documents[0].spec.vendorData",
            MAX_METADATA_JSON,
        ),
        (
            HARDWARE + f"  resources: {{cpu: [{', '.join(['x' * 100] * 3000)}]}}\n",
            "documents[0].spec.resources",
            MAX_METADATA_JSON,
        ),
    ],
)
def test_free_form_fields_are_capped_by_their_json_size(text: str, field: str, limit: int) -> None:
    error = refused(text)
    assert error.field == field
    assert "bytes as JSON; the limit is" in error.message
    assert f"the limit is {limit:,}" in error.message


def test_free_form_fields_at_the_limit_are_accepted() -> None:
    blob = "x" * (MAX_METADATA_JSON - len('{"blob":""}'))
    [doc] = parse(machine_doc(spec=f"{{metadata: {{blob: {blob}}}}}"))
    assert isinstance(doc, MachineDoc) and doc.spec.metadata == {"blob": blob}


def test_metadata_is_kept_as_json_a_timestamp_as_its_text() -> None:
    [doc] = parse(machine_doc(spec="{metadata: {when: 2024-01-01, n: 3}}"))
    assert isinstance(doc, MachineDoc) and doc.spec.metadata == {"when": "2024-01-01", "n": 3}


def test_metadata_that_json_cannot_hold_is_refused_naming_the_field() -> None:
    error = refused(machine_doc(spec="{metadata: {ratio: .nan}}"))
    assert error.field == "documents[0].spec.metadata"
    assert "cannot be stored as JSON" in error.message


def test_a_hardware_map_value_must_be_text() -> None:
    error = refused(
        "apiVersion: metalflow/v1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec: {template: t, hardwareMap: {device_1: [a, b]}}\n"
    )
    assert error.field == "documents[0].spec.hardwareMap"
    assert "device_1 must be a string" in error.message


def test_documents_per_stream_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_DOCUMENTS", 3)
    stream = "---\n".join(machine_doc(f"m{i}") for i in range(4))
    error = refused(stream)
    assert error.field == "yaml"
    assert "more than 3 documents, the limit per apply" in error.message
    assert len(parse("---\n".join(machine_doc(f"m{i}") for i in range(3)))) == 3


def test_documents_limit_is_above_a_large_sites_inventory() -> None:
    assert documents.MAX_DOCUMENTS >= 20_000


BARE_TEMPLATE = "version: '0.1'\nname: {name}\ntasks: []\n"
TEMPLATE = (
    "apiVersion: metalflow/v1\nkind: Template\nmetadata: {{name: {name}}}\nspec: {{data: x}}\n"
)
WORKFLOW = (
    "apiVersion: {api}\nkind: Workflow\nmetadata: {{name: {name}}}\n"
    "spec: {{templateRef: t, hardwareRef: m, template: t, machine: m}}\n"
)


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (machine_doc("web1"), machine_doc("web1"), "Machine web1"),
        (machine_doc("hw1"), HARDWARE, "Machine hw1"),
        (BARE_TEMPLATE.format(name="t1"), TEMPLATE.format(name="t1"), "Template t1"),
        (
            TEMPLATE.format(name="t1"),
            BARE_TEMPLATE.format(name="t1"),
            "Template t1",
        ),
    ],
)
def test_an_object_named_twice_in_one_stream_is_refused_naming_both(
    first: str, second: str, what: str
) -> None:
    error = refused(first + "---\n" + machine_doc("other") + "---\n" + second)
    assert error.field == "documents[2].metadata.name"
    assert error.message == (
        f"documents[0] and documents[2] are both {what}; one stream may name each object once"
    )


def test_a_workflow_named_twice_is_refused() -> None:
    tinkerbell = WORKFLOW.format(api="tinkerbell.org/v1alpha1", name="w1").replace(
        ", template: t, machine: m", ""
    )
    own = WORKFLOW.format(api="metalflow/v1", name="w1").replace(
        "templateRef: t, hardwareRef: m, ", ""
    )
    error = refused(tinkerbell + "---\n" + own)
    assert "documents[0] and documents[1] are both Workflow w1" in error.message


def test_one_name_in_different_kinds_is_fine() -> None:
    stream = machine_doc("web1") + "---\n" + BARE_TEMPLATE.format(name="web1")
    assert {type(doc) for doc in parse(stream)} == {MachineDoc, TemplateDoc}
