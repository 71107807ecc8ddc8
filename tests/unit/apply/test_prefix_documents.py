"""Parsing `kind: Prefix`: the fields a pool or reservation has, largest first, and errors that
name the document's field."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.apply.documents import MachineDoc, PrefixDoc, parse
from metalflow.errors import Invalid
from metalflow.ipam.tables import Kind


def prefix_doc(spec: str, metadata: str = "{name: ams-public}") -> str:
    return f"apiVersion: metalflow/v1\nkind: Prefix\nmetadata: {metadata}\nspec: {spec}\n"


def only_prefix(text: str) -> PrefixDoc:
    (doc,) = parse(text)
    assert isinstance(doc, PrefixDoc)
    return doc


def refused(text: str) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse(text)
    return info.value


def test_every_field_is_read_and_the_cidr_names_the_prefix() -> None:
    doc = only_prefix(
        prefix_doc(
            "{cidr: 198.51.100.0/24, kind: private, metro: am, tags: [edge, 'rack=r1'],"
            " description: Amsterdam edge, provisioning: true, byo: true, project: p1,"
            " allowedProjects: [p2, p3]}"
        )
    )
    assert doc.name == "198.51.100.0/24"
    assert doc.label == "ams-public"
    spec = doc.spec
    assert (spec.kind, spec.metro, spec.tags) == (Kind.PRIVATE, "am", ["edge", "rack=r1"])
    assert (spec.description, spec.provisioning, spec.byo) == ("Amsterdam edge", True, True)
    assert (spec.project, spec.allowed_projects) == ("p1", ["p2", "p3"])


def test_defaults_are_a_public_pool_of_the_provider_and_the_name_is_optional() -> None:
    doc = only_prefix(prefix_doc("{cidr: '2001:db8::/32'}", metadata="{}"))
    assert doc.name == "2001:db8::/32"
    assert doc.label is None
    spec = doc.spec
    assert (spec.kind, spec.metro, spec.project, spec.byo, spec.provisioning) == (
        Kind.PUBLIC,
        None,
        None,
        False,
        False,
    )
    assert (spec.tags, spec.allowed_projects, spec.description) == ([], [], "")


def test_an_ipv6_cidr_is_stored_in_canonical_form() -> None:
    assert only_prefix(prefix_doc("{cidr: '2001:DB8:0::/48'}")).name == "2001:db8::/48"


@pytest.mark.parametrize(
    ("spec", "metadata", "field", "words"),
    [
        ("{cidr: 198.51.100.7/24}", "{}", "documents[0].spec.cidr", "use 198.51.100.0/24"),
        ("{cidr: 198.51.100.0/33}", "{}", "documents[0].spec.cidr", "is no CIDR block"),
        ("{cidr: not-a-cidr}", "{}", "documents[0].spec.cidr", "is no CIDR block"),
        ("{kind: public}", "{}", "documents[0].spec.cidr", "spec.cidr is required"),
        ("{cidr: 24}", "{}", "documents[0].spec.cidr", "spec.cidr is required"),
        ("", "{}", "documents[0].spec", "must be a mapping with at least cidr"),
        ("{cidr: 10.0.0.0/8, kind: shared}", "{}", "documents[0].spec.kind", "'public'"),
        ("{cidr: 10.0.0.0/8, metro: 'Am St'}", "{}", "documents[0].spec.metro", "pattern"),
        ("{cidr: 10.0.0.0/8, tags: ['a b']}", "{}", "documents[0].spec.tags.0", "pattern"),
        ("{cidr: 10.0.0.0/8, byo: maybe}", "{}", "documents[0].spec.byo", "boolean"),
        (
            "{cidr: 10.0.0.0/8, allowedProjects: p1}",
            "{}",
            "documents[0].spec.allowedProjects",
            "list",
        ),
        (
            "{cidr: 10.0.0.0/8, allowed_projects: [p1]}",
            "{}",
            "documents[0].spec.allowed_projects",
            "unknown field; a Prefix's spec has cidr, kind",
        ),
        ("{cidr: 10.0.0.0/8}", "{name: a, labels: {}}", "documents[0].metadata.labels", "only"),
        ("{cidr: 10.0.0.0/8}", "{name: 'Not A Name'}", "documents[0].metadata.name", ""),
    ],
)
def test_a_bad_document_names_its_field(spec: str, metadata: str, field: str, words: str) -> None:
    error = refused(prefix_doc(spec, metadata))
    assert error.field == field
    assert words in error.message
    assert error.message.startswith(field) or field.endswith("metadata.name")


def test_one_cidr_twice_in_a_stream_is_refused_naming_the_second() -> None:
    text = prefix_doc("{cidr: 10.0.0.0/8}") + "---\n" + prefix_doc("{cidr: 10.0.0.0/8, metro: am}")
    error = refused(text)
    assert error.field == "documents[1].spec.cidr"
    assert "documents[0] and documents[1] are both Prefix 10.0.0.0/8" in error.message


def test_prefixes_come_before_the_machines_that_take_addresses_from_them() -> None:
    machine = "apiVersion: metalflow/v1\nkind: Machine\nmetadata: {name: m1}\nspec: {}\n"
    docs = parse(machine + "---\n" + prefix_doc("{cidr: 10.0.0.0/8}"))
    assert [type(doc) for doc in docs] == [PrefixDoc, MachineDoc]


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)),
        min_size=1,
        max_size=12,
        unique_by=lambda pair: str(ipaddress.ip_network(pair, strict=False)),
    )
)
def test_prefixes_are_applied_largest_first_whatever_the_file_order(
    blocks: list[tuple[int, int]],
) -> None:
    networks = [ipaddress.ip_network(block, strict=False) for block in blocks]
    text = "---\n".join(prefix_doc(f"{{cidr: {network}}}", "{}") for network in networks)
    docs = [doc for doc in parse(text) if isinstance(doc, PrefixDoc)]
    assert sorted(doc.name for doc in docs) == sorted(str(network) for network in networks)
    lengths = [doc.network.prefixlen for doc in docs]
    assert lengths == sorted(lengths), "a block that holds another comes first"
