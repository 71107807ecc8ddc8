"""The metadata service over HTTP: EC2 paths, the Equinix-style document, NoCloud files,
phone-home. Who is asking is the request's source address, matched against every address of
every machine in the in-memory index (`X-Forwarded-For` only from `--metadata-trusted-proxy`
networks); an unknown caller gets a 404, a log line with the reason and an event. One machine
can never read another's metadata: nothing in a request names the machine.

Served on its own port (`--metadata-port`, 50061 as Hegel's) and, with `--metadata-on-api-port`,
on the API port too; `PortGate` keeps each port to its own paths.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import yaml
from anyio import to_thread
from fastapi import APIRouter, Request, Response

from metalflow.api.deps import Reader, Services
from metalflow.boot.index import MachineView
from metalflow.boot.recorder import UNKNOWN_CALLERS
from metalflow.boot.router import base_url
from metalflow.inventory import service as inventory
from metalflow.metadata import ec2, equinix
from metalflow.metadata.instance import Instance
from metalflow.metadata.netconfig import network_config

router = APIRouter(tags=["metadata"])
log = logging.getLogger("metalflow.metadata")

METADATA_PREFIXES = (
    *(f"/{version}" for version in ec2.VERSIONS),
    "/metadata",
    "/userdata",
    "/nocloud",
    "/phone-home",
    "/events",
    "/instances",
)
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"


def is_metadata_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in METADATA_PREFIXES)


def caller_address(
    request: Request, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str | None:
    """The address the request is from: the peer, or the last untrusted hop of
    X-Forwarded-For when the peer is a trusted proxy."""
    if request.client is None:
        return None
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded is None or not any(peer in network for network in trusted):
        return str(_unmapped(peer))
    for hop in reversed([part.strip() for part in forwarded.split(",")]):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return None
        if not any(address in network for network in trusted):
            return str(_unmapped(address))
    return None


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """::ffff:192.0.2.11 (a dual-stack socket's view of an IPv4 peer) is 192.0.2.11."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(slots=True)
class Caller:
    """The machine a request comes from, with what the index built for its OS."""

    view: MachineView
    instance: Instance
    tree: ec2.Directory


def _machine(request: Request, services: Services) -> Caller | None:
    """The caller: by the secret in `/instances/TOKEN/...`, else by its source address."""
    token = request.path_params.get("token")
    address = caller_address(request, services.settings.metadata_trusted_networks)
    if token is not None:
        view = _by_token(services, str(token))
        reason = "the instance token is not (or no longer) valid"
    else:
        view = services.boot_index.by_address(address) if address is not None else None
        reason = "no machine has this address" if address is not None else "no usable address"
    if view is None or view.instance is None or view.ec2_tree is None:
        path = _shown_path(request)
        log.info(
            "event=metadata.unknown_caller peer=%s address=%s path=%s reason=%s",
            request.client.host if request.client else None,
            address,
            path,
            reason,
        )
        services.boot_events.record(
            "metadata.unknown_caller",
            None,
            UNKNOWN_CALLERS,
            address=address,
            path=path[:200],
            reason=reason,
        )
        return None
    return Caller(view, view.instance, view.ec2_tree)


def _shown_path(request: Request) -> str:
    """The request path with an instance token blanked: it is a secret, not for logs."""
    token = request.path_params.get("token")
    return request.url.path.replace(str(token), "TOKEN") if token else request.url.path


def _by_token(services: Services, token: str) -> MachineView | None:
    parsed = services.keyring.parse_metadata_token(token)
    view = services.boot_index.by_id(parsed[0]) if parsed is not None else None
    if view is None or parsed is None or view.agent_token_generation != parsed[1]:
        return None
    return view


def _not_found(reason: str) -> Response:
    return Response(f"{reason}\n", status_code=404, media_type=TEXT)


UNKNOWN = "no machine in inventory has the address this request comes from (or the token)"


@router.put("/latest/api/token")
async def imds_token(request: Request) -> Response:
    """IMDSv2: a session token, accepted (not required) on every later request."""
    ttl = request.headers.get(TOKEN_TTL_HEADER, "")
    if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
        return Response(
            f"{TOKEN_TTL_HEADER} must be 1..{MAX_TOKEN_TTL}\n", status_code=400, media_type=TEXT
        )
    return Response(secrets.token_urlsafe(32), media_type=TEXT, headers={TOKEN_TTL_HEADER: ttl})


def _ec2(request: Request, path: str) -> Response:
    services: Services = request.app.state.services
    found = _machine(request, services)
    if found is None:
        return _not_found(UNKNOWN)
    body = ec2.lookup(found.tree, path)
    if body is None:
        return _not_found(f"{path or '/'}: not found")
    media = OCTETS if path.strip("/") == "user-data" else TEXT
    return Response(body, media_type=media)


@router.get("/2009-04-04", include_in_schema=False)
@router.get("/2009-04-04/", include_in_schema=False)
@router.get("/latest", include_in_schema=False)
@router.get("/latest/", include_in_schema=False)
@router.get("/instances/{token}/2009-04-04/", include_in_schema=False)
@router.get("/instances/{token}/latest/", include_in_schema=False)
async def ec2_root(request: Request) -> Response:
    return _ec2(request, "")


@router.get("/2009-04-04/{path:path}", include_in_schema=False)
@router.get("/latest/{path:path}", include_in_schema=False)
@router.get("/instances/{token}/2009-04-04/{path:path}", include_in_schema=False)
@router.get("/instances/{token}/latest/{path:path}", include_in_schema=False)
async def ec2_path(request: Request, path: str) -> Response:
    return _ec2(request, path)


def _api_url(request: Request, services: Services) -> str:
    """The API's URL as this caller reaches the server: the Host it sent, at the API port."""
    host = request.headers.get("host")
    name = urllib.parse.urlsplit(f"//{host}").hostname if host else None
    if name is None:
        return base_url(services.settings, host)
    name = f"[{name}]" if ":" in name else name
    return base_url(services.settings, f"{name}:{services.settings.http_port}")


def _urls(request: Request, services: Services) -> equinix.Urls:
    api = _api_url(request, services)
    own = f"{request.url.scheme}://{request.headers.get('host') or request.url.netloc}"
    token = request.path_params.get("token")
    if token is not None:
        own = f"{own}/instances/{token}"
    return equinix.Urls(api=api, phone_home=f"{own}/phone-home", user_state=f"{own}/events")


@router.get("/metadata")
@router.get("/instances/{token}/metadata")
async def equinix_metadata(request: Request) -> Response:
    services: Services = request.app.state.services
    found = _machine(request, services)
    if found is None:
        return _not_found(UNKNOWN)
    document = equinix.document(found.instance, _urls(request, services))
    return Response(json.dumps(document), media_type="application/json")


@router.get("/userdata")
@router.get("/instances/{token}/userdata")
async def equinix_userdata(request: Request) -> Response:
    services: Services = request.app.state.services
    found = _machine(request, services)
    if found is None:
        return _not_found(UNKNOWN)
    if found.instance.user_data is None:
        return _not_found("this machine has no user-data")
    return Response(found.instance.user_data, media_type=OCTETS)


@router.get("/nocloud/{name}")
@router.get("/instances/{token}/nocloud/{name}")
async def nocloud(request: Request, name: str) -> Response:
    """NoCloud's files (`ds=nocloud-net;s=http://HOST:50061/nocloud/`), and the network config
    a writefile action can drop into a cidata partition."""
    services: Services = request.app.state.services
    found = _machine(request, services)
    if found is None:
        return _not_found(UNKNOWN)
    instance = found.instance
    if name == "meta-data":
        text = yaml.safe_dump(
            {"instance-id": instance.id, "local-hostname": instance.hostname}, sort_keys=False
        )
        return Response(text, media_type=TEXT)
    if name == "user-data":
        return Response(instance.user_data or b"", media_type=OCTETS)
    if name == "vendor-data":
        return Response(b"", media_type=TEXT)
    if name == "network-config":
        return Response(yaml.safe_dump(network_config(instance), sort_keys=False), media_type=TEXT)
    return _not_found(f"nocloud/{name}: not found")


@router.post("/phone-home")
@router.post("/events")
@router.post("/instances/{token}/phone-home")
@router.post("/instances/{token}/events")
async def phone_home(request: Request) -> Response:
    """The installed OS is up: an event on the machine (cloud-init's phone_home module posts
    a form; the Equinix user_state_url gets JSON; both are kept, bounded, in the event)."""
    services: Services = request.app.state.services
    found = _machine(request, services)
    if found is None:
        return _not_found(UNKNOWN)
    body = (await request.body())[:4096].decode(errors="replace")
    view = found.view
    kind = (
        "metadata.phone_home" if request.url.path.endswith("/phone-home") else "metadata.user_state"
    )
    services.boot_events.record(kind, view, kind, body=body)
    log.info("event=%s machine=%s", kind, view.name)
    if kind == "metadata.phone_home":
        address = caller_address(request, services.settings.metadata_trusted_networks)
        await to_thread.run_sync(_mark_booted, services, view.id, f"phoned home from {address}")
    return Response(status_code=204)


def _mark_booted(services: Services, machine_id: str, reason: str) -> None:
    with services.db.write() as session:
        inventory.mark_booted(session, machine_id, reason)


@router.get("/api/v1/machines/{name}/metadata-url", tags=["machines"])
def metadata_url(name: str, request: Request, _: Reader) -> dict[str, str]:
    """The machine's secret metadata URL, for an OS that cannot be known by its address."""
    services: Services = request.app.state.services
    with services.db.read() as session:
        machine = inventory.get_machine(session, name)
        token = services.keyring.metadata_token(machine.id, machine.agent_token_generation)
    api = urllib.parse.urlsplit(_api_url(request, services))
    port = services.settings.metadata_port or services.settings.http_port
    return {"url": f"{api.scheme}://{api.hostname}:{port}/instances/{token}/", "token": token}


class PortGate:
    """ASGI middleware: the metadata port serves only metadata paths; the API port serves them
    only when asked to. A machine's OS talking to port 50061 never reaches the API."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        metadata_port: int,
        on_api_port: bool,
    ) -> None:
        self.app = app
        self.metadata_port = metadata_port
        self.on_api_port = on_api_port

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_metadata_port = server is not None and server[1] == self.metadata_port
            wanted = is_metadata_path(scope["path"])
            if wanted != on_metadata_port and not (wanted and self.on_api_port):
                response = Response("not found on this port\n", status_code=404, media_type=TEXT)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
