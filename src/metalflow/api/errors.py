"""One error shape for everything the API answers: `{"detail": {"message", "field"}}`, and under
`/metal/v1` Equinix Metal's, which its clients read: `{"errors": ["FIELD: MESSAGE", ...]}`.

metalflow's own errors have it; FastAPI's request validation (a list of pydantic errors), its
HTTPExceptions (a string or a dict) and Starlette's 404/405 are brought to it here. A validation
422 names the first error's field as a dotted path (`body.attributes`, `query.wait`,
`body.lines[3]`) and lists every error under `errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from metalflow.cloud.metal import METAL_PREFIX
from metalflow.errors import MetalflowError, validation_message

log = logging.getLogger("metalflow.api")

FASTAPI_BODY_ERROR = "There was an error parsing the body"
STATUS_MESSAGES = {
    404: "no such route; the API is described at /api/v1/openapi.json",
    405: "method not allowed here; the Allow header lists those that are",
    413: "the body is too large",
}
"""Messages for the errors Starlette raises with its reason phrase as the detail."""
SERVER_ERROR = "internal error; the server log has the details"
CONCURRENT_CHANGE = "a concurrent change conflicts with this one; retry"
LOST_RACE_STATES = frozenset({"40001", "40P01"})
"""PostgreSQL's serialization failure and deadlock: the transaction lost to another one (two
prefixes checked against each other's uncommitted rows at commit) and may simply be retried."""


def is_metal(path: str) -> bool:
    return path == METAL_PREFIX or path.startswith(f"{METAL_PREFIX}/")


def _metal_line(message: str, field: str | None) -> str:
    return f"{field}: {message}" if field else message


def error_body(
    message: str,
    field: str | None = None,
    errors: list[dict[str, str | None]] | None = None,
    *,
    metal: bool = False,
) -> dict[str, Any]:
    if metal:
        every = errors or [{"message": message, "field": field}]
        return {"errors": [_metal_line(e["message"] or "", e["field"]) for e in every]}
    detail: dict[str, Any] = {"message": message, "field": field}
    if errors is not None:
        detail["errors"] = errors
    return {"detail": detail}


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    *,
    errors: list[dict[str, str | None]] | None = None,
    headers: Mapping[str, str] | None = None,
    metal: bool = False,
) -> JSONResponse:
    """The error response (in Equinix's shape with `metal`); a 401 says which scheme to use
    (RFC 9110 requires it)."""
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(
        status_code=status,
        content=error_body(message, field, errors, metal=metal),
        headers=all_headers,
    )


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic location as the project writes fields: `body.lines[3]`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str | None]]:
    described: list[dict[str, str | None]] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            position = loc[1] if len(loc) > 1 else 0
            described.append(
                {"message": f"the body is not JSON: {reason} at byte {position}", "field": "body"}
            )
            continue
        described.append({"message": validation_message(error), "field": field_path(loc) or None})
    return described


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and route.methods:
            methods.update(route.methods)
    return sorted(methods)


def _metal(request: Request) -> bool:
    return is_metal(request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MetalflowError)
    async def metalflow_error(request: Request, exc: MetalflowError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.field, metal=_metal(request))

    @app.exception_handler(IntegrityError)
    async def integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
        """A uniqueness race the services' own checks lost to a concurrent request."""
        return error_response(409, CONCURRENT_CHANGE, metal=_metal(request))

    @app.exception_handler(OperationalError)
    async def operational_error(request: Request, exc: OperationalError) -> JSONResponse:
        if getattr(exc.orig, "sqlstate", None) in LOST_RACE_STATES:
            return error_response(409, CONCURRENT_CHANGE, metal=_metal(request))
        log.error("event=api.database_error path=%s", request.url.path, exc_info=exc)
        return error_response(500, SERVER_ERROR, metal=_metal(request))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        first = errors[0] if errors else {"message": "invalid request", "field": None}
        return error_response(
            422, first["message"] or "", first["field"], errors=errors, metal=_metal(request)
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        detail = exc.detail
        if isinstance(detail, dict) and "message" in detail:
            return error_response(
                exc.status_code,
                str(detail["message"]),
                detail.get("field"),
                headers=headers,
                metal=_metal(request),
            )
        if detail == FASTAPI_BODY_ERROR:
            message, field = "the body is not UTF-8 JSON", "body"
        else:
            message, field = STATUS_MESSAGES.get(exc.status_code, str(detail)), None
        return error_response(
            exc.status_code, message, field, headers=headers, metal=_metal(request)
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        """Still a bug; the traceback goes to the server log (Starlette logs it)."""
        return error_response(500, SERVER_ERROR, metal=_metal(request))
