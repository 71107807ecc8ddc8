"""Metro, Plan and OperatingSystem documents: parsed into the API's create bodies, named by
metadata.name, ordered so that what a document names is applied before it."""

from __future__ import annotations

import pytest

from metalflow.apply.documents import (
    MachineDoc,
    MetroDoc,
    OperatingSystemDoc,
    PlanDoc,
    TemplateDoc,
    parse,
)
from metalflow.errors import Invalid
from tests.manifests import machine_yaml, simple_template

OS = """\
apiVersion: metalflow/v1
kind: OperatingSystem
metadata: {name: debian_12}
spec: {name: Debian 12, distro: debian, version: "12", provisionable_on: [m3.large.x86],
       template: ubuntu}
"""
PLAN = """\
apiVersion: metalflow/v1
kind: Plan
metadata: {name: m3.large.x86}
spec: {name: m3.large.x86, class: m3.large, rule: {arch: x86_64, disks: [{type: nvme}]}}
"""
METRO = """\
apiVersion: metalflow/v1
kind: Metro
metadata: {name: da}
spec: {name: Dallas, country: us}
"""


def test_catalogue_documents_apply_before_what_names_them() -> None:
    docs = parse(
        "---\n".join([OS, simple_template(), machine_yaml("m1", "52:54:00:00:d0:01"), PLAN, METRO])
    )
    assert [type(doc) for doc in docs] == [
        MetroDoc,
        PlanDoc,
        MachineDoc,
        TemplateDoc,
        OperatingSystemDoc,
    ]
    metro, plan, _, _, os_doc = docs
    assert isinstance(metro, MetroDoc) and metro.spec.country == "US"
    assert isinstance(plan, PlanDoc)
    assert (plan.name, plan.spec.plan_class, plan.spec.rule.disks[0].count) == (
        "m3.large.x86",
        "m3.large",
        1,
    )
    assert isinstance(os_doc, OperatingSystemDoc) and os_doc.spec.template == "ubuntu"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (PLAN.replace("class: m3.large", "klass: x"), "documents[0].spec.klass", "unknown field"),
        (
            PLAN.replace("{name: m3.large.x86}", "{name: M3}"),
            "documents[0].metadata.name",
            "'M3' is not a slug: 1-64 lower-case letters",
        ),
        (METRO + "---\n" + METRO, "documents[1].metadata.name", "both Metro da"),
        (
            METRO.replace("{name: da}", "{name: da, labels: {a: b}}"),
            "documents[0].metadata.labels",
            "only a name",
        ),
        (
            METRO.replace("spec: {name: Dallas, country: us}", "spec: [da]"),
            "documents[0].spec",
            "mapping",
        ),
    ],
)
def test_bad_documents_name_their_field(text: str, field: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse(text)
    assert caught.value.field == field
    assert message in caught.value.message
