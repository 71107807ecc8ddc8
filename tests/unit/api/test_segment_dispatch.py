"""Routers included behind a `SegmentDispatch` answer every request as FastAPI's own includes do:
the same route (the first in order: shadowed, parametric first segments, several routers under
one segment), the same 404, 405 and trailing-slash redirect, the same `scope["route"]`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from metalflow.api.app import SegmentDispatch, first_segments, include_under

PREFIX = "/api/v1"


def routers() -> list[APIRouter]:
    def answer(name: str) -> Any:
        def endpoint(request: Request) -> dict[str, Any]:
            route = request.scope["route"]
            return {"by": name, "route": route.path, "params": request.path_params}

        return endpoint

    things = APIRouter(prefix="/things", tags=["things"])
    things.add_api_route("/{ref}", answer("things"), methods=["GET"])
    things.add_api_route("/{ref:path}/parts", answer("parts"), methods=["POST"])
    shadow = APIRouter()
    shadow.add_api_route("/things/{ref}", answer("shadowed"), methods=["GET"])
    shadow.add_api_route("/things/{ref}", answer("shadow-delete"), methods=["DELETE"])
    shadow.add_api_route("/other/", answer("other"), methods=["GET"])
    anywhere = APIRouter()
    anywhere.add_api_route("/{name}/deep", answer("anywhere"), methods=["GET", "PUT"])
    late = APIRouter(prefix="/late")
    late.add_api_route("", answer("late"), methods=["GET"])
    late.add_api_route("/things", answer("late-things"), methods=["GET"])
    return [things, shadow, anywhere, late]


def app_with(dispatch: bool) -> FastAPI:
    app = FastAPI()
    if dispatch:
        include_under(app, PREFIX, routers())
    else:
        for router in routers():
            app.include_router(router, prefix=PREFIX)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


PLAIN = app_with(dispatch=False)
DISPATCHED = app_with(dispatch=True)


def call(app: FastAPI, method: str, path: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    return asyncio.run(send())


SEGMENTS = ["things", "other", "late", "deep", "parts", "1", "zzz", ""]


def test_the_dispatcher_stands_before_the_routers_it_dispatches_to() -> None:
    routes = DISPATCHED.router.routes
    dispatchers = [
        index for index, route in enumerate(routes) if isinstance(route, SegmentDispatch)
    ]
    assert len(dispatchers) == 1
    assert [first_segments(router) for router in routers()] == [
        frozenset({"things"}),
        frozenset({"things", "other"}),
        None,
        frozenset({"late"}),
    ]


def test_a_shadowed_route_stays_shadowed_and_the_route_is_the_routers_own() -> None:
    answer = call(DISPATCHED, "GET", f"{PREFIX}/things/7")
    assert answer.json() == {"by": "things", "route": "/things/{ref}", "params": {"ref": "7"}}
    assert call(DISPATCHED, "DELETE", f"{PREFIX}/things/7").json()["by"] == "shadow-delete"
    assert call(DISPATCHED, "GET", f"{PREFIX}/zzz/deep").json()["by"] == "anywhere"
    assert call(DISPATCHED, "PUT", f"{PREFIX}/things/7").status_code == 405


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    parts=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=4),
    root=st.sampled_from([PREFIX, "/api", ""]),
    slash=st.booleans(),
)
def test_every_request_is_answered_as_fastapis_own_includes_answer_it(
    method: str, parts: list[str], root: str, slash: bool
) -> None:
    path = root + "/" + "/".join(parts) + ("/" if slash and parts else "")
    assume(not path.startswith("//"))  # a network-path reference, not a path
    plain = call(PLAIN, method, path)
    dispatched = call(DISPATCHED, method, path)
    assert (dispatched.status_code, dispatched.content) == (plain.status_code, plain.content)
    assert dispatched.headers.get("allow") == plain.headers.get("allow")
    assert dispatched.headers.get("location") == plain.headers.get("location")
