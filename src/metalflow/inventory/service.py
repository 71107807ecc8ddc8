"""Machine changes: each call validates, writes within the caller's transaction, records events."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, undefer

from metalflow import events
from metalflow.db.base import utcnow
from metalflow.errors import Conflict, NotFound
from metalflow.inventory.discovery import read_discovery
from metalflow.inventory.lifecycle import BUSY_STATES, LIFECYCLE, MachineEvent, MachineState
from metalflow.inventory.schemas import (
    BmcPublic,
    BmcSpec,
    BootPublic,
    InterfacePublic,
    InterfaceSpec,
    MachinePublic,
    MachineSpec,
    user_data_fields,
)
from metalflow.inventory.tables import Interface, Machine
from metalflow.inventory.tinkerbell import hardware_view
from metalflow.ipam import hosts
from metalflow.services import require, visible
from metalflow.statemachine import IllegalTransition
from metalflow.tenancy import policy
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.secrets import Keyring

ApplyOutcome = Literal["created", "updated", "unchanged"]


def missing_machine(name: str) -> NotFound:
    return NotFound(f"machine {name!r} not found", field="machine")


def get_machine(session: Session, name: str) -> Machine:
    machine = session.scalar(select(Machine).where(Machine.name == name))
    if machine is None:
        raise missing_machine(name)
    return machine


def get_machine_for(
    session: Session, name: str, principal: Principal, action: policy.Action
) -> Machine:
    """The machine, if `principal` may do `action` on it; a tenant asking for one outside its
    projects gets the very 404 of a machine that does not exist."""
    machine = get_machine(session, name)
    require(principal, action, machine.project_id, missing=missing_machine(name))
    return machine


def latest_assignments(session: Session, machine_ids: Collection[str]) -> dict[str, events.Event]:
    """Each machine's latest `machine.assigned` event (none for one never assigned, or whose
    assignment was pruned with everything before it): where a tenant's event stream starts.
    The time a tenant's view of workflows and power jobs starts is the machine's
    `project_assigned_at`, which pruning leaves (see `tenant_since`)."""
    if not machine_ids:
        return {}
    latest = (
        select(func.max(events.Event.id))
        .where(events.Event.kind == events.ASSIGNED, events.Event.machine_id.in_(machine_ids))
        .group_by(events.Event.machine_id)
    )
    found = session.scalars(select(events.Event).where(events.Event.id.in_(latest)))
    return {event.machine_id: event for event in found if event.machine_id is not None}


def tenant_since(principal: Principal, machine: Machine) -> dt.datetime | None:
    """From when `principal` sees what happened to `machine` (its workflows, power jobs): its
    assignment to the tenant's project, so that a machine's next tenant never sees what the one
    before did with it; None for no bound (the provider, or a machine never assigned). The
    machine keeps the time, which outlives the pruned `machine.assigned` event."""
    if visible(principal) is None:
        return None
    return machine.project_assigned_at


def assign_project(
    session: Session, machine: Machine, project_id: str | None
) -> tuple[str | None, str | None]:
    """Give the (locked) machine to a tenant project, or back to the provider with None;
    (before, after). Refused while a workflow (or an inspection) holds the machine, which
    every active workflow does: it would run on for one tenant on a machine another now owns."""
    if project_id is not None:
        tenancy.get_project(session, project_id)
    before = machine.project_id
    if before == project_id:
        return before, project_id
    if MachineState(machine.state) in BUSY_STATES:
        raise Conflict(
            f"machine {machine.name} is {machine.state}; cancel its workflow or wait for it to"
            " end, then assign the machine",
            field="project",
        )
    machine.project_id = project_id
    machine.project_assigned_at = utcnow()
    events.record(
        session,
        events.ASSIGNED,
        machine_id=machine.id,
        machine_name=machine.name,
        before=before,
        after=project_id,
    )
    return before, project_id


def get_machine_by_id(session: Session, machine_id: str) -> Machine:
    machine = session.get(Machine, machine_id)
    if machine is None:
        raise NotFound(f"machine id {machine_id!r} not found", field="machine")
    return machine


def lock_machine(session: Session, machine_id: str, *, skip_locked: bool = False) -> Machine | None:
    """Take the machine's row lock, the one serialisation point for changes to a machine and its
    workflows (PostgreSQL; SQLite writes are serialised already), and reload it fresh.

    Every writer locks the machine before its workflow, so two writers never deadlock.
    Whatever the session loaded before is expired, so it reloads as of the lock.
    With skip_locked, a machine another transaction holds yields None.
    """
    session.expire_all()
    query = (
        select(Machine)
        .where(Machine.id == machine_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return session.scalar(query)


def lock(session: Session, machine: Machine) -> Machine:
    locked = lock_machine(session, machine.id)
    if locked is None:
        raise NotFound(f"machine {machine.name!r} was deleted", field="machine")
    return locked


def machine_names(session: Session) -> dict[str, str]:
    """id → name of every machine, without loading the machines."""
    return {
        machine_id: name for machine_id, name in session.execute(select(Machine.id, Machine.name))
    }


def list_machines(
    session: Session,
    *,
    state: str | None = None,
    labels: dict[str, str] | None = None,
    projects: Collection[str] | None = None,
) -> list[Machine]:
    """`projects`: only machines assigned to one of these (None: every machine)."""
    query = (
        select(Machine)
        .order_by(Machine.name)
        .options(selectinload(Machine.interfaces), undefer(Machine.attributes))
        .options(undefer(Machine.disks), undefer(Machine.instance_metadata))
        .options(undefer(Machine.user_data))
    )
    if state is not None:
        query = query.where(Machine.state == state)
    if projects is not None:
        query = query.where(Machine.project_id.in_(projects))
    machines = list(session.scalars(query))
    if labels:
        machines = [m for m in machines if all(m.labels.get(k) == v for k, v in labels.items())]
    return machines


def machine_ids_in(session: Session, projects: Collection[str]) -> list[str]:
    """The ids of the machines assigned to these projects, without loading the machines."""
    return list(session.scalars(select(Machine.id).where(Machine.project_id.in_(projects))))


def assigned_since(session: Session, projects: Collection[str]) -> dict[str, dt.datetime | None]:
    """The machines assigned to these projects, each with `tenant_since`'s bound."""
    rows = session.execute(
        select(Machine.id, Machine.project_assigned_at).where(Machine.project_id.in_(projects))
    )
    return {machine_id: since for machine_id, since in rows}


def _is_placeholder(machine: Machine) -> bool:
    """A machine discovery registered and no operator has declared since: its MACs are the
    unauthenticated word of whatever booted, which an operator's declaration overrides."""
    return machine.state == MachineState.NEW.value and not machine.applied


def _check_unique_addresses(
    session: Session, spec: MachineSpec, machine_id: str | None
) -> dict[str, Machine]:
    """Refuse a MAC or IP another declared machine holds; return the MACs that discovered
    placeholders hold, for the caller to take over."""
    placeholders: dict[str, Machine] = {}
    for index, iface in enumerate(spec.interfaces):
        owner = session.scalar(
            select(Machine)
            .join(Interface)
            .where(Interface.mac == iface.mac, Interface.machine_id != (machine_id or ""))
            .options(undefer(Machine.applied))
        )
        if owner is not None and _is_placeholder(owner):
            placeholders[iface.mac] = owner
        elif owner is not None:
            raise Conflict(
                f"duplicate MAC {iface.mac} (already on machine {owner.name})",
                field=f"spec.interfaces[{index}].mac",
            )
        if iface.ip is None:
            continue
        owner_name = session.scalar(
            select(Machine.name)
            .join(Interface)
            .where(Interface.ip == iface.ip, Interface.machine_id != (machine_id or ""))
        )
        if owner_name is not None:
            raise Conflict(
                f"duplicate IP {iface.ip} (already on machine {owner_name})",
                field=f"spec.interfaces[{index}].ip",
            )
    return placeholders


def _take_over(session: Session, placeholders: dict[str, Machine], name: str) -> dict[str, str]:
    """Move each MAC off the discovered machine holding it, as an operator's edit in MAAS
    replaces what enlistment guessed; a placeholder left without interfaces can never boot
    into anything again and is deleted. Returns MAC → the placeholder's name."""
    macs_of: dict[str, list[str]] = {}
    for mac, owner in placeholders.items():
        macs_of.setdefault(owner.id, []).append(mac)
    taken: dict[str, str] = {}
    for placeholder_id, macs in macs_of.items():
        placeholder = lock(session, placeholders[macs[0]])
        for iface in [i for i in placeholder.interfaces if i.mac in macs]:
            placeholder.interfaces.remove(iface)
        left = len(placeholder.interfaces)
        for mac in macs:
            taken[mac] = placeholder.name
            events.record(
                session,
                "machine.mac_taken_over",
                machine_id=placeholder_id,
                machine_name=placeholder.name,
                mac=mac,
                by=name,
                deleted=not left,
            )
        if not left:
            delete_machine(session, placeholder)
        session.flush()
    return taken


def _interface_fields(spec: InterfaceSpec) -> dict[str, Any]:
    return {
        "mac": spec.mac,
        "ip": spec.ip,
        "netmask": spec.netmask,
        "gateway": spec.gateway,
        "nameservers": spec.nameservers,
        "hostname": spec.hostname,
        "vlan": spec.vlan,
        "lease_time": spec.lease_time,
        "allow_pxe": spec.netboot.allow_pxe,
        "allow_workflow": spec.netboot.allow_workflow,
    }


def _sync_interfaces(
    session: Session,
    machine: Machine,
    wanted: list[InterfaceSpec],
    declared_before: dict[str, dict[str, Any]],
) -> None:
    """Match rows by MAC so unique constraints never see a transient duplicate.

    Workflows turn netboot on and off; a re-apply that leaves an interface's declared netboot
    flags as they were keeps the flags the workflows set (a label edit must not send a
    provisioned machine back to PXE).
    """
    by_mac = {iface.mac: iface for iface in machine.interfaces}
    wanted_macs = {spec.mac for spec in wanted}
    stale = [iface for mac, iface in by_mac.items() if mac not in wanted_macs]
    for iface in stale:
        machine.interfaces.remove(iface)
    if stale:
        session.flush()
    for position, spec in enumerate(wanted):
        row = by_mac.get(spec.mac)
        if row is None:
            row = Interface(position=position, **_interface_fields(spec))
            machine.interfaces.append(row)
        else:
            row.position = position
            fields = _interface_fields(spec)
            before = declared_before.get(spec.mac)
            if before is not None and before.get("netboot") == spec.netboot.model_dump(mode="json"):
                del fields["allow_pxe"], fields["allow_workflow"]
            for key, value in fields.items():
                setattr(row, key, value)


def _give_provisioning_address(
    session: Session, machine: Machine, wanted: list[InterfaceSpec]
) -> None:
    """Give the interface the machine boots from, when its manifest types no `ip`, an address
    from a provisioning pool, so that its DHCP reservation answers it; the netmask and gateway
    it declares win over the pool's. A machine holding one keeps it; without an IPv4
    provisioning pool nothing changes.

    The booting interface is the first one, in the manifest's order, whose declaration allows
    PXE, as a workflow's default hardware map names the first interface: the declaration, not
    the flag now, since a provisioned machine's workflow turned netboot off and a re-apply must
    not take its address away. Discovery gives none: its machine is unauthenticated, boots on
    the dynamic lease it has, and gets its address once an operator declares it.
    """
    booting = next((iface for iface in wanted if iface.netboot.allow_pxe), None)
    if booting is None or booting.ip is not None:
        return
    block = hosts.provisioning_address(session, machine.id, metro=machine.metro, family=4)
    if block is None:
        return
    address, netmask, gateway = hosts.provisioning_fields(session, block)
    row = next(iface for iface in machine.interfaces if iface.mac == booting.mac)
    row.ip = address
    row.netmask = booting.netmask or netmask
    row.gateway = booting.gateway or gateway
    session.flush()


def apply_machine(
    session: Session,
    spec: MachineSpec,
    keyring: Keyring,
    *,
    source: str = "Machine",
    hardware_spec: dict[str, Any] | None = None,
) -> ApplyOutcome:
    """Create or update a machine from its declaration; declared-equal means no write at all."""
    applied = {"kind": source, "spec": spec.fingerprint(), "hardware_spec": hardware_spec}
    password = spec.bmc.password.get_secret_value() if spec.bmc and spec.bmc.password else None
    machine = session.scalar(select(Machine).where(Machine.name == spec.name))
    if machine is not None:
        old_password = (
            keyring.decrypt(machine.bmc_password_encrypted)
            if machine.bmc_password_encrypted
            else None
        )
        if machine.applied == applied and old_password == password:
            return "unchanged"
    placeholders = _check_unique_addresses(session, spec, machine.id if machine else None)
    outcome: ApplyOutcome = "updated"
    declared_before: dict[str, dict[str, Any]] = {}
    if machine is not None:
        machine = lock(session, machine)
        if MachineState(machine.state) in BUSY_STATES:
            raise Conflict(
                f"machine {machine.name} is {machine.state}; changes wait until its workflow"
                " ends (or cancel it)",
                field="metadata.name",
            )
        declared_before = {
            iface["mac"]: iface for iface in machine.applied.get("spec", {}).get("interfaces", [])
        }
    taken = _take_over(session, placeholders, spec.name)
    if machine is None:
        outcome = "created"
        machine = Machine(
            id=uuid.uuid4().hex, name=spec.name, state=MachineState.READY.value, interfaces=[]
        )
        session.add(machine)
    machine.project = spec.project
    machine.metro = spec.metro
    machine.labels = spec.labels
    machine.arch = spec.arch
    machine.uefi = spec.uefi
    machine.hostname = spec.hostname
    machine.disks = [disk.model_dump(mode="json") for disk in spec.disks]
    _write_bmc(machine, spec.bmc, keyring)
    machine.instance_metadata = spec.metadata
    machine.user_data = spec.user_data_bytes()
    machine.boot = spec.boot.stored() if spec.boot else {}
    machine.applied = applied
    _sync_interfaces(session, machine, spec.interfaces, declared_before)
    session.flush()
    _give_provisioning_address(session, machine, spec.interfaces)
    events.record(
        session,
        f"machine.{outcome}",
        machine_id=machine.id,
        machine_name=machine.name,
        source=source,
    )
    for mac, placeholder in taken.items():
        events.record(
            session,
            "machine.mac_taken_over",
            machine_id=machine.id,
            machine_name=machine.name,
            mac=mac,
            discovered=placeholder,
        )
    return outcome


def _write_bmc(machine: Machine, bmc: BmcSpec | None, keyring: Keyring) -> None:
    password = bmc.password.get_secret_value() if bmc and bmc.password else None
    machine.bmc_driver = bmc.driver if bmc else None
    machine.bmc_address = bmc.address if bmc else None
    machine.bmc_username = bmc.username if bmc else None
    machine.bmc_password_encrypted = keyring.encrypt(password) if password is not None else None
    machine.bmc_options = bmc.stored_options() if bmc else {}


def set_bmc(session: Session, machine: Machine, bmc: BmcSpec, keyring: Keyring) -> ApplyOutcome:
    """Give an applied machine another BMC and keep the rest of its declaration: what a changed
    rufio Machine or Secret does to the Hardware whose bmcRef names it."""
    declared = bmc.model_dump(mode="json", exclude={"password"})
    password = bmc.password.get_secret_value() if bmc.password else None
    old_password = (
        keyring.decrypt(machine.bmc_password_encrypted) if machine.bmc_password_encrypted else None
    )
    if machine.applied.get("spec", {}).get("bmc") == declared and old_password == password:
        return "unchanged"
    machine = lock(session, machine)
    if MachineState(machine.state) in BUSY_STATES:
        raise Conflict(
            f"machine {machine.name} is {machine.state}; its BMC changes wait until its workflow"
            " ends (or cancel it)",
            field="machine",
        )
    _write_bmc(machine, bmc, keyring)
    applied = dict(machine.applied)
    applied["spec"] = {**applied.get("spec", {}), "bmc": declared}
    machine.applied = applied
    session.flush()
    events.record(
        session,
        "machine.updated",
        machine_id=machine.id,
        machine_name=machine.name,
        source="bmc",
    )
    return "updated"


def discover_machine(session: Session, mac: str, attributes: dict[str, Any]) -> Machine:
    """Register a machine that booted into discovery, in state `new`, from what it reported.

    Only the booting MAC becomes an interface: the other NICs are the report's word, kept in
    `attributes`, and claim nothing an operator's apply would then be refused. A MAC already
    in the inventory is refused: that machine's install environment carries its own agent
    token. Discovering the same machine again (its earlier registration deleted) gives it the
    same name.
    """
    found = read_discovery(mac, attributes)
    taken = session.scalar(select(Interface).where(Interface.mac == found.mac))
    if taken is not None:
        owner = session.get(Machine, taken.machine_id)
        raise Conflict(
            f"MAC {taken.mac} belongs to machine {owner.name if owner else taken.machine_id};"
            " a known machine boots with its own agent token, not through discovery",
            field="mac",
        )
    if session.scalar(select(Machine.id).where(Machine.name == found.name)) is not None:
        raise Conflict(
            f"a machine named {found.name} exists without this MAC; delete or rename it",
            field="mac",
        )
    machine = Machine(
        id=uuid.uuid4().hex,
        name=found.name,
        state=MachineState.NEW.value,
        arch=found.arch,
        uefi=found.uefi,
        disks=list(found.disks),
        attributes=attributes,
        interfaces=[Interface(position=0, mac=found.mac)],
    )
    session.add(machine)
    session.flush()
    events.record(
        session,
        "machine.discovered",
        machine_id=machine.id,
        machine_name=machine.name,
        mac=mac,
        reported_nics=len(found.reported_macs),
        disks=len(found.disks),
    )
    return machine


def transition(
    session: Session,
    machine: Machine,
    event: MachineEvent,
    *,
    reason: str | None = None,
    workflow_id: str | None = None,
) -> None:
    before = MachineState(machine.state)
    try:
        after = LIFECYCLE.next(before, event)
    except IllegalTransition as exc:
        raise Conflict(f"machine {machine.name}: {exc}", field="state") from exc
    machine.state = after.value
    machine.state_reason = reason
    events.record(
        session,
        "machine.state",
        machine_id=machine.id,
        machine_name=machine.name,
        workflow_id=workflow_id,
        before=before.value,
        after=after.value,
        event=event.value,
        reason=reason,
    )


def mark_booted(session: Session, machine_id: str, reason: str) -> bool:
    """A provisioned machine's OS phoned home: it becomes active. False when it was in any other
    state (a repeated phone-home, or an OS the inventory did not provision), which stays."""
    machine = lock_machine(session, machine_id)
    if machine is None or machine.state != MachineState.PROVISIONED.value:
        return False
    transition(session, machine, MachineEvent.BOOTED, reason=reason)
    return True


def operator_transition(
    session: Session, machine: Machine, event_name: str, reason: str | None
) -> None:
    """Manual moves (maintenance, rescue, release...), never into or out of a workflow's hands."""
    try:
        event = MachineEvent(event_name)
    except ValueError:
        allowed = ", ".join(e.value for e in MachineEvent)
        raise Conflict(f"unknown event {event_name!r}; one of: {allowed}", field="event") from None
    if MachineState(machine.state) in BUSY_STATES or event in (
        MachineEvent.PROVISION,
        MachineEvent.DEPROVISION,
        MachineEvent.BOOTED,
    ):
        raise Conflict(
            f"machine {machine.name} is {machine.state}; use workflows (provision, deprovision,"
            " cancel) to move it",
            field="event",
        )
    transition(session, machine, event, reason=reason)


def set_netboot(machine: Machine, enabled: bool) -> None:
    for iface in machine.interfaces:
        iface.allow_pxe = enabled
        iface.allow_workflow = enabled


def delete_machine(session: Session, machine: Machine) -> None:
    if MachineState(machine.state) in BUSY_STATES:
        raise Conflict(
            f"machine {machine.name} is {machine.state}; cancel its workflow first", field="machine"
        )
    events.record(session, "machine.deleted", machine_id=machine.id, machine_name=machine.name)
    session.delete(machine)


def render_view(machine: Machine) -> dict[str, Any]:
    """The Tinkerbell-shaped Hardware object of this machine, for template rendering."""
    spec_fields = machine.applied.get("spec") or {}
    return hardware_view(
        name=machine.name,
        project=machine.project,
        labels=machine.labels,
        spec_fields=spec_fields,
        original_spec=machine.applied.get("hardware_spec"),
    )


def _bmc_public(machine: Machine) -> BmcPublic:
    options = dict(machine.bmc_options or {})
    port = options.pop("port", None)
    return BmcPublic(
        driver=machine.bmc_driver or "",
        address=machine.bmc_address or "",
        port=int(port) if port is not None else None,
        username=machine.bmc_username,
        has_password=machine.bmc_password_encrypted is not None,
        insecure_tls=bool(options.pop("insecure_tls", False)),
        options=options,
    )


def to_public(machine: Machine, active_workflow: str | None) -> MachinePublic:
    user_data = user_data_fields(machine.user_data)
    return MachinePublic(
        id=machine.id,
        name=machine.name,
        project=machine.project,
        project_id=machine.project_id,
        metro=machine.metro,
        labels=machine.labels,
        arch=machine.arch,
        uefi=machine.uefi,
        hostname=machine.hostname,
        state=machine.state,
        state_reason=machine.state_reason,
        interfaces=[
            InterfacePublic(
                mac=i.mac,
                ip=i.ip,
                netmask=i.netmask,
                gateway=i.gateway,
                nameservers=i.nameservers,
                hostname=i.hostname,
                vlan=i.vlan,
                allow_pxe=i.allow_pxe,
                allow_workflow=i.allow_workflow,
            )
            for i in machine.interfaces
        ],
        disks=machine.disks,
        bmc=_bmc_public(machine) if machine.bmc_driver else None,
        boot=BootPublic.model_validate(machine.boot) if machine.boot else None,
        attributes=machine.attributes,
        metadata=machine.instance_metadata,
        userData=user_data.get("userData"),
        userDataBase64=user_data.get("userDataBase64"),
        workflow=active_workflow,
        created_at=machine.created_at.isoformat(),
        updated_at=machine.updated_at.isoformat(),
    )
