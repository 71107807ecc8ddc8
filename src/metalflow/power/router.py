"""BMC API: power jobs (on, off, soft-off, cycle, reset; boot device), the machine's power
state, and direct BMC calls that change nothing lasting (probe, virtual media).

A tenant powers and reads the machines of its projects (policy.Action.POWER, READ) and sees
their jobs since the machine was assigned to it; probe and virtual media stay the provider's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.errors import Conflict, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.power import service
from metalflow.power.driver import BootDevice, BootRequest, Driver, PowerAction, PowerError
from metalflow.power.runner import open_driver
from metalflow.power.schemas import MediaResult, PowerJobPublic, PowerStatus, ProbeResult
from metalflow.power.states import PowerJobState
from metalflow.power.steps import Step
from metalflow.power.tables import PowerJob
from metalflow.services import (
    ProjectReader,
    ProjectWriter,
    Services,
    ServicesDep,
    Writer,
    note_audit,
    require,
)
from metalflow.tenancy import policy
from metalflow.tenancy.auth import Principal

router = APIRouter(tags=["power"])
MAX_WAIT = 600.0
BMC_CALL_SECONDS = 60.0
T = TypeVar("T")


class PowerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: PowerAction


class BootDeviceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: BootDevice
    persistent: bool = False
    efi: bool = True


class MediaRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str


async def _job_answer(services: Services, job_id: str, wait: float) -> PowerJobPublic:
    """The job, once it ended or `wait` seconds passed."""
    give_up = time.monotonic() + wait
    while True:
        public = await to_thread.run_sync(_job_public, services, job_id)
        if public.state not in service.UNFINISHED or time.monotonic() >= give_up:
            return public
        await asyncio.sleep(min(0.2, max(0.0, give_up - time.monotonic())))


def _job_public(services: Services, job_id: str) -> PowerJobPublic:
    with services.db.read() as session:
        job = service.get_job(session, job_id)
        machine = inventory.get_machine_by_id(session, job.machine_id)
        return service.to_public(job, machine.name)


def _missing_job(job_id: str) -> NotFound:
    return NotFound(f"power job {job_id!r} not found", field="job")


def _job_for(
    session: Session, job_id: str, principal: Principal, action: policy.Action
) -> tuple[PowerJob, Machine]:
    """The job and its machine, if `principal` may do `action` on them; a tenant asking for
    a job of another project's machine, or of its machine before it had it, gets the 404 of a
    job that does not exist."""
    job = service.get_job(session, job_id)
    machine = inventory.get_machine_by_id(session, job.machine_id)
    require(principal, action, machine.project_id, missing=_missing_job(job_id))
    since = inventory.tenant_since(principal, machine)
    if since is not None and job.created_at < since:
        raise _missing_job(job_id)
    return job, machine


def _check_job(services: Services, job_id: str, principal: Principal) -> None:
    with services.db.read() as session:
        _job_for(session, job_id, principal, policy.Action.READ)


def _enqueue(
    services: Services,
    request: Request,
    name: str,
    operation: str,
    step: Step,
    principal: Principal,
) -> str:
    with services.db.write() as session:
        machine = inventory.get_machine_for(session, name, principal, policy.Action.POWER)
        machine = inventory.lock(session, machine)
        job = service.enqueue(session, machine, operation, (step,), requested_by=principal.name)
        note_audit(
            request,
            "power_job",
            job.id,
            project_id=machine.project_id,
            summary={"machine": machine.name, "operation": operation},
        )
        return job.id


@router.post("/machines/{name}/power", status_code=202)
async def power(
    name: str,
    body: PowerRequest,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    wait: float = Query(0.0, ge=0, le=MAX_WAIT, description="seconds to wait for the job"),
) -> PowerJobPublic:
    """A power job; verified by polling the BMC until it reports the wanted state."""
    job_id = await to_thread.run_sync(
        _enqueue, services, request, name, str(body.action), Step(power=body.action), principal
    )
    return await _job_answer(services, job_id, wait)


@router.post("/machines/{name}/boot-device", status_code=202)
async def boot_device(
    name: str,
    body: BootDeviceRequest,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    wait: float = Query(0.0, ge=0, le=MAX_WAIT, description="seconds to wait for the job"),
) -> PowerJobPublic:
    step = Step(boot=BootRequest(body.device, persistent=body.persistent, efi=body.efi))
    job_id = await to_thread.run_sync(
        _enqueue, services, request, name, "boot-device", step, principal
    )
    return await _job_answer(services, job_id, wait)


@router.get("/machines/{name}/power")
def power_status(name: str, services: ServicesDep, principal: ProjectReader) -> PowerStatus:
    """The state as the BMC last reported it, when, why it could not be read, and how long
    this BMC's steps usually take."""
    with services.db.read() as session:
        machine = inventory.get_machine_for(session, name, principal, policy.Action.READ)
        since = inventory.tenant_since(principal, machine)
        jobs = service.jobs_of(session, machine)
        if since is not None:
            jobs = [job for job in jobs if job.created_at >= since]
        return PowerStatus(
            machine=machine.name,
            driver=machine.bmc_driver,
            state=machine.power_state,
            state_at=machine.power_state_at.isoformat() if machine.power_state_at else None,
            error=machine.power_error,
            typical_seconds=service.typical_seconds(
                [job for job in jobs if job.state == PowerJobState.SUCCEEDED]
            ),
            jobs=[service.to_public(job, machine.name) for job in jobs[:5]],
        )


@router.get("/power-jobs/{job_id}")
async def get_power_job(
    job_id: str,
    services: ServicesDep,
    principal: ProjectReader,
    wait: float = Query(0.0, ge=0, le=MAX_WAIT, description="seconds to wait for its end"),
) -> PowerJobPublic:
    await to_thread.run_sync(_check_job, services, job_id, principal)
    return await _job_answer(services, job_id, wait)


@router.post("/power-jobs/{job_id}/cancel")
def cancel_power_job(
    job_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> PowerJobPublic:
    with services.db.write() as session:
        job, machine = _job_for(session, job_id, principal, policy.Action.POWER)
        job = service.cancel(session, job)
        note_audit(
            request,
            "power_job",
            job.id,
            project_id=machine.project_id,
            summary={"machine": machine.name, "state": str(job.state)},
        )
        return service.to_public(job, machine.name)


def _direct(services: Services, name: str, call: Callable[[Driver], T]) -> T:
    """A BMC call outside the job queue; refused while a job runs on that BMC."""
    with services.db.read() as session:
        machine = inventory.get_machine(session, name)
        running = session.scalar(
            select(PowerJob.id).where(
                PowerJob.machine_id == machine.id, PowerJob.state == PowerJobState.RUNNING
            )
        )
        if running is not None:
            raise Conflict(
                f"power job {running} is running on this BMC; try again when it ends",
                field="machine",
            )
        if not machine.bmc_driver:
            raise Conflict(f"machine {machine.name} has no BMC", field="bmc")
        try:
            driver = open_driver(machine, services.keyring)
        except PowerError as exc:
            raise Conflict(str(exc), field="bmc") from None
    try:
        return call(driver)
    except PowerError as exc:
        raise Conflict(str(exc), field="bmc") from None
    finally:
        driver.close()


async def _bounded(services: Services, name: str, call: Callable[[Driver], T]) -> T:
    try:
        return await asyncio.wait_for(
            to_thread.run_sync(_direct, services, name, call), BMC_CALL_SECONDS
        )
    except TimeoutError:
        raise Conflict(
            f"the BMC of {name} did not answer within {BMC_CALL_SECONDS:.0f}s", field="bmc"
        ) from None


@router.post("/machines/{name}/bmc/probe")
async def probe(name: str, services: ServicesDep, _: Writer) -> ProbeResult:
    """What this BMC supports: power, boot device, virtual media, and its own details."""

    def call(driver: Driver) -> ProbeResult:
        found = driver.probe()
        return ProbeResult(
            machine=name,
            driver=found.driver,
            power=found.power,
            boot_device=found.boot_device,
            virtual_media=found.virtual_media,
            details=dict(found.details),
        )

    return await _bounded(services, name, call)


@router.post("/machines/{name}/bmc/media")
async def insert_media(
    name: str, body: MediaRequest, services: ServicesDep, _: Writer
) -> MediaResult:
    def call(driver: Driver) -> MediaResult:
        driver.insert_media(body.url)
        return MediaResult(machine=name, media=body.url)

    return await _bounded(services, name, call)


@router.delete("/machines/{name}/bmc/media")
async def eject_media(name: str, services: ServicesDep, _: Writer) -> MediaResult:
    def call(driver: Driver) -> MediaResult:
        driver.eject_media()
        return MediaResult(machine=name, media=None)

    return await _bounded(services, name, call)
