"""A fake metalflow API behind `httpx.MockTransport`, and API documents to serve from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from typer.testing import Result

TOKEN = "test-token"


@dataclass
class FakeServer:
    """Answers `(method, path)` with canned responses, in order (the last one repeats)."""

    routes: dict[tuple[str, str], list[httpx.Response | type[httpx.TransportError]]] = field(
        default_factory=dict
    )
    requests: list[httpx.Request] = field(default_factory=list)

    def reply(self, method: str, path: str, body: Any = None, *, status: int = 200) -> FakeServer:
        return self.add(method, path, httpx.Response(status, json=body))

    def error(self, method: str, path: str, status: int, detail: Any) -> FakeServer:
        return self.reply(method, path, {"detail": detail}, status=status)

    def stream(self, path: str, *events: dict[str, Any]) -> FakeServer:
        """An SSE response to `GET path` carrying `events`, with a keep-alive comment."""
        chunks = [": keep-alive\n\n"]
        for event in events:
            data = json.dumps(event)
            chunks.append(f"id: {event['id']}\nevent: {event['kind']}\ndata: {data}\n\n")
        content = "".join(chunks).encode()
        return self.add(
            "GET",
            path,
            httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content),
        )

    def fail(self, method: str, path: str, error: type[httpx.TransportError]) -> FakeServer:
        """`method path` raises `error` in the client, as a timeout or a dropped connection do."""
        return self.add(method, path, error)

    def add(
        self, method: str, path: str, reply: httpx.Response | type[httpx.TransportError]
    ) -> FakeServer:
        self.routes.setdefault((method, path), []).append(reply)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replies = self.routes.get((request.method, request.url.path))
        if not replies:
            return httpx.Response(404, json={"detail": {"message": "no such route", "field": None}})
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, httpx.Response):
            return reply
        raise reply("the fake server let it fail", request=request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def machine_doc(name: str = "m1", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"id-{name}",
        "name": name,
        "project": "default",
        "project_id": None,
        "metro": None,
        "labels": {"rack": "r1"},
        "arch": "x86_64",
        "uefi": True,
        "hostname": name,
        "state": "ready",
        "state_reason": None,
        "interfaces": [
            {
                "mac": "52:54:00:00:00:01",
                "ip": "10.0.0.11",
                "netmask": "255.255.255.0",
                "gateway": "10.0.0.1",
                "nameservers": ["10.0.0.1"],
                "hostname": name,
                "vlan": None,
                "allow_pxe": True,
                "allow_workflow": True,
            }
        ],
        "disks": [{"device": "/dev/sda", "size_bytes": 480 * 1024**3}],
        "bmc": {
            "driver": "ipmi",
            "address": "10.1.0.11",
            "username": "admin",
            "has_password": True,
        },
        "attributes": {},
        "metadata": {},
        "userData": None,
        "userDataBase64": None,
        "workflow": None,
        "created_at": "2024-05-01T12:00:00+00:00",
        "updated_at": "2024-05-01T12:00:00+00:00",
    }
    doc.update(changes)
    return doc


def action_doc(index: int, name: str, state: str = "PENDING", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"a{index}",
        "index": index,
        "task": "os",
        "name": name,
        "image": f"quay.io/tinkerbell/{name}:latest",
        "state": state,
        "attempts": 0 if state == "PENDING" else 1,
        "timeout": 600,
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
        "message": None,
    }
    doc.update(changes)
    return doc


def workflow_doc(state: str = "PENDING", done: int = 0, **changes: Any) -> dict[str, Any]:
    names = ["stream-image", "write-config"]
    states = ["SUCCESS"] * done + ["PENDING"] * (len(names) - done)
    doc: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "name": "m1-provision",
        "machine": "m1",
        "template": "ubuntu",
        "kind": "provision",
        "state": state,
        "reason": None,
        "run": 1,
        "global_timeout": 3600,
        "created_at": "2024-05-01T12:00:00+00:00",
        "started_at": None,
        "finished_at": None,
        "progress": {"done": done, "total": len(names)},
        "actions": [
            action_doc(i, n, s) for i, (n, s) in enumerate(zip(names, states, strict=True))
        ],
    }
    doc.update(changes)
    return doc


def event_doc(event_id: int, kind: str, **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "time": "2024-05-01T12:00:00+00:00",
        "machine": "m1",
        "workflow": "0123456789abcdef0123456789abcdef",
        "kind": kind,
        "data": data,
    }


Run = Callable[..., Result]
"""The `run` fixture: `run("machine", "list", input=None)`."""
