"""Apply parsed documents in one transaction: all of them, or (on any error) none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.apply.documents import (
    PREFIX_SPEC_KEYS,
    BmcMachineDoc,
    Document,
    MachineDoc,
    MetroDoc,
    OperatingSystemDoc,
    PlanDoc,
    PrefixDoc,
    SecretDoc,
    TemplateDoc,
    WorkflowDoc,
    check_bmc,
)
from metalflow.apply.schemas import ApplyResult
from metalflow.cloud import catalogue
from metalflow.errors import Conflict, Invalid, MetalflowError, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.schemas import BmcSpec, normalize_mac
from metalflow.inventory.tables import Interface, Machine
from metalflow.ipam import service as ipam
from metalflow.power import objects
from metalflow.power.rufio import ObjectRef, RufioMachine
from metalflow.templates.service import apply_template
from metalflow.tenancy.secrets import Keyring
from metalflow.workflows import engine as workflows
from metalflow.workflows.tables import Workflow

DOCUMENT_KEYS = {field: key for key, field in PREFIX_SPEC_KEYS.items()}
"""An IPAM error's field as a Prefix document writes it (`allowed_projects`: `allowedProjects`)."""

KINDS: dict[type[Any], str] = {
    SecretDoc: "Secret",
    BmcMachineDoc: "Machine.bmc.tinkerbell.org",
    MachineDoc: "Machine",
    TemplateDoc: "Template",
    WorkflowDoc: "Workflow",
    PrefixDoc: "Prefix",
    MetroDoc: "Metro",
    PlanDoc: "Plan",
    OperatingSystemDoc: "OperatingSystem",
}
"""How results and errors name each kind (a rufio Machine as kubectl names it)."""


def apply_documents(
    session: Session, docs: list[Document], keyring: Keyring, *, metadata_url: str
) -> list[ApplyResult]:
    """One result per document, then one per stored machine a rufio Machine or Secret changed
    (machines of this stream are not among them: their own document sets their BMC).
    `metadata_url` goes into the install templates generated for operating systems."""
    stream = _Stream(
        machines={doc.name for doc in docs if isinstance(doc, MachineDoc)},
        rufio={doc.machine.ref for doc in docs if isinstance(doc, BmcMachineDoc)},
        metadata_url=metadata_url,
    )
    results: list[ApplyResult] = []
    for doc in docs:
        try:
            action, changed = _apply_one(session, doc, keyring, stream)
        except MetalflowError as exc:
            prefix = f"documents[{doc.index}] ({KINDS[type(doc)]} {doc.name})"
            raise type(exc)(f"{prefix}: {exc.message}", field=exc.field) from exc
        results.append(ApplyResult(kind=KINDS[type(doc)], name=doc.name, action=action))
        results += [ApplyResult(kind="Machine", name=name, action="updated") for name in changed]
    return results


@dataclass(frozen=True)
class _Stream:
    """What this apply's own documents set, so a rufio Machine or Secret leaves it to them."""

    machines: set[str]
    rufio: set[ObjectRef]
    metadata_url: str


def _check_rufio(bmc: BmcSpec, machine: RufioMachine) -> None:
    check_bmc(bmc, machine.origin.get("", "spec.connection"), machine.origin)


def _apply_one(
    session: Session, doc: Document, keyring: Keyring, stream: _Stream
) -> tuple[str, list[str]]:
    where = f"documents[{doc.index}]"
    if isinstance(doc, SecretDoc):
        return objects.apply_secret(
            session,
            doc.ref,
            doc.login,
            keyring,
            where=where,
            skip_machines=stream.machines,
            skip_rufio=stream.rufio,
        )
    if isinstance(doc, BmcMachineDoc):
        return objects.apply_machine(
            session, doc.machine, keyring, _check_rufio, where=where, skip_machines=stream.machines
        )
    if isinstance(doc, MachineDoc):
        spec = doc.spec
        if doc.bmc_ref is not None:
            bmc = objects.bmc_for(session, doc.bmc_ref, keyring, where=where)
            spec = spec.model_copy(update={"bmc": bmc})
        action = inventory.apply_machine(
            session, spec, keyring, source=doc.source, hardware_spec=doc.hardware_spec
        )
        return action, []
    if isinstance(doc, TemplateDoc):
        return apply_template(session, doc.name, doc.data, where=doc.where), []
    if isinstance(doc, PrefixDoc):
        try:
            return _apply_prefix(session, doc), []
        except MetalflowError as exc:
            key = DOCUMENT_KEYS.get(exc.field or "", exc.field)
            path = f"{where}.spec.{key}" if key else f"{where}.spec"
            raise type(exc)(exc.message, field=path) from exc
    if isinstance(doc, MetroDoc | PlanDoc | OperatingSystemDoc):
        try:
            return _apply_catalogue(session, doc, stream.metadata_url), []
        except MetalflowError as exc:
            named = exc.field in (None, "code", "slug")
            path = f"{where}.metadata.name" if named else f"{where}.spec.{exc.field}"
            raise type(exc)(exc.message, field=path) from exc
    return _apply_workflow(session, doc), []


def _apply_catalogue(
    session: Session, doc: MetroDoc | PlanDoc | OperatingSystemDoc, metadata_url: str
) -> str:
    """created, updated or unchanged; a plan re-classifies the machines when it changes."""
    if isinstance(doc, MetroDoc):
        return catalogue.put_metro(session, doc.spec)[1]
    if isinstance(doc, PlanDoc):
        return catalogue.put_plan(session, doc.spec)[1]
    return catalogue.put_operating_system(session, doc.spec, metadata_url)[1]


def _apply_prefix(session: Session, doc: PrefixDoc) -> str:
    """created, unchanged or updated; the CIDR, project and `byo` say which space is whose, so
    a change to them is refused (errors name the spec field)."""
    spec = doc.spec
    existing = ipam.find_by_cidr(session, doc.name, outermost=True)
    if existing is None:
        ipam.create_prefix(
            session,
            ipam.PrefixSpec(
                cidr=doc.name,
                kind=spec.kind,
                metro=spec.metro,
                project_id=spec.project,
                tags=spec.tags,
                description=spec.description,
                provisioning=spec.provisioning,
                byo=spec.byo,
                allowed_projects=spec.allowed_projects,
            ),
        )
        return "created"
    if existing.status not in ipam.HOLDS_CHILDREN:
        raise Conflict(
            f"{doc.name} is allocated from another prefix (status {existing.status}), not a"
            " pool or reservation: release it before adding it as a prefix",
            field="cidr",
        )
    if existing.byo != spec.byo:
        raise Conflict(
            f"{doc.name} exists with byo {str(existing.byo).lower()}; whether a prefix is brought"
            " by its project does not change: delete it and apply it again",
            field="byo",
        )
    if existing.project_id != spec.project:
        raise Conflict(
            f"{doc.name} exists for project {existing.project_id!r}; a prefix's project does not"
            " change: delete it and apply it again",
            field="project",
        )
    changed = ipam.update_prefix(
        session,
        existing,
        kind=spec.kind,
        metro=spec.metro,
        tags=spec.tags,
        description=spec.description,
        provisioning=spec.provisioning,
        allowed_projects=spec.allowed_projects,
    )
    return "updated" if changed else "unchanged"


def _machine_for(session: Session, doc: WorkflowDoc) -> Machine:
    if doc.machine is not None:
        return inventory.get_machine(session, doc.machine)
    first = sorted(doc.hardware_map)[0]
    try:
        mac = normalize_mac(doc.hardware_map[first])
    except ValueError as exc:
        raise Invalid(str(exc), field=f"spec.hardwareMap.{first}") from None
    machine = session.scalar(select(Machine).join(Interface).where(Interface.mac == mac))
    if machine is None:
        raise NotFound(f"no machine has MAC {mac} (hardwareMap.{first})", field="spec.hardwareMap")
    return machine


def _apply_workflow(session: Session, doc: WorkflowDoc) -> str:
    machine = _machine_for(session, doc)
    existing = session.scalar(select(Workflow).where(Workflow.name == doc.name))
    wanted_map = doc.hardware_map or workflows.default_hardware_map(machine)
    if existing is not None:
        same = (
            existing.machine_id == machine.id
            and existing.template_name == doc.template
            and existing.hardware_map == wanted_map
            and existing.kind == doc.kind
            and existing.boot_options
            == ({"mode": doc.boot, "reboot": doc.reboot} if doc.boot else {})
        )
        if same:
            return "unchanged"
        raise Conflict(
            f"workflow {doc.name} exists with another machine, template or hardware map;"
            " workflows do not change once created: delete it or use a new name",
            field="metadata.name",
        )
    workflows.create_workflow(
        session,
        machine=machine,
        template_name=doc.template,
        hardware_map=wanted_map,
        name=doc.name,
        kind=doc.kind,
        boot=doc.boot,
        reboot=doc.reboot,
    )
    return "created"
