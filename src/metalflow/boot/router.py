"""Netboot over HTTP: each machine's iPXE script, the boot tree, the install environment.

No authentication: firmware cannot send a token. So the install script, the one that carries a
token, goes only to the address metalflow gave the MAC, and the token is a boot token of the
workflow's current start that expires after `--boot-token-ttl` and is exchanged once for the
run's token (docs/agent-protocol.md, Identity). `--script-token agent` puts the machine's agent
token there instead and `--script-token-any-address` serves it to any caller, as Tinkerbell does.

Scripts are answered from the in-memory boot index, never with a database query; the one
exception is the DHCP lease of an interface without a reserved address, read only when such a
machine's install script is asked for (leases are committed before their ACK is sent, so the
table holds every address metalflow gave).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse
from sqlalchemy import select

from metalflow.boot.assets import boot_tree
from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.boot.ipxe import Caller, InstallEnvironment, choose_script
from metalflow.boot.tftp.tree import AccessViolation, FileNotFound
from metalflow.config import ScriptToken, Settings
from metalflow.db.engine import Database
from metalflow.errors import Forbidden, MetalflowError, NotFound
from metalflow.index.views import InterfaceView, MachineView
from metalflow.inventory.schemas import normalize_mac
from metalflow.recorder import UNKNOWN_CALLERS
from metalflow.services import Services, ServicesDep, get_services
from metalflow.tenancy.tokens import BootClaim
from metalflow.urls import base_url

router = APIRouter(prefix="/boot", tags=["boot"])
log = logging.getLogger("metalflow.boot.http")

KERNEL_ROUTE = "/install/vmlinuz"
INITRD_ROUTE = "/install/initrd.img"
MAX_RANGE_IN_EVENT = 64
"""A Range header is the client's text: cut before it goes into an event."""


def install_environment(settings: Settings, host_header: str | None) -> InstallEnvironment:
    """The settings every install script shares; kernel and initrd are served by this router."""
    url = base_url(settings, host_header)
    return InstallEnvironment(
        base_url=url,
        kernel_url=f"{url}{router.prefix}{KERNEL_ROUTE}" if settings.kernel else None,
        initrd_url=f"{url}{router.prefix}{INITRD_ROUTE}" if settings.initrd else None,
        console=settings.console,
        kernel_args=settings.kernel_args,
        discovery=settings.discovery,
    )


def _mac(value: str) -> str:
    try:
        return normalize_mac(value)
    except ValueError as exc:
        raise MetalflowError(str(exc), field="mac") from None


def _remote(request: Request) -> str:
    return request.client.host if request.client else "-"


def _caller_ipv4(request: Request) -> ipaddress.IPv4Address | None:
    """The caller's IPv4 address (also when it arrives IPv4-mapped over IPv6)."""
    try:
        address = ipaddress.ip_address(_remote(request))
    except ValueError:
        return None
    return address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else address


def _by_source_address(
    services: Services, request: Request
) -> tuple[MachineView, InterfaceView] | None:
    """The machine whose interface has the caller's IPv4 address (or IPv4-mapped IPv6)."""
    ipv4 = _caller_ipv4(request)
    return services.index.by_ip(ipv4) if ipv4 is not None else None


def _leased_address(db: Database, mac: str) -> ipaddress.IPv4Address | None:
    with db.read() as session:
        address = session.scalar(
            select(DhcpLease.address).where(
                DhcpLease.mac == mac, DhcpLease.expires_at > dt.datetime.now(dt.UTC)
            )
        )
    return ipaddress.IPv4Address(address) if address is not None else None


async def _caller(
    services: Services, request: Request, machine: MachineView | None, mac: str | None
) -> Caller:
    """Reads the lease only for an install script of an interface without a reserved address."""
    address = _caller_ipv4(request)
    if services.settings.script_token_any_address:
        return Caller(address, any_address=True)
    interface = machine.interface(mac) if machine is not None and mac is not None else None
    if (
        interface is None
        or interface.ip is not None
        or address is None
        or not (machine is not None and machine.has_active_workflow)
    ):
        return Caller(address)
    return Caller(address, await run_in_threadpool(_leased_address, services.db, interface.mac))


def _script_token(services: Services) -> Callable[[MachineView], str]:
    """The token an install script carries: a fresh boot token, or the agent token."""
    settings, keyring = services.settings, services.keyring
    if settings.script_token is ScriptToken.AGENT:
        return lambda view: keyring.agent_token(view.id, view.agent_token_generation)

    def boot_token(view: MachineView) -> str:
        if view.workflow_id is None:
            raise ValueError("no active workflow to make a boot token for")
        now = time.time()
        claim = BootClaim(
            view.id,
            view.workflow_id,
            view.workflow_start,
            int(now * 1000),
            int(now + settings.boot_token_ttl),
        )
        return keyring.boot_token(claim)

    return boot_token


async def _answer(
    services: Services, request: Request, machine: MachineView | None, mac: str | None
) -> PlainTextResponse:
    env = install_environment(services.settings, request.headers.get("host"))
    remote = _remote(request)
    caller = await _caller(services, request, machine, mac)
    decision = choose_script(machine, mac, env, _script_token(services), caller, remote)
    token: dict[str, object] = {}
    if decision.kind == "install" and machine is not None:
        token = {
            "token": services.settings.script_token.value,
            "workflow": machine.workflow_id,
            "start": machine.workflow_start,
        }
    services.boot_events.record(
        "boot.script",
        machine,
        f"{decision.kind}:{mac}:{remote}" if machine is not None else UNKNOWN_CALLERS,
        mac=mac,
        script=decision.kind,
        reason=decision.reason,
        remote=remote,
        **token,
    )
    repeated = services.boot_events.log_fold.check((mac, remote, decision.kind), time.monotonic())
    if repeated is not None:
        log.info(
            "event=boot.script mac=%s machine=%s machine_id=%s kind=%s remote=%s reason=%r"
            " repeated=%d",
            mac or "-",
            machine.name if machine else "-",
            machine.id if machine else "-",
            decision.kind,
            remote,
            decision.reason,
            repeated,
        )
    return PlainTextResponse(decision.text, headers={"Cache-Control": "no-store"})


@router.get("/auto.ipxe", response_class=PlainTextResponse)
async def auto_script(request: Request, mac: str | None = None) -> PlainTextResponse:
    """The script of the machine named by `?mac=`, else of the machine with the caller's
    address; a caller neither names gets an exit script asking who it is."""
    # Called, not declared as a dependency: FastAPI's dependency solving was a seventh of a
    # script request's cost in bench/ipxe_script.py.
    services = await get_services(request)
    if mac is not None:
        mac = _mac(mac)
        return await _answer(services, request, services.index.by_mac(mac), mac)
    found = _by_source_address(services, request)
    if found is None:
        return await _answer(services, request, None, None)
    machine, interface = found
    return await _answer(services, request, machine, interface.mac)


@router.get("/{mac}.ipxe", response_class=PlainTextResponse)
async def machine_script(mac: str, request: Request) -> PlainTextResponse:
    """The script for the machine with this MAC (aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff)."""
    # Called, not declared as a dependency: FastAPI's dependency solving was a seventh of a
    # script request's cost in bench/ipxe_script.py.
    services = await get_services(request)
    mac = _mac(mac)
    return await _answer(services, request, services.index.by_mac(mac), mac)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match asks for."""
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag.removeprefix("W/") in candidates


def _file(request: Request, path: Path) -> Response:
    """The file with Range, ETag and Last-Modified (FileResponse), plus If-None-Match → 304."""
    try:
        stat_result = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{path.name} disappeared while being served; retry", field="name") from None
    response = FileResponse(path, stat_result=stat_result)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, response.headers["etag"]):
        kept = {key: response.headers[key] for key in ("etag", "last-modified")}
        return Response(status_code=304, headers=kept)
    return response


@router.get("/assets/{name:path}")
@router.head("/assets/{name:path}")
async def asset(name: str, request: Request, services: ServicesDep) -> Response:
    """A file of the boot tree TFTP serves too: the iPXE binaries and `--boot-dir`.

    The tree is built per request (a few stat calls), so files dropped into the boot dir are
    served without a restart."""
    try:
        tree = boot_tree(services.settings)
    except (OSError, ValueError) as exc:
        log.error("event=boot.asset.tree_unavailable reason=%r", str(exc))
        raise NotFound("the boot tree is unavailable (see the server log)", field="name") from None
    # The reasons (real paths among them) go to the log only, as over TFTP: the caller is
    # unauthenticated.
    try:
        path = tree.resolve(name)
    except FileNotFound as exc:
        log.info(
            "event=boot.asset.missing name=%r remote=%s reason=%r",
            name,
            _remote(request),
            exc.reason,
        )
        raise NotFound(f"{name!r} is not in the boot tree", field="name") from None
    except AccessViolation as exc:
        log.info(
            "event=boot.asset.refused name=%r remote=%s reason=%r",
            name,
            _remote(request),
            exc.reason,
        )
        raise Forbidden(f"{name!r} is outside the boot tree or not a file", field="name") from None
    return _file(request, path)


def _install_file(
    request: Request, services: Services, name: str, path: Path | None, setting: str
) -> Response:
    """The install environment's kernel or initrd; each fetch is a `boot.asset` event, so a
    machine's events show how far its boot got."""
    if path is None:
        raise NotFound(f"install environment {name} not configured: set {setting}", field="name")
    if not path.is_file():
        raise NotFound(
            f"install environment {name}: {path} ({setting}) is not a file", field="name"
        )
    found = _by_source_address(services, request)
    if found is not None:
        services.boot_events.record(
            "boot.asset",
            found[0],
            name,
            name=name,
            range=(request.headers.get("range") or "full")[:MAX_RANGE_IN_EVENT],
            remote=_remote(request),
        )
    return _file(request, path)


@router.get(KERNEL_ROUTE)
@router.head(KERNEL_ROUTE)
async def install_kernel(request: Request, services: ServicesDep) -> Response:
    return _install_file(
        request, services, "vmlinuz", services.settings.kernel, "METALFLOW_KERNEL / --kernel"
    )


@router.get(INITRD_ROUTE)
@router.head(INITRD_ROUTE)
async def install_initrd(request: Request, services: ServicesDep) -> Response:
    return _install_file(
        request, services, "initrd.img", services.settings.initrd, "METALFLOW_INITRD / --initrd"
    )
