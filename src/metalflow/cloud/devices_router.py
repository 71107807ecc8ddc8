"""Devices on the Metal API: create in a project, list, read, update, delete, actions."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from metalflow.cloud import devices
from metalflow.cloud.device_states import DeviceState
from metalflow.cloud.devices_schemas import (
    AvailableAction,
    DeviceAction,
    DeviceAddress,
    DeviceCreate,
    DeviceEvent,
    DeviceEventList,
    DeviceList,
    DevicePublic,
    DeviceUpdate,
    MetroBrief,
    OperatingSystemBrief,
    PlanBrief,
)
from metalflow.cloud.metal import Fields, FieldsDep, Page, PageDep, href, link
from metalflow.cloud.tables import Device
from metalflow.events import Event
from metalflow.index.instance import Address
from metalflow.services import (
    ProjectReader,
    ProjectWriter,
    ServicesDep,
    note_audit,
    require,
)
from metalflow.tenancy import policy
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.auth import Principal

router = APIRouter(tags=["metal-devices"])
ACTIONS = ("power_on", "power_off", "reboot", "reinstall")


def _project(
    session: Session, principal: Principal, project_id: str, action: policy.Action
) -> None:
    require(principal, action, project_id, tenancy.project_missing(project_id))
    tenancy.get_project(session, project_id)


def _device(
    session: Session, principal: Principal, device_id: str, action: policy.Action
) -> Device:
    device = devices.get_device(session, device_id)
    require(principal, action, device.project_id, devices.device_missing(device_id))
    return device


def _address(address: Address, device_id: str) -> DeviceAddress:
    parent = address.parent
    network = ipaddress.ip_interface(f"{address.address}/{address.cidr}").network
    return DeviceAddress(
        id=address.id,
        address=address.address,
        address_family=address.family,
        cidr=address.cidr,
        netmask=address.netmask,
        network=str(network.network_address),
        gateway=address.gateway,
        public=address.public,
        management=address.management,
        enabled=True,
        global_ip=False,
        manageable=True,
        assigned_to=link(f"/devices/{device_id}"),
        parent_block=None
        if parent is None
        else {"network": parent.network, "netmask": parent.netmask, "cidr": parent.cidr},
        href=href(f"/ips/{address.id}") if address.id else None,
    )


def public(view: devices.DeviceView, fields: Fields) -> DevicePublic:
    d = view.device
    state = view.state
    plan, system, metro = view.plan, view.system, view.metro
    document: dict[str, Any] = {
        "id": d.id,
        "short_id": d.short_id,
        "hostname": d.hostname,
        "description": d.description,
        "state": state.value,
        "tags": list(d.tags),
        "billing_cycle": "hourly",
        "created_at": d.created_at.isoformat(),
        "updated_at": d.updated_at.isoformat(),
        "locked": d.locked,
        "always_pxe": d.always_pxe,
        "ipxe_script_url": d.ipxe_script_url,
        "userdata": d.userdata,
        "customdata": dict(d.customdata),
        "operating_system": OperatingSystemBrief(
            id=system.id,
            slug=system.slug,
            name=system.name,
            distro=system.distro,
            version=system.version,
            provisionable_on=list(system.provisionable_on),
            preinstallable=False,
            licensed=False,
            href=href(f"/operating-systems/{system.id}"),
        ),
        "plan": PlanBrief(
            id=plan.id,
            slug=plan.slug,
            name=plan.name,
            class_=plan.plan_class,
            line=plan.line,
            description=plan.description,
            specs=dict(plan.specs),
            href=href(f"/plans/{plan.id}"),
        ),
        "metro": None
        if metro is None
        else MetroBrief(
            id=metro.id,
            code=metro.code,
            name=metro.name,
            country=metro.country,
            href=href(f"/locations/metros/{metro.id}"),
        ),
        "facility": None,
        "project": link(f"/projects/{d.project_id}"),
        "project_lite": link(f"/projects/{d.project_id}"),
        "ip_addresses": [_address(block, d.id) for block in view.addresses],
        "ssh_keys": [link(f"/ssh-keys/{key_id}") for key_id in d.ssh_key_ids],
        "volumes": [],
        "hardware_reservation": link(f"/hardware-reservations/{d.hardware_reservation_id}")
        if d.hardware_reservation_id
        else None,
        "actions": [AvailableAction(type=a, name=a.replace("_", " ")) for a in ACTIONS]
        if state is not DeviceState.DEPROVISIONING
        else [],
        "provisioning_percentage": float(view.percentage),
        "network_ports": [],
        "spot_instance": False,
        "iqn": f"iqn.2026-12.net.metalflow:device.{d.id}",
        "href": href(f"/devices/{d.id}"),
    }
    return DevicePublic(**fields.keep(document))


@router.post(
    "/projects/{project_id}/devices",
    status_code=201,
    response_model=DevicePublic,
    response_model_exclude_unset=True,
)
def create_device(
    project_id: str,
    body: DeviceCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    fields: FieldsDep,
) -> DevicePublic:
    """A ready machine of the plan in the metro becomes the project's device and starts
    installing; a 409 when none is free (nothing is taken then)."""
    with services.db.write() as session:
        _project(session, principal, project_id, policy.Action.PROVISION)
        device = devices.create_device(
            session, services.settings, project_id, body, requested_by=principal.name
        )
        note_audit(
            request,
            "device",
            device.id,
            project_id=project_id,
            summary={
                "hostname": device.hostname,
                "plan": body.plan,
                "metro": body.metro,
                "operating_system": body.operating_system,
            },
        )
        (view,) = devices.views(session, [device])
        return public(view, fields)


@router.get(
    "/projects/{project_id}/devices", response_model=DeviceList, response_model_exclude_unset=True
)
def list_project_devices(
    project_id: str,
    services: ServicesDep,
    principal: ProjectReader,
    page: PageDep,
    fields: FieldsDep,
) -> DeviceList:
    with services.db.read() as session:
        _project(session, principal, project_id, policy.Action.READ)
        found, total = devices.list_devices(session, [project_id], page.offset, page.size)
        listed = [public(view, fields) for view in devices.views(session, found)]
    return DeviceList(devices=listed, meta=page.meta(f"/projects/{project_id}/devices", total))


@router.get(
    "/devices/{device_id}",
    response_model=DevicePublic,
    response_model_exclude_unset=True,
)
def get_device(
    device_id: str, services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> DevicePublic:
    with services.db.read() as session:
        device = _device(session, principal, device_id, policy.Action.READ)
        (view,) = devices.views(session, [device])
        return public(view, fields)


def _update(
    device_id: str,
    body: DeviceUpdate,
    request: Request,
    services: ServicesDep,
    principal: Principal,
    fields: Fields,
) -> DevicePublic:
    with services.db.write() as session:
        device = _device(session, principal, device_id, policy.Action.WRITE)
        changes = devices.update_device(session, device, body)
        note_audit(request, "device", device.id, project_id=device.project_id, summary=changes)
        (view,) = devices.views(session, [device])
        return public(view, fields)


@router.put(
    "/devices/{device_id}",
    response_model=DevicePublic,
    response_model_exclude_unset=True,
)
def put_device(
    device_id: str,
    body: DeviceUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    fields: FieldsDep,
) -> DevicePublic:
    """equinix-metal updates with PUT, packet-python with PATCH: both change the fields sent."""
    return _update(device_id, body, request, services, principal, fields)


@router.patch(
    "/devices/{device_id}", response_model=DevicePublic, response_model_exclude_unset=True
)
def patch_device(
    device_id: str,
    body: DeviceUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    fields: FieldsDep,
) -> DevicePublic:
    return _update(device_id, body, request, services, principal, fields)


@router.delete("/devices/{device_id}", status_code=204)
def delete_device(
    device_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """The wipe starts; the device is gone from lists once it has run (state deprovisioning
    until then)."""
    with services.db.write() as session:
        device = _device(session, principal, device_id, policy.Action.DELETE)
        devices.delete_device(session, device, requested_by=principal.name)
        note_audit(request, "device", device.id, project_id=device.project_id)
    return Response(status_code=204)


@router.post("/devices/{device_id}/actions", status_code=202, response_class=Response)
def device_action(
    device_id: str,
    body: DeviceAction,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> Response:
    action = policy.Action.PROVISION if body.type == "reinstall" else policy.Action.POWER
    with services.db.write() as session:
        device = _device(session, principal, device_id, action)
        devices.act(session, device, body, requested_by=principal.name)
        note_audit(
            request,
            "device",
            device.id,
            project_id=device.project_id,
            summary={"action": body.type, "operating_system": body.operating_system},
        )
    return Response(status_code=202)


EVENT_WORDS = ("name", "action", "after", "operation", "reason", "template", "operating_system")
"""Data fields that say what an event was about, in this order, in its `interpolated` text."""


def _event(event: Event, device_ids: dict[str, str]) -> DeviceEvent:
    words = [str(event.data[key]) for key in EVENT_WORDS if event.data.get(key) is not None]
    device_id = device_ids.get(event.machine_id or "")
    failed = event.kind.endswith(("failed", ".timeout", "refused"))
    return DeviceEvent(
        id=str(event.id),
        type=event.kind,
        state="failed" if failed else "success",
        body=event.kind,
        interpolated=" ".join([event.kind, *words]),
        relationships=[link(f"/devices/{device_id}")] if device_id else [],
        created_at=event.time.isoformat(),
        href=href(f"/events/{event.id}"),
    )


def _event_list(session: Session, found: list[Device], page: Page, path: str) -> DeviceEventList:
    listed, total = devices.device_events(session, found, page.offset, page.size)
    by_machine = {d.machine_id: d.id for d in found if d.machine_id is not None}
    return DeviceEventList(
        events=[_event(event, by_machine) for event in listed], meta=page.meta(path, total)
    )


@router.get(
    "/devices/{device_id}/events", response_model=DeviceEventList, response_model_exclude_unset=True
)
def list_device_events(
    device_id: str, services: ServicesDep, principal: ProjectReader, page: PageDep
) -> DeviceEventList:
    with services.db.read() as session:
        device = _device(session, principal, device_id, policy.Action.READ)
        return _event_list(session, [device], page, f"/devices/{device_id}/events")


@router.get(
    "/projects/{project_id}/events",
    response_model=DeviceEventList,
    response_model_exclude_unset=True,
)
def list_project_events(
    project_id: str, services: ServicesDep, principal: ProjectReader, page: PageDep
) -> DeviceEventList:
    """The events of the project's devices."""
    with services.db.read() as session:
        _project(session, principal, project_id, policy.Action.READ)
        found = devices.project_devices(session, project_id)
        return _event_list(session, found, page, f"/projects/{project_id}/events")
