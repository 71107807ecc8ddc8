"""Apply parsed documents in one transaction: all of them, or (on any error) none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.apply.documents import Document, MachineDoc, TemplateDoc, WorkflowDoc
from metalflow.errors import Conflict, Invalid, MetalflowError, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.schemas import normalize_mac
from metalflow.inventory.tables import Interface, Machine
from metalflow.templates.service import apply_template
from metalflow.tenancy.secrets import Keyring
from metalflow.workflows import service as workflows
from metalflow.workflows.tables import Workflow


def apply_documents(
    session: Session, docs: list[Document], keyring: Keyring
) -> list[dict[str, Any]]:
    results = []
    for doc in docs:
        try:
            kind, action = _apply_one(session, doc, keyring)
        except MetalflowError as exc:
            prefix = f"documents[{doc.index}] ({type(doc).__name__.removesuffix('Doc')} {doc.name})"
            raise type(exc)(f"{prefix}: {exc.message}", field=exc.field) from exc
        results.append({"kind": kind, "name": doc.name, "action": action})
    return results


def _apply_one(session: Session, doc: Document, keyring: Keyring) -> tuple[str, str]:
    if isinstance(doc, MachineDoc):
        action = inventory.apply_machine(
            session, doc.spec, keyring, source=doc.source, hardware_spec=doc.hardware_spec
        )
        return "Machine", action
    if isinstance(doc, TemplateDoc):
        return "Template", apply_template(session, doc.name, doc.data, where=doc.where)
    return "Workflow", _apply_workflow(session, doc)


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
