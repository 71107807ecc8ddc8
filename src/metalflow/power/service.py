"""Power jobs in the database: queued, claimed by one process (at most one job per BMC at a
time), finished with each step's outcome; and each machine's power state as last reported.

A job is claimed under the machine's row lock (PostgreSQL; SQLite serialises writes anyway),
so several `metalflow up` processes on one database never run two jobs on one BMC. A running
job's process writes a heartbeat; a job whose heartbeat went stale is failed (its process is
gone), never run twice.
"""

from __future__ import annotations

import datetime as dt
import statistics
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.db.base import utcnow
from metalflow.errors import Conflict, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.power.driver import Bmc, PowerState, known_driver
from metalflow.power.schemas import PowerJobPublic
from metalflow.power.states import POWER_JOB, PowerJobEvent, PowerJobState
from metalflow.power.steps import JobOutcome, Step
from metalflow.power.tables import PowerJob
from metalflow.tenancy.secrets import Keyring

UNFINISHED = (PowerJobState.QUEUED, PowerJobState.RUNNING)
JOB_OPTIONS = frozenset({"power_timeout", "soft_off_timeout", "poll_interval", "boot_device"})
"""`bmc.options` keys that the job layer reads; the rest are the driver's own."""
OFF_WORDS = frozenset({"false", "off", "no", "0"})
STALE_AFTER = dt.timedelta(minutes=2)
"""A running job's heartbeat is written at least every poll; this is many polls missed."""
TYPICAL_OF_LAST = 20


def bmc_of(machine: Machine, keyring: Keyring) -> Bmc | None:
    """The machine's BMC as its driver needs it, the password decrypted; None without one."""
    if not machine.bmc_driver:
        return None
    password = (
        keyring.decrypt(machine.bmc_password_encrypted) if machine.bmc_password_encrypted else None
    )
    return bmc_from(
        machine.bmc_driver,
        machine.bmc_address,
        machine.bmc_username,
        password,
        machine.bmc_options or {},
        power_state=machine.power_state,
    )


def bmc_from(
    driver: str,
    address: str | None,
    username: str | None,
    password: str | None,
    stored_options: Mapping[str, Any],
    *,
    power_state: str | None = None,
) -> Bmc:
    """The `Bmc` of these stored BMC columns: what a job's driver gets, and what apply checks."""
    options = dict(stored_options)
    host, port = address or "", options.pop("port", None)
    if port is None and host.count(":") == 1 and "://" not in host:
        host, _, port_text = host.partition(":")
        port = int(port_text) if port_text.isdigit() else None
    factory = known_driver(driver)
    if factory is not None and not factory.syncs_state:
        options.setdefault("state", power_state or "off")  # what was last asked: no BMC to read
    return Bmc(
        driver=driver,
        host=host,
        port=int(port) if port is not None else None,
        username=username,
        password=password,
        insecure_tls=bool(options.pop("insecure_tls", False)),
        options={str(key): str(value) for key, value in options.items() if key not in JOB_OPTIONS},
    )


def sets_boot_device(options: dict[str, Any]) -> bool:
    """False when `bmc.options.boot_device` is off: the machine boots its NIC first and
    metalflow's iPXE script decides (for BMCs that refuse boot-device commands)."""
    return str(options.get("boot_device", "true")).lower() not in OFF_WORDS


def enqueue(
    session: Session,
    machine: Machine,
    operation: str,
    steps: tuple[Step, ...] | list[Step],
    *,
    workflow_id: str | None = None,
    requested_by: str | None = None,
) -> PowerJob:
    if not machine.bmc_driver:
        raise Conflict(
            f"machine {machine.name} has no BMC; add spec.bmc (driver, address, credentials)",
            field="bmc",
        )
    job = PowerJob(
        id=uuid.uuid4().hex,
        machine_id=machine.id,
        operation=operation,
        steps=[step.as_dict() for step in steps],
        state=PowerJobState.QUEUED,
        results=[],
        workflow_id=workflow_id,
        requested_by=requested_by,
    )
    session.add(job)
    session.flush()
    _emit(
        session,
        job,
        machine,
        "power.job.queued",
        operation=operation,
        steps=[step.describe() for step in steps],
    )
    return job


def claim(session: Session, *, skip_locked: bool, exclude: set[str]) -> PowerJob | None:
    """The oldest queued job whose machine runs none, now running in this process."""
    busy = select(PowerJob.machine_id).where(PowerJob.state == PowerJobState.RUNNING)
    query = (
        select(PowerJob.id, PowerJob.machine_id)
        .where(PowerJob.state == PowerJobState.QUEUED, PowerJob.machine_id.not_in(busy))
        .order_by(PowerJob.created_at)
        .limit(50)
    )
    for job_id, machine_id in session.execute(query).all():
        if machine_id in exclude:
            continue
        machine = inventory.lock_machine(session, machine_id, skip_locked=skip_locked)
        if machine is None:
            continue
        job = session.get(PowerJob, job_id, populate_existing=True)
        running = session.scalar(
            select(PowerJob.id).where(
                PowerJob.machine_id == machine_id, PowerJob.state == PowerJobState.RUNNING
            )
        )
        if job is None or job.state != PowerJobState.QUEUED or running is not None:
            continue
        now = utcnow()
        _move(job, PowerJobEvent.START)
        job.started_at, job.heartbeat_at = now, now
        _emit(session, job, machine, "power.job.started", operation=job.operation)
        return job
    return None


def heartbeat(session: Session, job_id: str) -> str | None:
    """Write the heartbeat; the job's state, so a cancelled job is seen by its runner."""
    job = session.get(PowerJob, job_id)
    if job is None:
        return None
    if job.state == PowerJobState.RUNNING:
        job.heartbeat_at = utcnow()
    return job.state


def report(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> None:
    """A step's event, on the machine's event log."""
    job = session.get(PowerJob, job_id)
    if job is None:
        return
    job.heartbeat_at = utcnow()
    machine = session.get(Machine, job.machine_id)
    _emit(session, job, machine, kind, **data)


def _move(job: PowerJob, event: PowerJobEvent) -> None:
    job.state = POWER_JOB.next(PowerJobState(job.state), event).value


def _ending(outcome: JobOutcome) -> PowerJobEvent:
    if outcome.ok:
        return PowerJobEvent.SUCCEED
    return PowerJobEvent.CANCEL if outcome.message == "cancelled" else PowerJobEvent.FAIL


def finish(session: Session, job_id: str, outcome: JobOutcome) -> PowerJob | None:
    job = session.get(PowerJob, job_id)
    if job is None:
        return None
    machine = inventory.lock_machine(session, job.machine_id)
    if job.state == PowerJobState.RUNNING:
        _move(job, _ending(outcome))
    job.message = outcome.message
    job.finished_at = utcnow()
    job.heartbeat_at = None
    job.results = [
        {
            "what": result.step.describe(),
            "ok": result.ok,
            "message": result.message,
            "seconds": round(result.seconds, 3),
            "retries": result.retries,
        }
        for result in outcome.steps
    ]
    if machine is not None and outcome.power_state is not None:
        set_power_state(session, machine, outcome.power_state, None)
    _emit(
        session,
        job,
        machine,
        f"power.job.{job.state}",
        operation=job.operation,
        message=job.message,
    )
    return job


def cancel(session: Session, job: PowerJob) -> PowerJob:
    if job.state not in UNFINISHED:
        raise Conflict(f"power job {job.id} is {job.state}; nothing to cancel", field="state")
    was = job.state
    _move(job, PowerJobEvent.CANCEL)
    if was == PowerJobState.QUEUED:
        job.finished_at = utcnow()
        job.message = "cancelled before it started"
    machine = session.get(Machine, job.machine_id)
    _emit(session, job, machine, "power.job.cancelled", operation=job.operation)
    return job


def fail_stale(session: Session, now: dt.datetime) -> int:
    """Running jobs whose process stopped writing heartbeats: failed, never run twice."""
    stale = session.scalars(
        select(PowerJob).where(
            PowerJob.state == PowerJobState.RUNNING, PowerJob.heartbeat_at < now - STALE_AFTER
        )
    ).all()
    for job in stale:
        _move(job, PowerJobEvent.FAIL)
        job.message = "the metalflow process running this job stopped; ask again"
        job.finished_at = now
        _emit(
            session,
            job,
            session.get(Machine, job.machine_id),
            "power.job.failed",
            operation=job.operation,
            message=job.message,
        )
    return len(stale)


def set_power_state(
    session: Session, machine: Machine, state: PowerState | None, error: str | None
) -> bool:
    """Record what the BMC reported; an event when the state changed. True when it did."""
    machine.power_state_at = utcnow()
    machine.power_error = error
    if state is None or machine.power_state == state.value:
        return False
    before = machine.power_state
    machine.power_state = state.value
    events.record(
        session,
        "power.changed",
        machine_id=machine.id,
        machine_name=machine.name,
        before=before,
        after=state.value,
    )
    return True


def get_job(session: Session, job_id: str) -> PowerJob:
    job = session.get(PowerJob, job_id)
    if job is None:
        raise NotFound(f"power job {job_id!r} not found", field="job")
    return job


def jobs_of(session: Session, machine: Machine, limit: int = 20) -> list[PowerJob]:
    return list(
        session.scalars(
            select(PowerJob)
            .where(PowerJob.machine_id == machine.id)
            .order_by(PowerJob.created_at.desc())
            .limit(limit)
        )
    )


def typical_seconds(jobs: list[PowerJob]) -> dict[str, float]:
    """Median seconds of each kind of step over the machine's recent successful jobs: how long
    this BMC usually takes (a step far slower than its usual is worth a look)."""
    seen: dict[str, list[float]] = {}
    for job in jobs[:TYPICAL_OF_LAST]:
        for result in job.results or []:
            if result.get("ok") and not str(result.get("message", "")).startswith("already"):
                seen.setdefault(str(result["what"]), []).append(float(result["seconds"]))
    return {what: round(statistics.median(values), 3) for what, values in sorted(seen.items())}


def to_public(job: PowerJob, machine_name: str) -> PowerJobPublic:
    return PowerJobPublic(
        id=job.id,
        machine=machine_name,
        operation=job.operation,
        state=job.state,
        message=job.message,
        steps=job.steps,
        results=job.results,
        workflow=job.workflow_id,
        requested_by=job.requested_by,
        created_at=job.created_at.isoformat(),
        started_at=job.started_at.isoformat() if job.started_at else None,
        finished_at=job.finished_at.isoformat() if job.finished_at else None,
    )


def _emit(session: Session, job: PowerJob, machine: Machine | None, kind: str, **data: Any) -> None:
    events.record(
        session,
        kind,
        machine_id=job.machine_id,
        machine_name=machine.name if machine is not None else None,
        workflow_id=job.workflow_id,
        job=job.id,
        **data,
    )
