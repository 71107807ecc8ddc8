"""The OpenAPI document as the server behaves: every status an operation can answer, each error
in the one shape (component `Error`; `MetalError` under /metal/v1), and who may call it
(`x-metalflow-access`: `public`, `authenticated`, or the action its requirement authorises:
`read`, `write`, `agent`, `hello`).

FastAPI declares a route's success and a list-shaped 422. The other statuses follow from what a
route is, so they are added here in one pass over the document rather than on every route: a
token (401, 403: api.limits decides which routes need one), a path parameter (404), a body (400,
413, 422), any parameter (422); CONFLICTS and EXTRA name what only some routes answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIRouter

from metalflow.api.errors import is_metal
from metalflow.api.limits import policy_for
from metalflow.services import ACCESS_ATTRIBUTE, AUTHENTICATED, current_principal

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error the server answers, in one shape.",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "object",
            "required": ["message", "field"],
            "properties": {
                "message": {"type": "string", "description": "what is wrong and how to fix it"},
                "field": {
                    "type": ["string", "null"],
                    "description": "the field at fault as a dotted path, e.g. body.attributes",
                },
                "errors": {
                    "type": "array",
                    "description": "a 422's every validation error (the first is above)",
                    "items": {
                        "type": "object",
                        "required": ["message", "field"],
                        "properties": {
                            "message": {"type": "string"},
                            "field": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        }
    },
}
METAL_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error under /metal/v1, in Equinix Metal's shape.",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "minItems": 1,
            "description": "what is wrong, each `FIELD: MESSAGE` when a field is at fault",
            "items": {"type": "string"},
        }
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
METAL_ERROR_REF = {"$ref": "#/components/schemas/MetalError"}
DESCRIPTIONS = {
    400: "Malformed request: a body that is not UTF-8 JSON, a value that cannot be read",
    401: "No token, or an unknown or revoked one",
    403: "The token may not do this, or the operation is switched off",
    404: "No such object (named in the path or the query)",
    409: "Refused by the object's current state, or by a concurrent change",
    413: "The body is over this route's limit; the message names it",
    416: "The Range is outside the file",
    422: "Invalid input; `field` names the first field at fault, `errors` lists them all",
}
FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
"""FastAPI's list-shaped 422, which the server no longer answers."""

CONFLICTS = frozenset(
    {
        ("post", "/api/v1/apply"),
        ("delete", "/api/v1/machines/{name}"),
        ("post", "/api/v1/machines/{name}/transition"),
        ("post", "/api/v1/machines/{name}/provision"),
        ("post", "/api/v1/machines/{name}/deprovision"),
        ("post", "/api/v1/machines/{name}/power"),
        ("post", "/api/v1/machines/{name}/boot-device"),
        ("post", "/api/v1/machines/{name}/bmc/probe"),
        ("post", "/api/v1/machines/{name}/bmc/media"),
        ("delete", "/api/v1/machines/{name}/bmc/media"),
        ("post", "/api/v1/power-jobs/{job_id}/cancel"),
        ("post", "/api/v1/workflows"),
        ("get", "/api/v1/workflows/{ref}"),
        ("delete", "/api/v1/workflows/{ref}"),
        ("post", "/api/v1/workflows/{ref}/cancel"),
        ("post", "/api/v1/workflows/{ref}/resume"),
        ("post", "/api/v1/workflows/{ref}/rerun"),
        ("post", "/api/v1/agent/discover"),
        ("post", "/api/v1/agent/actions/{attempt_id}/status"),
        ("post", "/api/v1/agent/actions/{attempt_id}/logs"),
        ("post", "/api/v1/ipam/prefixes"),
        ("post", "/api/v1/ipam/prefixes/{ref}/allocations"),
        ("delete", "/api/v1/ipam/prefixes/{ref}"),
        ("post", "/api/v1/users"),
        ("delete", "/api/v1/users/{user_id}"),
        ("post", "/api/v1/organizations"),
        ("delete", "/api/v1/organizations/{organization_id}"),
        ("post", "/api/v1/organizations/{organization_id}/members"),
        ("patch", "/api/v1/organizations/{organization_id}/members/{user_id}"),
        ("delete", "/api/v1/organizations/{organization_id}/members/{user_id}"),
        ("post", "/api/v1/organizations/{organization_id}/projects"),
        ("delete", "/api/v1/projects/{project_id}"),
        ("post", "/api/v1/projects/{project_id}/members"),
        ("patch", "/api/v1/projects/{project_id}/members/{user_id}"),
        ("delete", "/api/v1/projects/{project_id}/members/{user_id}"),
        ("post", "/metal/v1/projects/{id}/ips"),
        ("delete", "/metal/v1/ips/{id}"),
        ("post", "/metal/v1/devices/{id}/ips"),
        ("post", "/api/v1/hardware-reservations"),
        ("post", "/metal/v1/projects/{project_id}/devices"),
        ("put", "/metal/v1/devices/{device_id}"),
        ("patch", "/metal/v1/devices/{device_id}"),
        ("delete", "/metal/v1/devices/{device_id}"),
        ("post", "/metal/v1/devices/{device_id}/actions"),
        ("post", "/metal/v1/projects"),
        ("post", "/metal/v1/organizations/{organization_id}/projects"),
        ("put", "/metal/v1/projects/{project_id}"),
        ("patch", "/metal/v1/projects/{project_id}"),
        ("delete", "/metal/v1/projects/{project_id}"),
        ("post", "/api/v1/metros"),
        ("delete", "/api/v1/metros/{code}"),
        ("post", "/api/v1/plans"),
        ("delete", "/api/v1/plans/{slug}"),
        ("post", "/api/v1/operating-systems"),
        ("delete", "/api/v1/operating-systems/{slug}"),
    }
)
"""Operations whose services raise Conflict (a workflow ref's ambiguous prefix among them)."""
_BOOT_FILES = ("/boot/assets/{name}", "/boot/install/vmlinuz", "/boot/install/initrd.img")
EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/boot/auto.ipxe"): (400,),
    ("get", "/boot/{mac}.ipxe"): (400,),
    ("post", "/api/v1/agent/discover"): (403,),
    ("get", "/api/v1/workflows"): (404,),
    ("post", "/api/v1/workflows"): (404,),
    ("get", "/api/v1/agent/next"): (401,),
    ("post", "/api/v1/hardware-reservations"): (404,),
    **{(method, path): (403, 404, 416) for path in _BOOT_FILES for method in ("get", "head")},
}
"""Statuses some operations answer beyond what their kind implies (an agent's machine deleted
meanwhile is a 401 from the route itself)."""
FILE_CONTENT = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
FILE_RESPONSES: dict[str, Any] = {
    "200": {"description": "The file", "content": FILE_CONTENT},
    "206": {"description": "The Range asked for", "content": FILE_CONTENT},
    "304": {"description": "Unchanged since the ETag in If-None-Match"},
}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from what it is."""
    statuses = set(EXTRA.get((method, path), ()))
    parameters = operation.get("parameters", [])
    takes_body = "requestBody" in operation
    if policy_for(method.upper(), path).needs_token:
        statuses |= {401, 403}
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses.add(404)
    if takes_body:
        statuses |= {400, 413, 422}
    if parameters:
        statuses.add(422)
    if (method, path) in CONFLICTS:
        statuses.add(409)
    return statuses


def _error_response(status: int, *, metal: bool) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": METAL_ERROR_REF if metal else ERROR_REF}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    return response


def declare_errors(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every operation's error statuses and the Error schema; in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    schemas["MetalError"] = METAL_ERROR_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if path in _BOOT_FILES:
                responses.update(FILE_RESPONSES)
            for status in sorted(error_statuses(method, path, operation)):
                responses[str(status)] = _error_response(status, metal=is_metal(path))
    return document


def access_of(dependant: Dependant) -> str | None:
    """The access a route's dependencies require: its requirement's action, else
    `authenticated` when it only asks who the caller is, else None."""
    found: str | None = None
    for dependency in dependant.dependencies:
        marked = getattr(dependency.call, ACCESS_ATTRIBUTE, None)
        if isinstance(marked, str):
            return marked
        if dependency.call is current_principal:
            found = AUTHENTICATED
        found = access_of(dependency) or found
    return found


def declare_access(
    document: dict[str, Any], routes: Iterable[tuple[str, APIRoute]]
) -> dict[str, Any]:
    """Every operation's `x-metalflow-access`, from its route (path prefix, route); a route with
    none is left without it, which the access matrix test refuses."""
    for prefix, route in routes:
        path = prefix + route.path_format
        item = document.get("paths", {}).get(path, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is None:
                continue
            if not policy_for(method, path).needs_token:
                operation["x-metalflow-access"] = "public"
            elif (access := access_of(route.dependant)) is not None:
                operation["x-metalflow-access"] = access
    return document


def install_openapi(app: FastAPI, mounted: Sequence[tuple[str, APIRouter]]) -> None:
    """`app.openapi()` answers the declared document, built once; `mounted` are the routers the
    app includes, each with the prefix it is included under."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            routes = [
                *(("", route) for route in app.routes if isinstance(route, APIRoute)),
                *(
                    (prefix, route)
                    for prefix, router in mounted
                    for route in router.routes
                    if isinstance(route, APIRoute)
                ),
            ]
            app.openapi_schema = declare_access(declare_errors(generate()), routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
