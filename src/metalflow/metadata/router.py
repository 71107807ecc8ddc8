"""The metadata service on the API port: `GET /api/v1/machines/NAME/metadata-url` (an API
route), and `MetadataGate`, which keeps the metadata paths off the API port unless
`--metadata-on-api-port` asks for them there, answered by the same MetadataService as the
metadata port's own server (metadata/wire.py)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Request, Response

from metalflow.inventory import service as inventory
from metalflow.metadata.schemas import MetadataUrl
from metalflow.metadata.service import (
    MAX_POST_BODY,
    Answer,
    MetadataRequest,
    MetadataService,
    api_url,
    is_metadata_path,
    text,
)
from metalflow.services import ProjectReader, Services
from metalflow.tenancy import policy

router = APIRouter(tags=["metadata"])

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@router.get("/api/v1/machines/{name}/metadata-url", tags=["machines"])
def metadata_url(name: str, request: Request, principal: ProjectReader) -> MetadataUrl:
    """The machine's secret metadata URL, for an OS that cannot be known by its address; a
    tenant's for the machines of its projects."""
    services: Services = request.app.state.services
    with services.db.read() as session:
        machine = inventory.get_machine_for(session, name, principal, policy.Action.READ)
        token = services.keyring.metadata_token(machine.id, machine.agent_token_generation)
    api = urllib.parse.urlsplit(api_url(services, request.headers.get("host")))
    port = services.settings.metadata_port or services.settings.http_port
    return MetadataUrl(url=f"{api.scheme}://{api.hostname}:{port}/instances/{token}/", token=token)


class MetadataGate:
    """ASGI middleware of the API port: metadata paths are a 404 there, or, with
    `--metadata-on-api-port`, answered by the metadata service."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], service: MetadataService
    ) -> None:
        self.app = app
        self.service = service
        self.on_api_port = service.services.settings.metadata_on_api_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_metadata_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not self.on_api_port:
            answer = text(404, "not found on this port")
        else:
            answer = await self._answer(scope, receive)
        headers = dict(answer.headers)
        if answer.status == 413:
            headers["Connection"] = "close"  # else the server reads the rest of the body
        response = Response(
            answer.body, status_code=answer.status, media_type=answer.content_type, headers=headers
        )
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        client = scope.get("client")
        server = scope.get("server")
        request = MetadataRequest(
            method=scope["method"],
            path=scope["path"],
            peer=str(client[0]) if client else None,
            host=headers.get(b"host"),
            forwarded_for=",".join(forwarded) if forwarded else None,
            token_ttl=headers.get(b"x-aws-ec2-metadata-token-ttl-seconds"),
            scheme=scope.get("scheme", "http"),
            local=f"{server[0]}:{server[1]}" if server else None,
        )
        if request.method != "POST":
            return self.service.answer(request)
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_POST_BODY:
                return text(413, f"the body is over {MAX_POST_BODY} bytes")
            if not message.get("more_body", False):
                break
        request.body = bytes(body)
        return await self.service.post(request)
