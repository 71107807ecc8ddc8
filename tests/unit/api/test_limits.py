"""RequestGuard called as the HTTP server calls it, with raw ASGI messages: what it refuses, before
reading how much of the body, and what the app behind it then sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.api.limits import (
    AGENT_REPORT_MAX_BODY,
    DEFAULT_MAX_BODY,
    MAX_JSON_DEPTH,
    JsonNesting,
    RequestGuard,
    policy_for,
)
from metalflow.apply.router import MAX_BODY as APPLY_MAX_BODY
from metalflow.errors import Invalid, Unauthorized
from metalflow.services import MISSING_TOKEN, PRINCIPAL_KEY, Credentials
from metalflow.tenancy.auth import Principal, Role

Message = MutableMapping[str, Any]
AGENT = Principal(Role.AGENT, "agent:m1", "m1")


def authenticate(credentials: Credentials) -> Principal:
    """services.authenticate without a database."""
    if credentials.authorization is None:
        raise Unauthorized(MISSING_TOKEN, field="authorization")
    if credentials.authorization != "Bearer good":
        raise Unauthorized("unknown or revoked token", field="authorization")
    return AGENT


class App:
    """Reads the whole body, as FastAPI does, and answers 200 with what it read."""

    def __init__(self) -> None:
        self.body = b""
        self.scope: MutableMapping[str, Any] = {}
        self.called = False

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.called = True
        self.scope = scope
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("client disconnected")
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Exchange:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        chunk = self.chunks[self.read]
        self.read += 1
        return {"type": "http.request", "body": chunk, "more_body": self.read < len(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = json.loads(self.sent[1]["body"])["detail"]
        return detail


def call(
    path: str,
    chunks: list[bytes],
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[App, Exchange]:
    app = App()
    exchange = Exchange(chunks)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(RequestGuard(app, authenticate)(scope, exchange.receive, exchange.send))
    return app, exchange


HELLO = "/api/v1/agent/hello"
TOKEN = {"Authorization": "Bearer good"}


def test_no_token_is_a_401_before_a_byte_of_the_body_is_read() -> None:
    app, exchange = call(HELLO, [b"x" * 65536] * 1000)
    assert (exchange.status, exchange.read, app.called) == (401, 0, False)
    assert exchange.headers["www-authenticate"] == "Bearer"
    assert exchange.headers["connection"] == "close"
    assert exchange.detail["field"] == "authorization"
    assert "Authorization: Bearer TOKEN" in exchange.detail["message"]


def test_an_unknown_token_is_a_401_naming_it() -> None:
    app, exchange = call(HELLO, [b"{}"], headers={"Authorization": "Bearer bad"})
    assert (exchange.status, exchange.read, app.called) == (401, 0, False)
    assert exchange.detail["message"] == "unknown or revoked token"


def test_a_declared_length_over_the_limit_is_a_413_naming_it_before_reading() -> None:
    length = str(AGENT_REPORT_MAX_BODY + 1)
    app, exchange = call(HELLO, [b"{}"], headers={**TOKEN, "Content-Length": length})
    assert (exchange.status, exchange.read, app.called) == (413, 0, False)
    assert str(AGENT_REPORT_MAX_BODY) in exchange.detail["message"]
    assert exchange.detail["field"] == "body"


def test_a_chunked_body_is_refused_once_past_the_limit_and_no_further_chunk_is_read() -> None:
    chunks = [b" " * 65536] * 100
    app, exchange = call(HELLO, chunks, headers=TOKEN)
    assert exchange.status == 413
    assert exchange.read == AGENT_REPORT_MAX_BODY // 65536 + 1
    assert app.called and len(app.body) <= AGENT_REPORT_MAX_BODY
    assert len(exchange.sent) == 2, "the app's own answer after the refusal must be dropped"


def test_the_principal_is_left_for_the_route_and_the_body_passes_unchanged() -> None:
    body = json.dumps({"mac": "52:54:00:00:00:01", "attributes": {"a": [[1], {"b": "]"}]}})
    app, exchange = call(HELLO, [body[:10].encode(), body[10:].encode()], headers=TOKEN)
    assert exchange.status == 200
    assert app.body == body.encode()
    assert app.scope["state"][PRINCIPAL_KEY] == AGENT


def test_discover_needs_no_token_but_has_the_small_limit() -> None:
    app, exchange = call("/api/v1/agent/discover", [b"{}"])
    assert exchange.status == 200 and PRINCIPAL_KEY not in app.scope.get("state", {})
    assert policy_for("POST", "/api/v1/agent/discover").max_body == AGENT_REPORT_MAX_BODY


def test_deep_nesting_is_a_422_as_it_arrives() -> None:
    deep = b'{"mac": "x", "attributes": {"a": ' + b"[" * 3000
    app, exchange = call(HELLO, [deep[:1000], deep[1000:], b"]" * 3000 + b"}}"], headers=TOKEN)
    assert exchange.status == 422 and app.body == b"", "the app must not see the refused chunk"
    assert exchange.read == 1, "the chunks after the one too deep must stay unread"
    assert exchange.detail == {
        "message": f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; flatten it",
        "field": "body",
    }


@pytest.mark.parametrize(
    ("method", "path", "needs_token", "limit"),
    [
        ("POST", "/api/v1/apply", True, APPLY_MAX_BODY),
        ("POST", "/api/v1/agent/actions/7/logs", True, 6 * 1024 * 1024),
        ("POST", "/api/v1/machines/m1/provision", True, DEFAULT_MAX_BODY),
        ("GET", "/api/v1/openapi.json", False, DEFAULT_MAX_BODY),
        ("GET", "/metrics", True, DEFAULT_MAX_BODY),
        ("GET", "/healthz", False, DEFAULT_MAX_BODY),
        ("GET", "/boot/52:54:00:00:00:01.ipxe", False, DEFAULT_MAX_BODY),
        ("GET", "/api/v1/nothing-here", True, DEFAULT_MAX_BODY),
    ],
)
def test_policy_per_route(method: str, path: str, needs_token: bool, limit: int) -> None:
    policy = policy_for(method, path)
    assert (policy.needs_token, policy.max_body) == (needs_token, limit)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


@given(json_values, st.integers(min_value=1, max_value=40), st.integers(1, 6))
def test_the_scan_agrees_with_the_parser_in_any_split(value: Any, cut: int, limit: int) -> None:
    text = json.dumps(value).encode()
    nesting = JsonNesting(limit)
    try:
        for start in range(0, len(text), cut):
            nesting.feed(text[start : start + cut])
    except Invalid:
        assert depth_of(value) > limit
    else:
        assert depth_of(value) <= limit


def test_utf16_json_is_refused_rather_than_scanned() -> None:
    with pytest.raises(Invalid, match="UTF-8"):
        JsonNesting().feed(json.dumps([[1]]).encode("utf-16-le"))
