"""Runs queued power jobs in `metalflow up`, and syncs every BMC's power state periodically.

Drivers block (pyghmi, sushy), so each job runs in a worker thread, at most `workers` at once
and one per BMC; the loop wakes on a `power.job.queued` event (from this process or, through
the PostgreSQL relay, another) and once a second in case one was missed. The sync reads each
machine's state every `interval` seconds with the same bound on threads, skipping machines
with a job running, and records changes as `power.changed` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio import to_thread
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.events import Event
from metalflow.inventory.tables import Machine
from metalflow.power import service
from metalflow.power.driver import (
    Bmc,
    Driver,
    PowerError,
    PowerState,
    driver_class,
    known_driver,
)
from metalflow.power.states import PowerJobState
from metalflow.power.steps import JobOutcome, Limits, Runner, step_from
from metalflow.power.tables import PowerJob
from metalflow.tenancy.secrets import Keyring

log = logging.getLogger("metalflow.power")
IDLE_WAKE_SECONDS = 1.0
STALE_CHECK_SECONDS = 30.0


def limits_for(driver: str, options: dict[str, Any]) -> Limits:
    """A machine's own timeouts (`bmc.options.power_timeout`, `soft_off_timeout`), else its
    driver's, else the defaults."""
    factory = known_driver(driver)
    own = factory.default_timeout if factory is not None else None
    defaults = Limits() if own is None else Limits(timeout=own)
    return Limits(
        timeout=float(options.get("power_timeout", defaults.timeout)),
        soft_off_timeout=float(options.get("soft_off_timeout", defaults.soft_off_timeout)),
        poll_interval=float(options.get("poll_interval", defaults.poll_interval)),
    )


def _syncs(driver: str) -> bool:
    factory = known_driver(driver)
    return factory is None or factory.syncs_state


def open_driver(machine: Machine, keyring: Keyring) -> Driver:
    bmc = service.bmc_of(machine, keyring)
    if bmc is None:
        raise PowerError("none", machine.name, "connect", "the machine has no BMC")
    try:
        return driver_class(bmc.driver)(bmc)
    except ValueError as exc:  # an unknown driver, or settings its validate refuses
        raise PowerError(bmc.driver, bmc.host, "connect", str(exc)) from None


JobFinished = Callable[[Session, PowerJob], None]
"""Told of every job that ended, in the transaction that ends it (a workflow waits on some)."""


class PowerRunner:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        on_job_finished: JobFinished,
        workers: int = 32,
        sync_interval: float = 60.0,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.on_job_finished = on_job_finished
        self.limiter = anyio.CapacityLimiter(workers)
        self.sync_interval = sync_interval
        self.running: set[str] = set()
        """Machines with a job running in this process."""
        self._wake = asyncio.Event()
        self._sync_drivers: dict[str, tuple[Bmc, Driver]] = {}
        """One open driver per machine for the sync's reads, kept while the BMC's settings stay
        the same: a new sushy client costs 4 requests and ~4 ms of CPU per read, a kept one 1."""

    def on_event(self, event: Event) -> None:
        if event.kind == "power.job.queued":
            self._wake.set()

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._jobs)
            if self.sync_interval > 0:
                group.start_soon(self._sync_forever)

    async def _jobs(self) -> None:
        loop = asyncio.get_running_loop()
        next_stale_check = 0.0
        async with anyio.create_task_group() as group:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_WAKE_SECONDS)
                self._wake.clear()
                try:
                    if loop.time() >= next_stale_check:
                        next_stale_check = loop.time() + STALE_CHECK_SECONDS
                        await to_thread.run_sync(self._fail_stale)
                    while self.limiter.available_tokens > 0:
                        claimed = await to_thread.run_sync(self._claim)
                        if claimed is None:
                            break
                        self.running.add(claimed[1])
                        group.start_soon(self._run_job, *claimed)
                except Exception:
                    log.exception("event=power.runner_failed")
                    await asyncio.sleep(1.0)

    def _fail_stale(self) -> None:
        with self.db.write() as session:
            service.fail_stale(session, utcnow())

    def _claim(self) -> tuple[str, str] | None:
        with self.db.write() as session:
            job = service.claim(
                session, skip_locked=not self.db.is_sqlite, exclude=set(self.running)
            )
            return (job.id, job.machine_id) if job is not None else None

    async def _run_job(self, job_id: str, machine_id: str) -> None:
        try:
            async with self.limiter:
                outcome = await to_thread.run_sync(self._execute, job_id, machine_id)
            await to_thread.run_sync(self._finish, job_id, outcome)
        except Exception:
            log.exception("event=power.job_crashed job=%s", job_id)
            await to_thread.run_sync(
                self._finish, job_id, JobOutcome(False, "metalflow failed running the job")
            )
        finally:
            self.running.discard(machine_id)

    def _execute(self, job_id: str, machine_id: str) -> JobOutcome:
        with self.db.read() as session:
            job = session.get(PowerJob, job_id)
            machine = session.get(Machine, machine_id)
            if job is None or machine is None:
                return JobOutcome(False, "the machine was deleted")
            steps = [step_from(raw) for raw in job.steps]
            options = dict(machine.bmc_options or {})
            if job.operation != "boot-device" and not service.sets_boot_device(options):
                steps = [step for step in steps if step.boot is None]
            limits = limits_for(machine.bmc_driver or "", options)
            try:
                driver = open_driver(machine, self.keyring)
            except PowerError as exc:
                return JobOutcome(False, exc.message)
        state = {"last": 0.0, "cancelled": False}

        def report(kind: str, data: dict[str, Any]) -> None:
            with self.db.write() as session:
                service.report(session, job_id, kind, data)
            state["last"] = time.monotonic()

        def cancelled() -> bool:
            if time.monotonic() - float(state["last"]) >= limits.poll_interval:
                with self.db.write() as session:
                    state["cancelled"] = service.heartbeat(session, job_id) != PowerJobState.RUNNING
                state["last"] = time.monotonic()
            return bool(state["cancelled"])

        try:
            return Runner(driver, limits, report, cancelled).run(steps)
        finally:
            with contextlib.suppress(Exception):
                driver.close()

    def _finish(self, job_id: str, outcome: JobOutcome) -> None:
        with self.db.write() as session:
            job = service.finish(session, job_id, outcome)
            if job is not None:
                self.on_job_finished(session, job)
        log.info(
            "event=power.job.finished job=%s ok=%s message=%s", job_id, outcome.ok, outcome.message
        )

    # periodic sync

    async def _sync_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                changed = await self.sync_once()
                log.info(
                    "event=power.sync.cycle changed=%d seconds=%.2f",
                    changed,
                    time.monotonic() - started,
                )
            except Exception:
                log.exception("event=power.sync_failed")
            await asyncio.sleep(max(0.0, self.sync_interval - (time.monotonic() - started)))

    async def sync_once(self) -> int:
        """Read every BMC's power state once; the number of machines whose state changed.
        A change (or a new reason it cannot be read) is written at once, as an event; the
        time each state was read is written for all in one statement at the end."""
        known = await to_thread.run_sync(self._sync_candidates)
        for gone in set(self._sync_drivers) - set(known):  # deleted, or a job runs on it
            await to_thread.run_sync(self._drop_driver, gone)
        read: list[str] = []
        changed = 0

        async def one(machine_id: str, before: tuple[str | None, str | None]) -> None:
            nonlocal changed
            async with self.limiter:
                if machine_id in self.running:
                    return
                state, error = await to_thread.run_sync(self._read_state, machine_id)
            if error is None:
                read.append(machine_id)
            differs = (state.value if state else before[0], error) != before
            if differs and await to_thread.run_sync(self._record, machine_id, state, error):
                changed += 1

        async with anyio.create_task_group() as group:
            for machine_id, before in known.items():
                group.start_soon(one, machine_id, before)
        if read:
            await to_thread.run_sync(self._stamp, read)
        return changed

    def _sync_candidates(self) -> dict[str, tuple[str | None, str | None]]:
        """Machines to read, with the state and error last recorded: those whose driver reads
        a BMC (or is unknown, so that the reason it cannot be read is recorded)."""
        with self.db.read() as session:
            used = session.scalars(
                select(Machine.bmc_driver).where(Machine.bmc_driver.is_not(None)).distinct()
            )
            read = [name for name in used if name is not None and _syncs(name)]
            busy = select(PowerJob.machine_id).where(PowerJob.state == PowerJobState.RUNNING)
            query = select(Machine.id, Machine.power_state, Machine.power_error).where(
                Machine.bmc_driver.in_(read), Machine.id.not_in(busy)
            )
            return {row[0]: (row[1], row[2]) for row in session.execute(query)}

    def _read_state(self, machine_id: str) -> tuple[PowerState | None, str | None]:
        with self.db.read() as session:
            machine = session.get(Machine, machine_id)
            if machine is None:
                return None, None
            bmc = service.bmc_of(machine, self.keyring)
            kept = self._sync_drivers.get(machine_id)
            if kept is not None and kept[0] != bmc:
                self._drop_driver(machine_id)
                kept = None
            if kept is None:
                try:
                    kept = (bmc, open_driver(machine, self.keyring)) if bmc else None
                except PowerError as exc:
                    return None, exc.message
                if kept is None:
                    return None, None
                self._sync_drivers[machine_id] = kept
        try:
            return kept[1].power_state(), None
        except PowerError as exc:
            self._drop_driver(machine_id)  # a fresh session next time
            return None, exc.message

    def _drop_driver(self, machine_id: str) -> None:
        kept = self._sync_drivers.pop(machine_id, None)
        if kept is not None:
            with contextlib.suppress(Exception):
                kept[1].close()

    def _record(self, machine_id: str, state: PowerState | None, error: str | None) -> bool:
        with self.db.write() as session:
            machine = session.get(Machine, machine_id)
            if machine is None:
                return False
            if error is not None and machine.power_error != error:
                log.warning("event=power.sync.unreadable machine=%s reason=%s", machine.name, error)
            return service.set_power_state(session, machine, state, error)

    def _stamp(self, machine_ids: list[str]) -> None:
        with self.db.write() as session:
            session.execute(
                update(Machine)
                .where(Machine.id.in_(machine_ids))
                .values(power_state_at=utcnow(), power_error=None)
            )
