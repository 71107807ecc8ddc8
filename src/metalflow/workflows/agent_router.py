"""The agent protocol (docs/agent-protocol.md): hello, long-poll for the next action, report.

Identified by the machine's agent token or by the run token that hello hands out in exchange for
the boot token of an iPXE script; `authorize` lets a token reach only its own machine.
`discover` is the one call without a token: it is how an unknown machine gets one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.db.base import utcnow
from metalflow.inventory import service as inventory
from metalflow.inventory.discovery import (
    caller_address,
    mac_mismatch,
    network_allows,
    retry_after_header,
)
from metalflow.inventory.schemas import normalize_mac
from metalflow.inventory.tables import Interface, Machine
from metalflow.services import Agent, HelloCaller, Services, ServicesDep
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.tokens import Refused, hash_agent_key
from metalflow.workflows import protocol
from metalflow.workflows.schemas import (
    Assignment,
    Discovered,
    HelloAnswer,
    LogsReceived,
    Ping,
    StatusAnswer,
)
from metalflow.workflows.states import ActionState

router = APIRouter(prefix="/agent", tags=["agent"])
log = logging.getLogger("metalflow.workflows.agent")
MAX_WAIT = 300.0
MAX_ATTRIBUTES_BYTES = 256 * 1024


def _machine(session: Session, principal: Principal, *, lock: bool = False) -> Machine:
    """The caller's machine; with lock, its row lock is taken (see inventory.lock_machine).

    Authentication checked that it existed; it may have been deleted since.
    """
    machine_id = principal.machine_id or ""
    if lock:
        machine = inventory.lock_machine(session, machine_id)
    else:
        machine = session.get(Machine, machine_id)
    if machine is None:
        raise HTTPException(401, detail={"message": "machine deleted", "field": None})
    return machine


class Hello(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mac: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    agent_version: str | None = Field(default=None, max_length=100)

    @field_validator("attributes")
    @classmethod
    def _attributes_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value))
        if size > MAX_ATTRIBUTES_BYTES:
            raise ValueError(
                f"attributes are {size} bytes as JSON; the limit is {MAX_ATTRIBUTES_BYTES}"
            )
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        return normalize_mac(value)


class AgentHello(Hello):
    key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{32,128}$",
        description="with a boot token: a random secret the agent keeps for this boot; the same"
        " boot token is exchanged again only together with it",
    )


def _remote(request: Request) -> str:
    return request.client.host if request.client else "-"


@router.post("/hello", response_model=HelloAnswer)
def hello(
    body: AgentHello, request: Request, services: ServicesDep, principal: HelloCaller
) -> HelloAnswer:
    """Hello; with a boot token, also its exchange: the answer's `token` is the run token."""
    services.metrics.agent_requests.labels("hello").inc()
    boot = principal.boot
    refused: Refused | None = None
    with services.db.write() as session:
        machine = _machine(session, principal, lock=True)
        token: str | None = None
        if boot is not None:
            key_hash = hash_agent_key(body.key) if body.key else None
            exchanged = protocol.exchange_boot_token(
                session, machine, boot, key_hash, remote=_remote(request), now=time.time()
            )
            if isinstance(exchanged, Refused):
                refused = exchanged
            else:
                token = services.keyring.run_token(exchanged)
        if refused is None:
            protocol.hello(session, machine, body.mac, body.attributes)
        answer = HelloAnswer(machine=machine.name, id=machine.id, state=machine.state, token=token)
    if refused is not None:
        raise HTTPException(
            401,
            detail={
                "message": f"boot token refused: {refused.reason}",
                "field": "workflow" if refused.waiting else "authorization",
            },
            headers={"WWW-Authenticate": "Bearer"},
        )
    return answer


DISCOVER_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "discovery is off, the caller's network may not discover, or `mac` is"
        " not the MAC metalflow's DHCP saw the caller boot with"
    },
    409: {"description": "the MAC (or the name) is already in the inventory"},
    429: {"description": "too many discoveries from this address or overall; see Retry-After"},
}


def _refuse(
    services: Services,
    reason: str,
    status: int,
    message: str,
    field: str | None,
    headers: dict[str, str] | None = None,
) -> HTTPException:
    services.metrics.discovery_refused.labels(reason).inc()
    return HTTPException(status, detail={"message": message, "field": field}, headers=headers)


def _handed_out(session: Session, caller: str | None, mac: str) -> list[tuple[str, str]]:
    """What metalflow gave the caller's address or this MAC: live pool leases (the table, so
    that an API process without the DHCP server sees them too) and inventory reservations."""
    now = utcnow()
    conditions = [DhcpLease.mac == mac]
    if caller is not None:
        conditions.append(DhcpLease.address == caller)
    leases = session.execute(
        select(DhcpLease.mac, DhcpLease.address, DhcpLease.expires_at).where(or_(*conditions))
    )
    pairs = [(lease_mac, address) for lease_mac, address, until in leases if until > now]
    if caller is not None:
        reserved = session.scalars(select(Interface.mac).where(Interface.ip == caller))
        pairs.extend((iface_mac, caller) for iface_mac in reserved)
    return pairs


async def _admitted_caller(request: Request, services: ServicesDep) -> str | None:
    """The caller's address, once discovery is on for it and within the rates; a dependency,
    so that a refused caller's body is never validated."""
    services.metrics.agent_requests.labels("discover").inc()
    settings = services.settings
    if not settings.discovery:
        raise _refuse(
            services,
            "off",
            403,
            "discovery is off; start metalflow up with --discovery to register unknown machines",
            None,
        )
    caller = caller_address(request.client.host if request.client else None)
    if not network_allows(caller, settings.discovery_allowed_networks):
        raise _refuse(
            services,
            "network",
            403,
            f"discovery is not allowed from {caller or 'this caller'}; it is allowed from"
            f" {', '.join(settings.discovery_networks)} (--discovery-networks)",
            None,
        )
    refused = services.discovery_gate.admit(caller or "", time.monotonic())
    if refused is not None:
        per_address = refused.reason == "rate_address"
        limit = settings.discovery_rate_per_address if per_address else settings.discovery_rate
        wait = retry_after_header(refused.retry_after)
        raise _refuse(
            services,
            refused.reason,
            429,
            f"too many discoveries from {'this address' if per_address else 'all addresses'}"
            f" (the limit is {limit} a minute); retry after {wait} s",
            None,
            headers={"Retry-After": wait},
        )
    return caller


@router.post("/discover", status_code=201, response_model=Discovered, responses=DISCOVER_RESPONSES)
def discover(
    body: Hello,
    services: ServicesDep,
    caller: Annotated[str | None, Depends(_admitted_caller)],
) -> Discovered:
    """An unknown machine's agent registers it and receives its agent token.

    Unauthenticated, as MAAS enlistment and Ironic inspection are: the machine has no
    credentials yet. It is accepted only while discovery is on, from the allowed networks,
    within the rate limits, for the MAC metalflow's DHCP saw the caller boot with (where it
    gave the caller its address), and never for a MAC the inventory already has (see
    inventory.discover_machine).
    """
    with services.db.read() as session:
        mismatch = mac_mismatch(body.mac, caller, _handed_out(session, caller, body.mac))
    if mismatch is not None:
        log.warning("event=discovery.refused reason=mac caller=%s mac=%s", caller, body.mac)
        raise _refuse(services, "mac", 403, mismatch, "mac")
    with services.db.write() as session:
        machine = inventory.discover_machine(session, body.mac, body.attributes)
        token = services.keyring.agent_token(machine.id, machine.agent_token_generation)
        return Discovered(machine=machine.name, id=machine.id, state=machine.state, token=token)


def _try_next(services: Services, principal: Principal) -> protocol.NextAction:
    """A machine with no workflow to run is answered by one read; only work takes the write
    path (on SQLite, the write lock)."""
    with services.db.read() as session:
        if not protocol.has_active_workflow(session, principal.machine_id or ""):
            return None
    with services.db.write() as session:
        machine = _machine(session, principal, lock=True)
        return protocol.next_action(session, machine, utcnow())


@router.get(
    "/next",
    responses={
        200: {"model": Assignment, "description": "the attempt to run"},
        204: {"description": "no action to run now"},
    },
)
async def next_action(
    request: Request,
    services: ServicesDep,
    principal: Agent,
    wait: float = Query(0.0, ge=0, le=MAX_WAIT, description="seconds to hold the request"),
) -> Response:
    """The next action to run, as soon as there is one within `wait` seconds; else 204."""
    services.metrics.agent_requests.labels("next").inc()
    give_up = time.monotonic() + wait
    with services.bus.watch_machine(principal.machine_id or "") as woken:
        while True:
            woken.clear()
            found = await run_in_threadpool(_try_next, services, principal)
            if isinstance(found, dict):
                return Response(
                    content=_json(found), media_type="application/json", status_code=200
                )
            remaining = give_up - time.monotonic()
            if remaining <= 0 or services.bus.closed or await request.is_disconnected():
                return Response(status_code=204)
            if isinstance(found, dt.datetime):
                remaining = min(remaining, max(0.0, (found - utcnow()).total_seconds()) + 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), remaining)


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class StatusReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["running", "success", "failed", "timeout"]
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    message: str | None = Field(default=None, max_length=4096)


AttemptId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the attempt id from next")]


@router.post("/actions/{attempt_id}/status", response_model=StatusAnswer)
def report_status(
    attempt_id: AttemptId, body: StatusReport, services: ServicesDep, principal: Agent
) -> StatusAnswer:
    services.metrics.agent_requests.labels("status").inc()
    if body.status == "running":
        with services.db.read() as session:
            attempt = protocol.attempt_for(session, _machine(session, principal), attempt_id)
            workflow_state = attempt.action.workflow.state
            return StatusAnswer(id=attempt.id, state=attempt.state, workflow_state=workflow_state)
    with services.db.write() as session:
        machine = _machine(session, principal, lock=True)
        attempt = protocol.report(
            session,
            machine,
            attempt_id,
            status=ActionState(body.status.upper()),
            exit_code=body.exit_code,
            message=body.message,
            now=utcnow(),
        )
        workflow = attempt.action.workflow
        return StatusAnswer(id=attempt.id, state=attempt.state, workflow_state=workflow.state)


class LogLines(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(0, ge=0, description="index of the first line among this attempt's lines")
    lines: list[str] = Field(max_length=1000)


@router.post("/actions/{attempt_id}/logs", response_model=LogsReceived)
def append_logs(
    attempt_id: AttemptId, body: LogLines, services: ServicesDep, principal: Agent
) -> LogsReceived:
    services.metrics.agent_requests.labels("logs").inc()
    with services.db.write() as session:
        machine = _machine(session, principal, lock=True)
        received = protocol.append_logs(
            session, machine, attempt_id, seq=body.seq, lines=[line[:4096] for line in body.lines]
        )
    return LogsReceived(received=received)


@router.get("/ping", response_model=Ping)
def ping(services: ServicesDep, principal: Agent) -> Ping:
    """A no-op round trip with the same authentication, for measuring protocol overhead."""
    services.metrics.agent_requests.labels("ping").inc()
    return Ping(machine=principal.machine_id or "")
