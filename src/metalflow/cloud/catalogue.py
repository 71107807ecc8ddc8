"""The provider's catalogue: metros, plans and operating systems; which plan each machine is in;
what a plan's check finds; capacity per metro and plan.

Classification: `machines.plan_id` always names the first plan (by slug) whose rule the
machine's discovered attributes meet, None when none does. A new plan, a deleted one and a
changed rule re-classify all machines in their transaction. A machine's attributes are written
below this layer (the agent's hello in workflows.protocol, discovery in inventory.service), so
those writes are followed by `classify_reported`, a before_commit hook of the Database that
server.py wires: it reacts to the `agent.hello` and `machine.discovered` events queued in the
transaction and re-classifies those machines before it commits, as recorder.py's join reacts to
the machines a transaction writes about. Rejected: a call from the agent router (the inventory
and workflows may not import the cloud, and a new writer of attributes would silently skip it)
and classifying on read (a device create must find a ready machine of a plan by index,
`ix_machines_plan_id_metro_state`).
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, undefer

from metalflow import events
from metalflow.cloud.catalogue_schemas import (
    Capacity,
    CapacityEntry,
    MachineMatch,
    MachineMiss,
    MetroCreate,
    MetroUpdate,
    OperatingSystemCreate,
    OperatingSystemUpdate,
    PlanCheck,
    PlanCreate,
    PlanUpdate,
)
from metalflow.cloud.install import generated_name, install_template
from metalflow.cloud.matching import Rule, evaluate, first_match
from metalflow.cloud.tables import Device, HardwareReservation, Metro, OperatingSystem, Plan
from metalflow.config import Settings
from metalflow.errors import Conflict, Invalid, NotFound, validation_message
from metalflow.inventory.tables import Machine
from metalflow.templates.service import apply_template
from metalflow.templates.tables import Template
from metalflow.urls import base_url

Outcome = Literal["created", "updated", "unchanged"]
REPORTING_EVENTS = frozenset({"agent.hello", "machine.discovered"})
"""The events of the transactions that write a machine's attributes."""
READY = "ready"
NAMED = 5
"""How many users a refused delete names."""


def _names(values: Iterable[str]) -> str:
    found = sorted(values)
    shown = ", ".join(found[:NAMED])
    return shown + (f" and {len(found) - NAMED} more" if len(found) > NAMED else "")


def _merge(model: type[Any], current: dict[str, Any], patch: BaseModel) -> Any:
    """A PATCH applied to the stored fields, validated whole as a create would be."""
    try:
        return model.model_validate({**current, **patch.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        error = exc.errors()[0]
        path = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        raise Invalid(f"{path}: {validation_message(error)}", field=path or None) from None


def _outcome(row: Any, fields: dict[str, Any], created: bool) -> Outcome:
    """Set `fields` on `row`; what that was."""
    if created:
        for key, value in fields.items():
            setattr(row, key, value)
        return "created"
    changed = {key: value for key, value in fields.items() if getattr(row, key) != value}
    for key, value in changed.items():
        setattr(row, key, value)
    return "updated" if changed else "unchanged"


# --- metros -------------------------------------------------------------------------------------


def get_metro(session: Session, code: str) -> Metro:
    row = session.scalar(select(Metro).where(Metro.code == code))
    if row is None:
        raise NotFound(f"metro {code!r} not found; see metalflow metro list", field="code")
    return row


def list_metros(session: Session) -> list[Metro]:
    return list(session.scalars(select(Metro).order_by(Metro.code)))


def machines_per_metro(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Machine.metro, func.count())
        .where(Machine.metro.is_not(None))
        .group_by(Machine.metro)
    )
    return {str(metro): count for metro, count in rows}


def put_metro(session: Session, spec: MetroCreate) -> tuple[Metro, Outcome]:
    row = session.scalar(select(Metro).where(Metro.code == spec.code))
    created = row is None
    if row is None:
        row = Metro(id=str(uuid.uuid4()), code=spec.code)
        session.add(row)
    fields = spec.model_dump(exclude={"code"})
    outcome = _outcome(row, fields, created)
    if outcome != "unchanged":
        session.flush()
        events.record(session, f"metro.{outcome}", metro=spec.code)
    return row, outcome


def create_metro(session: Session, spec: MetroCreate) -> Metro:
    if session.scalar(select(Metro.id).where(Metro.code == spec.code)) is not None:
        raise Conflict(
            f"metro {spec.code} exists; change it with PATCH /api/v1/metros/{spec.code}",
            field="code",
        )
    return put_metro(session, spec)[0]


def update_metro(session: Session, code: str, patch: MetroUpdate) -> Metro:
    row = get_metro(session, code)
    current = {
        "code": row.code,
        "name": row.name,
        "country": row.country,
        "bgp_peers": row.bgp_peers,
    }
    return put_metro(session, _merge(MetroCreate, current, patch))[0]


def delete_metro(session: Session, code: str) -> Metro:
    row = get_metro(session, code)
    standing = session.scalars(select(Machine.name).where(Machine.metro == code)).all()
    if standing:
        raise Conflict(
            f"metro {code} has machines {_names(standing)}; move or delete them first",
            field="code",
        )
    events.record(session, "metro.deleted", metro=code)
    session.delete(row)
    return row


# --- plans and classification -------------------------------------------------------------------


def get_plan(session: Session, slug: str) -> Plan:
    row = session.scalar(select(Plan).where(Plan.slug == slug))
    if row is None:
        raise NotFound(f"plan {slug!r} not found; see metalflow plan list", field="slug")
    return row


def list_plans(session: Session) -> list[Plan]:
    return list(session.scalars(select(Plan).order_by(Plan.slug)))


def machines_per_plan(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Machine.plan_id, func.count())
        .where(Machine.plan_id.is_not(None))
        .group_by(Machine.plan_id)
    )
    return {str(plan_id): count for plan_id, count in rows}


def _rules(session: Session) -> list[tuple[str, Rule]]:
    return [
        (plan.id, Rule.model_validate(plan.rule))
        for plan in session.scalars(select(Plan).order_by(Plan.slug))
    ]


def classify(session: Session, machine_ids: Iterable[str] | None = None) -> int:
    """Set the plan of these machines (all when None) to the first plan they match; how many
    changed."""
    rules = _rules(session)
    query = select(Machine).options(undefer(Machine.attributes))
    if machine_ids is not None:
        query = query.where(Machine.id.in_(list(machine_ids)))
    changed = 0
    for machine in session.scalars(query):
        plan_id = first_match(rules, machine.attributes or {})
        if machine.plan_id != plan_id:
            machine.plan_id = plan_id
            changed += 1
    session.flush()
    return changed


def classify_reported(session: Session, outbox: list[Any]) -> None:
    """The Database's before_commit hook: the machines whose attributes this transaction
    reported are classified in it (see the module docstring)."""
    reported = {
        event.machine_id
        for event in outbox
        if isinstance(event, events.Event)
        and event.kind in REPORTING_EVENTS
        and event.machine_id is not None
    }
    if reported:
        classify(session, reported)


def _plan_fields(spec: PlanCreate) -> dict[str, Any]:
    return {
        "name": spec.name,
        "plan_class": spec.plan_class or spec.slug,
        "line": spec.line,
        "description": spec.description,
        "specs": spec.specs.model_dump(mode="json"),
        "rule": spec.rule.model_dump(mode="json", exclude_defaults=True),
        "wipe": spec.wipe,
    }


def put_plan(session: Session, spec: PlanCreate) -> tuple[Plan, Outcome]:
    row = session.scalar(select(Plan).where(Plan.slug == spec.slug))
    created = row is None
    if row is None:
        row = Plan(id=str(uuid.uuid4()), slug=spec.slug)
        session.add(row)
    fields = _plan_fields(spec)
    rule_changed = created or row.rule != fields["rule"]
    outcome = _outcome(row, fields, created)
    if outcome != "unchanged":
        session.flush()
        events.record(session, f"plan.{outcome}", plan=spec.slug)
    if rule_changed:
        classify(session)
    return row, outcome


def create_plan(session: Session, spec: PlanCreate) -> Plan:
    if session.scalar(select(Plan.id).where(Plan.slug == spec.slug)) is not None:
        raise Conflict(
            f"plan {spec.slug} exists; change it with PATCH /api/v1/plans/{spec.slug}",
            field="slug",
        )
    return put_plan(session, spec)[0]


def plan_create_of(row: Plan) -> dict[str, Any]:
    """The stored plan as the fields of its create."""
    return {
        "slug": row.slug,
        "name": row.name,
        "class": row.plan_class,
        "line": row.line,
        "description": row.description,
        "specs": row.specs,
        "rule": row.rule,
        "wipe": row.wipe,
    }


def update_plan(session: Session, slug: str, patch: PlanUpdate) -> Plan:
    row = get_plan(session, slug)
    current = plan_create_of(row)
    current.pop("class")
    current["plan_class"] = row.plan_class
    return put_plan(session, _merge(PlanCreate, current, patch))[0]


def delete_plan(session: Session, slug: str) -> Plan:
    row = get_plan(session, slug)
    devices = session.scalars(select(Device.hostname).where(Device.plan_id == row.id)).all()
    if devices:
        raise Conflict(
            f"plan {slug} is the plan of devices {_names(devices)} (deleted devices keep"
            " theirs as history); it cannot be deleted, only changed",
            field="slug",
        )
    offering = [
        os_row.slug for os_row in list_operating_systems(session) if slug in os_row.provisionable_on
    ]
    if offering:
        raise Conflict(
            f"operating systems {_names(offering)} are provisionable on plan {slug}; take it out"
            " of their provisionable_on first",
            field="slug",
        )
    events.record(session, "plan.deleted", plan=slug)
    session.delete(row)
    session.flush()
    classify(session)
    return row


def plan_check(session: Session, slug: str) -> PlanCheck:
    """The machines that match the plan's rule and those that miss it, with every reason."""
    plan = get_plan(session, slug)
    rule = Rule.model_validate(plan.rule)
    slugs = {
        plan_id: plan_slug for plan_id, plan_slug in session.execute(select(Plan.id, Plan.slug))
    }
    matching, misses = [], []
    machines = session.scalars(
        select(Machine).options(undefer(Machine.attributes)).order_by(Machine.name)
    )
    for machine in machines:
        found = evaluate(rule, machine.attributes or {})
        if found.matches:
            matching.append(
                MachineMatch(
                    name=machine.name,
                    id=machine.id,
                    state=machine.state,
                    metro=machine.metro,
                    plan=slugs.get(machine.plan_id) if machine.plan_id else None,
                )
            )
        else:
            misses.append(
                MachineMiss(
                    name=machine.name,
                    id=machine.id,
                    state=machine.state,
                    metro=machine.metro,
                    reasons=found.reasons,
                )
            )
    misses.sort(key=lambda miss: len(miss.reasons))
    return PlanCheck(plan=slug, matching=matching, near_misses=misses)


def capacity(session: Session) -> Capacity:
    """Ready machines nobody has (no project, no hardware reservation), per metro and plan; every
    metro and plan of the catalogue is listed, with 0 where none is free."""
    reserved = select(HardwareReservation.machine_id)
    rows = session.execute(
        select(Machine.metro, Plan.slug, func.count())
        .join(Plan, Plan.id == Machine.plan_id)
        .where(
            Machine.state == READY,
            Machine.project_id.is_(None),
            Machine.metro.is_not(None),
            Machine.id.not_in(reserved),
        )
        .group_by(Machine.metro, Plan.slug)
    )
    free = {(str(metro), plan): count for metro, plan, count in rows}
    metros = sorted({metro.code for metro in list_metros(session)} | {m for m, _ in free})
    plans = [plan.slug for plan in list_plans(session)]
    items = [
        CapacityEntry(metro=metro, plan=plan, available=free.get((metro, plan), 0))
        for metro in metros
        for plan in plans
    ]
    return Capacity(items=items, count=len(items))


# --- operating systems --------------------------------------------------------------------------


def get_operating_system(session: Session, slug: str) -> OperatingSystem:
    row = session.scalar(select(OperatingSystem).where(OperatingSystem.slug == slug))
    if row is None:
        raise NotFound(f"operating system {slug!r} not found; see metalflow os list", field="slug")
    return row


def list_operating_systems(session: Session) -> list[OperatingSystem]:
    return list(session.scalars(select(OperatingSystem).order_by(OperatingSystem.slug)))


def metadata_url(settings: Settings, host_header: str | None) -> str:
    """The metadata service as machines reach it: this server's address, the metadata port
    (the API's when that port is off and the API answers metadata)."""
    host = urllib.parse.urlsplit(base_url(settings, host_header)).hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.metadata_port or settings.http_port}"


def _check_os(session: Session, spec: OperatingSystemCreate) -> None:
    known = set(session.scalars(select(Plan.slug).where(Plan.slug.in_(spec.provisionable_on))))
    missing = [slug for slug in spec.provisionable_on if slug not in known]
    if missing:
        raise Invalid(
            f"provisionable_on names plans that do not exist: {_names(missing)}; create them"
            " first (metalflow plan list shows the plans)",
            field="provisionable_on",
        )
    if spec.template == generated_name(spec.slug):
        raise Invalid(
            f"{spec.template} is the name of the generated install template; leave template"
            " out to install with it, or name a template of your own",
            field="template",
        )
    if spec.template is not None:
        if session.scalar(select(Template.id).where(Template.name == spec.template)) is None:
            raise Invalid(
                f"template {spec.template!r} does not exist; apply it first, or leave template"
                " out for the generated image2disk install",
                field="template",
            )
    elif spec.image_url is None:
        raise Invalid(
            "image_url is required when no template is named: the generated install template"
            " streams it to the machine's first disk",
            field="image_url",
        )


def _drop_generated(session: Session, slug: str) -> None:
    generated = session.scalar(select(Template).where(Template.name == generated_name(slug)))
    if generated is not None:
        events.record(session, "template.deleted", template=generated.name)
        session.delete(generated)


def put_operating_system(
    session: Session, spec: OperatingSystemCreate, metadata_url: str
) -> tuple[OperatingSystem, Outcome]:
    """Create or change an OS; its generated template follows it (written when it names no
    template, removed when it comes to name one)."""
    _check_os(session, spec)
    row = session.scalar(select(OperatingSystem).where(OperatingSystem.slug == spec.slug))
    created = row is None
    if row is None:
        row = OperatingSystem(id=str(uuid.uuid4()), slug=spec.slug)
        session.add(row)
    outcome = _outcome(row, spec.model_dump(exclude={"slug"}), created)
    if spec.template is None:
        written = apply_template(
            session, generated_name(spec.slug), install_template(row, metadata_url)
        )
        if outcome == "unchanged" and written != "unchanged":
            outcome = "updated"
    else:
        _drop_generated(session, spec.slug)
    if outcome != "unchanged":
        session.flush()
        events.record(session, f"operating_system.{outcome}", operating_system=spec.slug)
    return row, outcome


def create_operating_system(
    session: Session, spec: OperatingSystemCreate, metadata_url: str
) -> OperatingSystem:
    if session.scalar(select(OperatingSystem.id).where(OperatingSystem.slug == spec.slug)):
        raise Conflict(
            f"operating system {spec.slug} exists; change it with PATCH"
            f" /api/v1/operating-systems/{spec.slug}",
            field="slug",
        )
    return put_operating_system(session, spec, metadata_url)[0]


def update_operating_system(
    session: Session, slug: str, patch: OperatingSystemUpdate, metadata_url: str
) -> OperatingSystem:
    row = get_operating_system(session, slug)
    current = {
        "slug": row.slug,
        "name": row.name,
        "distro": row.distro,
        "version": row.version,
        "provisionable_on": row.provisionable_on,
        "image_url": row.image_url,
        "image_checksum": row.image_checksum,
        "template": row.template,
        "cloud_init": row.cloud_init,
    }
    spec = _merge(OperatingSystemCreate, current, patch)
    return put_operating_system(session, spec, metadata_url)[0]


def delete_operating_system(session: Session, slug: str) -> OperatingSystem:
    row = get_operating_system(session, slug)
    devices = session.scalars(
        select(Device.hostname).where(Device.operating_system_id == row.id)
    ).all()
    if devices:
        raise Conflict(
            f"operating system {slug} is installed on devices {_names(devices)} (deleted"
            " devices keep theirs as history); it cannot be deleted, only changed",
            field="slug",
        )
    if row.template is None:
        _drop_generated(session, slug)
    events.record(session, "operating_system.deleted", operating_system=slug)
    session.delete(row)
    return row
