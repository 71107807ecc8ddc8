"""The API port's edge: each route's body limit and its token are checked before the body is read.

FastAPI reads a request's whole body before it solves dependencies, so a token checked in a
dependency comes after the upload, and a size checked in a route after the buffering: one POST
without a token could make the server hold hundreds of megabytes. `RequestGuard` sits in front of
routing, as pure ASGI, and for every HTTP request:

1. refuses a `Content-Length` above the route's limit (413) before a byte of the body is read;
2. on routes that need a token, authenticates the `Authorization` (or `X-Auth-Token`) header (401
   otherwise) and leaves the principal on the scope for `services.current_principal`;
3. counts a chunked or unknown-length body while it arrives and refuses it (413) as soon as it
   passes the limit, and scans a JSON body's nesting as it arrives (422 past MAX_JSON_DEPTH:
   the parsers recurse, and 3,000 `[` exhausted the interpreter's stack);
4. answers a refusal itself, in the one error shape, with `Connection: close`, and gives the app
   an `http.disconnect`, so the rest of the body is never read.

Looked at: Starlette's RequestBodyLimitMiddleware (and FastAPI's `max_body_size`, built on it)
counts the body too, but as one limit per route declaration, after routing, with its own plain
text 413, without closing the connection (the server then reads and discards the rest of an
upload), and with no place to authenticate first; uvicorn bounds header sizes only. The JSON scan
is ours because the standard json module, which FastAPI parses with, has no depth limit.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from metalflow.api.errors import error_response, is_metal
from metalflow.apply.router import MAX_BODY as APPLY_MAX_BODY
from metalflow.cloud.metal import METAL_PREFIX
from metalflow.errors import Invalid, MetalflowError, TooLarge
from metalflow.services import PRINCIPAL_KEY, Credentials
from metalflow.tenancy.auth import Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Authenticate = Callable[[Credentials], Principal]
"""A request's credentials to its principal, or Unauthorized (services.authenticate)."""

API_PREFIX = "/api/v1"
KiB = 1024
MiB = 1024 * KiB
DEFAULT_MAX_BODY = 1 * MiB
AGENT_REPORT_MAX_BODY = 320 * KiB
"""hello and discover: attributes of up to 256 KiB as JSON (workflows.agent_router) and more."""
AGENT_LOGS_MAX_BODY = 6 * MiB
"""1,000 lines of 4 KiB with room for JSON escapes; the agent sends 50 lines at a time."""
AGENT_STATUS_MAX_BODY = 64 * KiB
"""A message of 4,096 characters, each escaped as JSON at worst."""
MAX_JSON_DEPTH = 100
"""Hardware attributes nest about ten levels; the JSON parsers recurse once per level."""


@dataclass(frozen=True)
class RoutePolicy:
    max_body: int
    needs_token: bool
    json_body: bool


def _route(template: str) -> re.Pattern[str]:
    """`/agent/actions/{id}/logs` as a pattern matching one path segment per `{name}`."""
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts) + "$")


BODY_LIMITS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("POST", _route(f"{API_PREFIX}/apply"), APPLY_MAX_BODY),
    ("POST", _route(f"{API_PREFIX}/agent/hello"), AGENT_REPORT_MAX_BODY),
    ("POST", _route(f"{API_PREFIX}/agent/discover"), AGENT_REPORT_MAX_BODY),
    ("POST", _route(f"{API_PREFIX}/agent/actions/{{attempt_id}}/logs"), AGENT_LOGS_MAX_BODY),
    ("POST", _route(f"{API_PREFIX}/agent/actions/{{attempt_id}}/status"), AGENT_STATUS_MAX_BODY),
)
"""Routes whose limit is not DEFAULT_MAX_BODY."""
NOT_JSON = frozenset({f"{API_PREFIX}/apply"})
"""Routes whose body is not JSON (apply takes YAML and bounds its own parsing)."""
PUBLIC = frozenset(
    {
        ("POST", f"{API_PREFIX}/agent/discover"),
        ("POST", f"{API_PREFIX}/login"),
        ("GET", f"{API_PREFIX}/openapi.json"),
        ("HEAD", f"{API_PREFIX}/openapi.json"),
        ("GET", f"{API_PREFIX}/docs"),
        ("HEAD", f"{API_PREFIX}/docs"),
    }
)
"""What needs no token under the API prefix: how an unknown machine gets one, how a person
signs in for one, and the API's own description."""


def policy_for(method: str, path: str) -> RoutePolicy:
    max_body = DEFAULT_MAX_BODY
    for limited_method, pattern, limit in BODY_LIMITS:
        if method == limited_method and pattern.match(path):
            max_body = limit
            break
    under_api = path == API_PREFIX or path.startswith(f"{API_PREFIX}/") or is_metal(path)
    needs_token = (under_api and (method, path) not in PUBLIC) or path == "/metrics"
    return RoutePolicy(max_body, needs_token, json_body=path not in NOT_JSON)


_REPEATED_SLASHES = re.compile(r"/{2,}")


def metal_path_tolerated(scope: Scope) -> Scope:
    """The scope with `//` in a `/metal/v1` path made `/`: packet-python joins its endpoint and
    paths that start with a slash themselves (`/metal/v1//capacity`), and with an href it was
    given (`/metal/v1//metal/v1/projects/ID`, which is the href's own path)."""
    path: str = scope["path"]
    if "//" not in path:
        return scope
    collapsed = _REPEATED_SLASHES.sub("/", path)
    if not is_metal(collapsed):
        return scope
    collapsed = collapsed.replace(f"{METAL_PREFIX}{METAL_PREFIX}/", f"{METAL_PREFIX}/", 1)
    return {**scope, "path": collapsed, "raw_path": collapsed.encode()}


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length, when there is a well-formed one (the HTTP server refuses the rest)."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the body is over this route's limit of {limit} bytes; send less per request",
        field="body",
    )


_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonNesting:
    """The nesting depth of a JSON text fed in pieces, at C speed per piece: strings are skipped
    by a regular expression, and the brackets between them are counted by `bytes.count` unless
    they could reach the limit.

    JSON is UTF-8 here (RFC 8259): a NUL byte, which UTF-8 JSON never has and UTF-16 or UTF-32
    always has, is refused rather than scanned in an encoding the scan does not read.
    """

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, data: bytes) -> None:
        """Raise Invalid once the text nests deeper than the limit or is not UTF-8."""
        if b"\x00" in data:
            raise Invalid("the JSON body must be UTF-8 (it has NUL bytes)", field="body")
        position = 0
        end = len(data)
        while position < end:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                    position += 1
                    continue
                match = _STRING_REST.match(data, position)
                position = match.end() if match else position
                if position == end:
                    return
                if data[position] == ord("\\"):
                    self.escaped = True
                else:
                    self.in_string = False
                position += 1
            else:
                quote = data.find(b'"', position)
                stop = end if quote < 0 else quote
                self._structure(data[position:stop])
                if quote < 0:
                    return
                self.in_string = True
                position = quote + 1

    def _structure(self, text: bytes) -> None:
        opened = text.count(b"[") + text.count(b"{")
        if self.depth + opened > self.limit:
            steps = map(_STEP.__getitem__, text.translate(None, _NOT_BRACKETS))
            deepest = max(itertools.accumulate(steps, initial=self.depth))
            if deepest > self.limit:
                raise Invalid(
                    f"the JSON body nests deeper than {self.limit} levels; flatten it",
                    field="body",
                )
        self.depth += opened - text.count(b"]") - text.count(b"}")


class RequestGuard:
    """ASGI middleware of the API app; see the module docstring."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate) -> None:
        self.app = app
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = metal_path_tolerated(scope)
        policy = policy_for(scope["method"], scope["path"])
        try:
            declared = declared_length(scope["headers"])
            if declared is not None and declared > policy.max_body:
                raise too_large(policy.max_body)
            if policy.needs_token:
                client = scope.get("client")
                credentials = Credentials(
                    header(scope["headers"], b"authorization"),
                    header(scope["headers"], b"x-auth-token"),
                    client[0] if client else None,
                )
                principal = await to_thread.run_sync(self.authenticate, credentials)
                scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        except MetalflowError as refusal:
            await _refuse(send, refusal, metal=is_metal(scope["path"]))
            return
        body = _GuardedBody(receive, send, policy, metal=is_metal(scope["path"]))
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.refused:
                raise
            # The app failed on the disconnect it was given after the refusal was sent.


class _GuardedBody:
    """The app's receive and send for one request: the body counted and scanned on its way in;
    after a refusal, the app gets a disconnect and its own answer is dropped."""

    def __init__(self, receive: Receive, send: Send, policy: RoutePolicy, *, metal: bool) -> None:
        self._receive = receive
        self._send = send
        self.metal = metal
        self.limit = policy.max_body
        self.nesting = JsonNesting() if policy.json_body else None
        self.received = 0
        self.started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        try:
            if self.received > self.limit:
                raise too_large(self.limit)
            if self.nesting is not None:
                self.nesting.feed(chunk)
        except MetalflowError as refusal:
            self.refused = True
            if not self.started:
                await _refuse(self._send, refusal, metal=self.metal)
            return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def _refuse(send: Send, refusal: MetalflowError, *, metal: bool) -> None:
    """The refusal, and the connection closed after it: the rest of the body stays unread."""
    response = error_response(
        refusal.status,
        refusal.message,
        refusal.field,
        headers={"Connection": "close"},
        metal=metal,
    )
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
