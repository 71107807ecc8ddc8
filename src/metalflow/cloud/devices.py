"""Devices: a tenant's server, taken from the provider's pool of ready machines of a plan in a
metro, installed with one of the provider's operating systems.

A create is one transaction: the machine is taken with `FOR UPDATE SKIP LOCKED` (two creates at
once take two machines, or one of them finds none), assigned to the project, given its per-host
addresses, told its hostname, keys and user-data (the machine's metadata, which the metadata
service serves), and a workflow installs the OS. Anything refused refuses all of it: no machine
taken, no address allocated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.cloud.device_states import (
    DeviceState,
    Observed,
    Phase,
    device_state,
    provisioning_percentage,
)
from metalflow.cloud.devices_schemas import DeviceAction, DeviceCreate, DeviceUpdate
from metalflow.cloud.install import install_template_name
from metalflow.cloud.tables import (
    Device,
    HardwareReservation,
    Metro,
    OperatingSystem,
    Plan,
    SshKey,
)
from metalflow.config import Settings
from metalflow.db.base import utcnow
from metalflow.db.engine import BeforeCommit
from metalflow.errors import Conflict, Invalid, NotFound
from metalflow.events import Event
from metalflow.index.instance import Address
from metalflow.index.store import assigned_addresses
from metalflow.inventory import service as inventory
from metalflow.inventory.lifecycle import MachineState
from metalflow.inventory.tables import Machine
from metalflow.ipam import hosts
from metalflow.ipam import service as ipam
from metalflow.power import service as power
from metalflow.power.driver import PowerAction
from metalflow.power.states import PowerJobState
from metalflow.power.steps import Step
from metalflow.power.tables import PowerJob
from metalflow.templates import service as templates
from metalflow.templates.tables import Template
from metalflow.tenancy.tables import ProjectMember
from metalflow.workflows import engine
from metalflow.workflows.tables import Workflow

DEFAULT_ADDRESSES = frozenset({(4, True), (4, False), (6, True)})
"""Equinix's default: public IPv4, private IPv4 and public IPv6 (the per-host layer 3)."""
PENDING_POWER = (PowerJobState.QUEUED.value, PowerJobState.RUNNING.value)
OS_LISTING = "/metal/v1/operating-systems"
Listed = TypeVar("Listed", Plan, OperatingSystem)


def device_missing(device_id: str) -> NotFound:
    return NotFound(f"device {device_id!r} not found", field="id")


def _by_slug(session: Session, table: type[Listed], slug: str, field: str, listing: str) -> Listed:
    found = session.scalar(select(table).where(table.slug == slug))
    if found is None:
        raise Invalid(
            f"no {field.replace('_', ' ')} {slug!r}; GET {listing} lists them", field=field
        )
    return found


def _checked_template(session: Session, system: OperatingSystem) -> str:
    template = install_template_name(system)
    if session.scalar(select(Template.name).where(Template.name == template)) is None:
        raise Conflict(
            f"operating system {system.slug} cannot be installed: its template {template!r} is"
            " missing (the provider applies it)",
            field="operating_system",
        )
    return template


def _metro(session: Session, code: str) -> Metro:
    found = session.scalar(select(Metro).where(Metro.code == code))
    if found is None:
        raise Invalid(
            f"no metro {code!r}; GET /metal/v1/locations/metros lists them", field="metro"
        )
    return found


def _checked_request(body: DeviceCreate, project_id: str) -> None:
    if body.project_id is not None and body.project_id != project_id:
        raise Invalid(
            "project_id differs from the project in the path; leave it out or make them equal",
            field="project_id",
        )
    if body.facility:
        raise Invalid(
            "facilities are metros here: send `metro` (GET /metal/v1/locations/metros)",
            field="facility",
        )
    if body.operating_system == "custom_ipxe" or body.ipxe_script_url:
        raise Invalid(
            "custom iPXE is not offered yet: choose an operating system from"
            " GET /metal/v1/operating-systems",
            field="operating_system",
        )
    if body.ip_addresses is not None:
        asked = {(entry.address_family, entry.public) for entry in body.ip_addresses}
        extra = any(entry.cidr is not None or entry.ip_reservations for entry in body.ip_addresses)
        if asked != DEFAULT_ADDRESSES or extra:
            raise Invalid(
                "only the default addresses are offered yet (public IPv4, private IPv4 and"
                " public IPv6, one block each at the metro's sizes): leave ip_addresses out",
                field="ip_addresses",
            )


def _take_machine(
    session: Session,
    plan: Plan,
    metro: Metro,
    project_id: str,
    reservation_id: str | None,
) -> Machine:
    """A ready, unassigned machine of the plan in the metro, locked; one another transaction
    holds is skipped, so concurrent creates never wait on each other nor take one machine twice.
    Only when every candidate is held (by a create, or briefly by a heartbeat or power sync) does
    the create wait for one and take it if it is still free once released, rather than answer
    "no capacity" for a machine that is."""
    query = select(Machine).where(
        Machine.plan_id == plan.id,
        Machine.metro == metro.code,
        Machine.state == MachineState.READY.value,
        Machine.project_id.is_(None),
    )
    reserved = exists().where(HardwareReservation.machine_id == Machine.id)
    if reservation_id is not None:
        reservation = session.get(HardwareReservation, reservation_id)
        if reservation is None or reservation.project_id != project_id:
            raise Invalid(
                f"no hardware reservation {reservation_id!r} in this project",
                field="hardware_reservation_id",
            )
        query = query.where(Machine.id == reservation.machine_id)
    else:
        query = query.where(~reserved)
    ordered = query.order_by(Machine.name).limit(1)
    machine = session.scalar(ordered.with_for_update(skip_locked=True, of=Machine))
    if machine is None:
        machine = session.scalar(ordered.with_for_update(of=Machine))
    if machine is None:
        what = "the reserved machine is not ready" if reservation_id else "no ready machine"
        raise Conflict(
            f"{what} of plan {plan.slug} in metro {metro.code}; GET /metal/v1/capacity shows"
            " what is available",
            field="plan",
        )
    return machine


def _ssh_keys(session: Session, project_id: str, body: DeviceCreate) -> list[SshKey]:
    """The keys the device gets: those named, else (Equinix's default) the project's keys and
    those of its members; none with `no_ssh_keys`."""
    if body.no_ssh_keys:
        return []
    members = select(ProjectMember.user_id).where(ProjectMember.project_id == project_id)
    chosen: list[SshKey] = []
    if body.project_ssh_keys:
        found = list(
            session.scalars(
                select(SshKey).where(
                    SshKey.id.in_(body.project_ssh_keys), SshKey.project_id == project_id
                )
            )
        )
        missing = set(body.project_ssh_keys) - {key.id for key in found}
        if missing:
            raise Invalid(
                f"no SSH key {sorted(missing)[0]!r} in this project", field="project_ssh_keys"
            )
        chosen.extend(found)
    if body.user_ssh_keys:
        outsiders = set(body.user_ssh_keys) - set(
            session.scalars(members.where(ProjectMember.user_id.in_(body.user_ssh_keys)))
        )
        if outsiders:
            raise Invalid(
                f"user {sorted(outsiders)[0]!r} is not a member of this project",
                field="user_ssh_keys",
            )
        chosen.extend(session.scalars(select(SshKey).where(SshKey.user_id.in_(body.user_ssh_keys))))
    if body.project_ssh_keys or body.user_ssh_keys or body.ssh_keys:
        return chosen
    return list(
        session.scalars(
            select(SshKey)
            .where((SshKey.project_id == project_id) | SshKey.user_id.in_(members))
            .order_by(SshKey.created_at)
        )
    )


def _instance_metadata(
    device: Device,
    plan: Plan,
    system: OperatingSystem,
    keys: Sequence[str],
) -> dict[str, object]:
    """The machine's metadata in Tinkerbell's Hardware shape, which the metadata service serves
    (Hegel's `instance` and `facility`); the device id is the instance id, as on Equinix."""
    return {
        "instance": {
            "id": device.id,
            "hostname": device.hostname,
            "ssh_keys": list(keys),
            "tags": list(device.tags),
            "operating_system": {
                "slug": system.slug,
                "distro": system.distro,
                "version": system.version,
            },
        },
        "facility": {"plan_slug": plan.slug, "facility_code": device.metro},
        "custom": dict(device.customdata),
    }


def _new_ids(session: Session) -> tuple[str, str]:
    device_id = str(uuid.uuid4())
    short = device_id[:8]
    while session.scalar(select(Device.id).where(Device.short_id == short)) is not None:
        short = secrets.token_hex(4)
    return device_id, short


def create_device(
    session: Session,
    settings: Settings,
    project_id: str,
    body: DeviceCreate,
    *,
    requested_by: str,
) -> Device:
    _checked_request(body, project_id)
    plan = _by_slug(session, Plan, body.plan, "plan", "/metal/v1/plans")
    metro = _metro(session, body.metro)
    system = _by_slug(
        session, OperatingSystem, body.operating_system, "operating_system", OS_LISTING
    )
    if system.provisionable_on and plan.slug not in system.provisionable_on:
        raise Invalid(
            f"operating system {system.slug} is not provisionable on plan {plan.slug}: it is on"
            f" {', '.join(system.provisionable_on)}",
            field="operating_system",
        )
    template = _checked_template(session, system)
    if body.public_ipv4_subnet_size not in (None, settings.host_sizes(metro.code)["public4"]):
        raise Invalid(
            f"public IPv4 blocks in metro {metro.code} are /"
            f"{settings.host_sizes(metro.code)['public4']}; send that or leave it out",
            field="public_ipv4_subnet_size",
        )
    keys = _ssh_keys(session, project_id, body)
    machine = _take_machine(session, plan, metro, project_id, body.hardware_reservation_id)
    device_id, short_id = _new_ids(session)
    device = Device(
        id=device_id,
        short_id=short_id,
        project_id=project_id,
        machine_id=machine.id,
        hostname=body.hostname or f"{plan.slug.split('.')[0]}-{short_id}",
        description=body.description,
        plan_id=plan.id,
        metro=metro.code,
        operating_system_id=system.id,
        state=Phase.PROVISIONING.value,
        userdata=body.userdata,
        customdata=body.customdata,
        tags=body.tags,
        ssh_key_ids=[key.id for key in keys],
        always_pxe=body.always_pxe,
        locked=body.locked,
        hardware_reservation_id=body.hardware_reservation_id,
    )
    session.add(device)
    inventory.assign_project(session, machine, project_id)
    hosts.give_host_addresses(
        session, machine.id, project_id, metro.code, hosts.host_sizes(settings, metro.code)
    )
    inline = [entry.key.strip() for entry in body.ssh_keys]
    _tell_machine(machine, device, plan, system, [*(key.key for key in keys), *inline])
    session.flush()
    workflow = engine.create_workflow(
        session,
        machine=machine,
        template_name=template,
        boot=engine.NETBOOT_MODE if machine.bmc_driver else None,
        reboot=machine.bmc_driver is not None,
    )
    device.workflow_id = workflow.id
    events.record(
        session,
        "device.created",
        machine_id=machine.id,
        machine_name=machine.name,
        workflow_id=workflow.id,
        device=device.id,
        project_id=project_id,
        plan=plan.slug,
        metro=metro.code,
        operating_system=system.slug,
        requested_by=requested_by,
    )
    return device


def _tell_machine(
    machine: Machine, device: Device, plan: Plan, system: OperatingSystem, keys: Sequence[str]
) -> None:
    machine.instance_metadata = _instance_metadata(device, plan, system, keys)
    machine.user_data = device.userdata.encode() if device.userdata else None


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise device_missing(device_id)
    return device


def list_devices(
    session: Session, project_ids: Sequence[str] | None, offset: int, limit: int
) -> tuple[list[Device], int]:
    """A page of the projects' devices (all projects' for None), oldest first, and the total."""
    query = select(Device)
    if project_ids is not None:
        query = query.where(Device.project_id.in_(list(project_ids)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Device.created_at, Device.id).offset(offset).limit(limit))
    return list(page), total


def project_devices(session: Session, project_id: str) -> list[Device]:
    return list(session.scalars(select(Device).where(Device.project_id == project_id)))


def device_events(
    session: Session, found: Sequence[Device], offset: int, limit: int
) -> tuple[list[events.Event], int]:
    """The events of the devices' machines since each device was created, newest first: what
    happened to a device is what happened to its machine while it was the device's."""
    scopes = [
        (Event.machine_id == device.machine_id) & (Event.time >= device.created_at)
        for device in found
        if device.machine_id is not None
    ]
    if not scopes:
        return [], 0
    query = select(Event).where(or_(*scopes))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Event.id.desc()).offset(offset).limit(limit))
    return list(page), total


def update_device(session: Session, device: Device, body: DeviceUpdate) -> dict[str, object]:
    """Apply the fields given; (before, after) of each changed one, for the audit."""
    changes: dict[str, object] = {}
    given = body.model_dump(exclude_unset=True, exclude={"billing_cycle", "spot_instance"})
    if device.locked and given.get("locked") is not False and given:
        changed = {key for key, value in given.items() if getattr(device, key) != value}
        if changed - {"locked"}:
            raise Conflict("the device is locked: unlock it (locked: false) first", field="locked")
    if given.get("ipxe_script_url"):
        raise Invalid("custom iPXE is not offered yet", field="ipxe_script_url")
    given.pop("ipxe_script_url", None)
    for key, value in given.items():
        if getattr(device, key) != value:
            changes[key] = {"before": getattr(device, key), "after": value}
            setattr(device, key, value)
    if changes and device.machine_id is not None:
        machine = inventory.lock(session, inventory.get_machine_by_id(session, device.machine_id))
        plan = session.get_one(Plan, device.plan_id)
        system = session.get_one(OperatingSystem, device.operating_system_id)
        instance = dict(machine.instance_metadata.get("instance") or {})
        keys = [str(key) for key in instance.get("ssh_keys") or []]
        _tell_machine(machine, device, plan, system, keys)
        events.record(
            session,
            "device.updated",
            machine_id=machine.id,
            machine_name=machine.name,
            device=device.id,
            fields=sorted(changes),
        )
    return {key: value for key, value in changes.items() if key != "userdata"}


@dataclass(frozen=True)
class DeviceView:
    """A device and what its Equinix state is read from."""

    device: Device
    plan: Plan
    system: OperatingSystem
    metro: Metro | None
    machine: Machine | None
    workflow: Workflow | None
    power_pending: str | None
    addresses: list[Address] = dataclasses.field(default_factory=list)

    @property
    def state(self) -> DeviceState:
        machine = self.machine
        return device_state(
            Observed(
                phase=Phase(self.device.state),
                workflow_state=self.workflow.state if self.workflow else None,
                booted=machine is not None and machine.state == MachineState.ACTIVE.value,
                phones_home=self.system.cloud_init,
                power_state=machine.power_state if machine else None,
                power_pending=self.power_pending,
            )
        )

    @property
    def percentage(self) -> int:
        actions = self.workflow.actions if self.workflow else []
        current = (
            [action for action in actions if action.run == self.workflow.run]
            if self.workflow
            else []
        )
        finished = sum(1 for action in current if action.state == "SUCCESS")
        return provisioning_percentage(finished, len(current), self.state)


def views(session: Session, devices: Sequence[Device]) -> list[DeviceView]:
    """Each device with its plan, OS, metro, machine, workflow, pending power job and addresses,
    in a fixed number of queries whatever the number of devices."""
    if not devices:
        return []
    plans = {
        p.id: p
        for p in session.scalars(select(Plan).where(Plan.id.in_({d.plan_id for d in devices})))
    }
    systems = {
        s.id: s
        for s in session.scalars(
            select(OperatingSystem).where(
                OperatingSystem.id.in_({d.operating_system_id for d in devices})
            )
        )
    }
    metros = {
        m.code: m
        for m in session.scalars(select(Metro).where(Metro.code.in_({d.metro for d in devices})))
    }
    machine_ids = [d.machine_id for d in devices if d.machine_id is not None]
    machines = {
        m.id: m for m in session.scalars(select(Machine).where(Machine.id.in_(machine_ids)))
    }
    workflow_ids = [d.workflow_id for d in devices if d.workflow_id is not None]
    workflows = {
        w.id: w for w in session.scalars(select(Workflow).where(Workflow.id.in_(workflow_ids)))
    }
    pending: dict[str, str] = {}
    for machine_id, operation in session.execute(
        select(PowerJob.machine_id, PowerJob.operation)
        .where(PowerJob.machine_id.in_(machine_ids), PowerJob.state.in_(PENDING_POWER))
        .order_by(PowerJob.created_at)
    ):
        pending[machine_id] = operation
    addresses = assigned_addresses(session, machine_ids)
    return [
        DeviceView(
            device=d,
            plan=plans[d.plan_id],
            system=systems[d.operating_system_id],
            metro=metros.get(d.metro),
            machine=machines.get(d.machine_id) if d.machine_id else None,
            workflow=workflows.get(d.workflow_id) if d.workflow_id else None,
            power_pending=pending.get(d.machine_id) if d.machine_id else None,
            addresses=addresses.get(d.machine_id, []) if d.machine_id else [],
        )
        for d in devices
    ]


def _wipe_template(session: Session, mode: str) -> str:
    """The template that wipes a machine's disks in `mode` (the plan's policy), kept current."""
    name = f"metalflow-wipe-{mode}"
    templates.apply_template(session, name, WIPE_TEMPLATE.format(name=name, mode=mode))
    return name


WIPE_TEMPLATE = """version: "0.1"
name: {name}
global_timeout: 7200
tasks:
  - name: wipe
    worker: "{{{{.device_1}}}}"
    actions:
      - name: wipe-disks
        image: wipe
        timeout: 7000
        environment:
          DEST_DISK: "{{{{ index .Hardware.Disks 0 }}}}"
          MODE: {mode}
"""


def delete_device(session: Session, device: Device, *, requested_by: str) -> None:
    """Start deprovisioning: the install (if any) is cancelled and the plan's wipe runs; the
    device is deleted, and its machine back in the pool, when the wipe succeeds."""
    if device.locked:
        raise Conflict("the device is locked: unlock it (locked: false) first", field="locked")
    if device.state == Phase.DEPROVISIONING.value:
        return
    assert device.machine_id is not None
    machine = inventory.lock(session, inventory.get_machine_by_id(session, device.machine_id))
    running = engine.active_workflow(session, machine.id)
    if running is not None:
        engine.cancel(session, running, machine, utcnow())
    plan = session.get_one(Plan, device.plan_id)
    workflow = engine.create_workflow(
        session,
        machine=machine,
        template_name=_wipe_template(session, plan.wipe),
        kind="deprovision",
        boot=engine.NETBOOT_MODE if machine.bmc_driver else None,
    )
    device.state = Phase.DEPROVISIONING.value
    device.workflow_id = workflow.id
    events.record(
        session,
        "device.deprovisioning",
        machine_id=machine.id,
        machine_name=machine.name,
        workflow_id=workflow.id,
        device=device.id,
        wipe=plan.wipe,
        requested_by=requested_by,
    )


def finish_deletions(settings: Settings) -> BeforeCommit:
    """The Database hook that completes a device's deletion in the transaction its wipe
    workflow succeeds in: addresses released into quarantine, machine back to the provider,
    its metadata forgotten. The workflow engine sits below the cloud, so it cannot call up."""
    quarantine = dt.timedelta(seconds=settings.ipam_quarantine_seconds)

    def hook(session: Session, outbox: list[Any]) -> None:
        done = {
            event.workflow_id
            for event in outbox
            if isinstance(event, events.Event)
            and event.kind == "workflow.succeeded"
            and event.workflow_id is not None
        }
        if not done:
            return
        for device in session.scalars(
            select(Device).where(
                Device.workflow_id.in_(done), Device.state == Phase.DEPROVISIONING.value
            )
        ):
            _release(session, device, quarantine)

    return hook


def _release(session: Session, device: Device, quarantine: dt.timedelta) -> None:
    assert device.machine_id is not None
    machine = inventory.lock(session, inventory.get_machine_by_id(session, device.machine_id))
    ipam.unassign_machine(session, machine.id)
    hosts.release_host_addresses(session, machine.id, utcnow(), quarantine=quarantine)
    inventory.assign_project(session, machine, None)
    machine.instance_metadata = {}
    machine.user_data = None
    events.record(
        session,
        "device.deleted",
        machine_id=machine.id,
        machine_name=machine.name,
        device=device.id,
        project_id=device.project_id,
    )
    session.delete(device)


POWER_ACTIONS = {
    "power_on": PowerAction.ON,
    "power_off": PowerAction.OFF,
    "reboot": PowerAction.CYCLE,
}


def act(session: Session, device: Device, body: DeviceAction, *, requested_by: str) -> None:
    """Equinix's device actions; each is queued (202): its progress shows in the state."""
    if device.state == Phase.DEPROVISIONING.value:
        raise Conflict("the device is being deleted", field="type")
    assert device.machine_id is not None
    machine = inventory.lock(session, inventory.get_machine_by_id(session, device.machine_id))
    if body.type in POWER_ACTIONS:
        if not machine.bmc_driver:
            raise Conflict(
                "this device has no BMC to power it through; ask the provider", field="type"
            )
        action = POWER_ACTIONS[body.type]
        power.enqueue(
            session, machine, str(action), (Step(power=action),), requested_by=requested_by
        )
        return
    if body.type == "reinstall":
        _reinstall(session, device, machine, body, requested_by=requested_by)
        return
    raise Invalid(f"{body.type} is not offered yet", field="type")


def _reinstall(
    session: Session, device: Device, machine: Machine, body: DeviceAction, *, requested_by: str
) -> None:
    if body.preserve_data:
        raise Invalid(
            "preserve_data is not offered: a reinstall writes the whole image to the first disk",
            field="preserve_data",
        )
    plan = session.get_one(Plan, device.plan_id)
    system = (
        _by_slug(session, OperatingSystem, body.operating_system, "operating_system", OS_LISTING)
        if body.operating_system
        else session.get_one(OperatingSystem, device.operating_system_id)
    )
    if system.provisionable_on and plan.slug not in system.provisionable_on:
        raise Invalid(
            f"operating system {system.slug} is not provisionable on plan {plan.slug}",
            field="operating_system",
        )
    template = _checked_template(session, system)
    device.operating_system_id = system.id
    instance = dict(machine.instance_metadata.get("instance") or {})
    _tell_machine(machine, device, plan, system, [str(k) for k in instance.get("ssh_keys") or []])
    workflow = engine.create_workflow(
        session,
        machine=machine,
        template_name=template,
        boot=engine.NETBOOT_MODE if machine.bmc_driver else None,
        reboot=machine.bmc_driver is not None,
    )
    device.state = Phase.REINSTALLING.value
    device.workflow_id = workflow.id
    events.record(
        session,
        "device.reinstalling",
        machine_id=machine.id,
        machine_name=machine.name,
        workflow_id=workflow.id,
        device=device.id,
        operating_system=system.slug,
        requested_by=requested_by,
    )
