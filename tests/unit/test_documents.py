"""Parsing applied YAML: kinds, ordering, and errors that name the field."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.apply.documents import MachineDoc, TemplateDoc, WorkflowDoc, parse
from metalflow.errors import Invalid
from metalflow.inventory.schemas import normalize_mac

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
        ("a: [", "yaml", "line 1"),
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
