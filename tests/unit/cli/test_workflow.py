"""`metalflow workflow create|list|show|watch|cancel|resume|rerun`."""

from __future__ import annotations

import json

import pytest

from metalflow.cli import workflow as workflow_cli
from tests.unit.cli.fakes import FakeServer, Run, event_doc, workflow_doc

WORKFLOWS = "/api/v1/workflows"
WF_ID = "0123456789abcdef0123456789abcdef"
WF = f"{WORKFLOWS}/{WF_ID}"
EVENTS = "/api/v1/events"


def test_create(server: FakeServer, run: Run) -> None:
    server.reply("POST", WORKFLOWS, workflow_doc(), status=201)

    result = run(
        "workflow",
        "create",
        "--machine",
        "m1",
        "--template",
        "ubuntu",
        "--map",
        "disk=/dev/sda",
        "--map",
        "hostname=a=b",
        "--name",
        "first",
    )

    assert result.exit_code == 0, result.output
    assert json.loads(server.last.content) == {
        "machine": "m1",
        "template": "ubuntu",
        "hardware_map": {"disk": "/dev/sda", "hostname": "a=b"},
        "name": "first",
    }
    assert result.stdout == f"workflow {WF_ID} created for machine m1 (template ubuntu)\n"


def test_create_without_name_sends_null(server: FakeServer, run: Run) -> None:
    server.reply("POST", WORKFLOWS, workflow_doc(), status=201)

    run("workflow", "create", "--machine", "m1", "--template", "ubuntu")

    assert json.loads(server.last.content)["name"] is None
    assert json.loads(server.last.content)["hardware_map"] == {}


def test_create_conflict(server: FakeServer, run: Run) -> None:
    message = 'machine "m1" already runs workflow 42'
    server.error("POST", WORKFLOWS, 409, {"message": message, "field": "machine"})

    result = run("workflow", "create", "--machine", "m1", "--template", "ubuntu")

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def test_list(server: FakeServer, run: Run) -> None:
    server.reply("GET", WORKFLOWS, {"items": [workflow_doc("RUNNING", done=1)], "count": 1})

    result = run("workflow", "list", "--machine", "m1", "--state", "RUNNING")

    assert result.exit_code == 0, result.output
    assert dict(server.last.url.params) == {"machine": "m1", "state": "RUNNING"}
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "MACHINE", "TEMPLATE", "STATE", "PROGRESS", "CREATED"]
    assert row.split()[:6] == ["0123456789ab", "m1-provision", "m1", "ubuntu", "RUNNING", "1/2"]


def test_show(server: FakeServer, run: Run) -> None:
    doc = workflow_doc("FAILED", done=1, reason="action write-config failed")
    doc["actions"][1].update(
        state="FAILED",
        attempts=2,
        exit_code=3,
        message="no space left",
        started_at="2024-05-01T12:00:00+00:00",
        finished_at="2024-05-01T12:01:05+00:00",
    )
    server.reply("GET", WF, doc)

    result = run("workflow", "show", WF_ID)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "FAILED (action write-config failed)" in out
    assert "progress:" in out and "1/2" in out
    header = next(line for line in out.splitlines() if line.startswith("#"))
    assert header.split() == [
        "#",
        "TASK",
        "ACTION",
        "IMAGE",
        "STATE",
        "ATTEMPTS",
        "EXIT",
        "DURATION",
        "MESSAGE",
    ]
    failed = next(line for line in out.splitlines() if line.startswith("1 "))
    assert failed.split() == [
        "1",
        "os",
        "write-config",
        "quay.io/tinkerbell/write-config:latest",
        "FAILED",
        "2",
        "3",
        "1m05s",
        "no",
        "space",
        "left",
    ]


@pytest.mark.parametrize("verb", ["cancel", "resume", "rerun"])
def test_transitions(server: FakeServer, run: Run, verb: str) -> None:
    server.reply("POST", f"{WF}/{verb}", workflow_doc("CANCELLED", reason="by user"))

    result = run("workflow", verb, WF_ID)

    assert result.exit_code == 0, result.output
    assert server.last.method == "POST"
    assert result.stdout == f"workflow {WF_ID} CANCELLED (by user)\n"


def test_transition_refused(server: FakeServer, run: Run) -> None:
    message = "only FAILED or TIMEOUT workflows can resume (this one is SUCCESS)"
    server.error("POST", f"{WF}/resume", 409, {"message": message, "field": None})

    result = run("workflow", "resume", WF_ID)

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def serve_run(server: FakeServer, final: str, reason: str | None = None) -> None:
    """A workflow that is running, then finishes as `final` over two events."""
    server.reply("GET", WF, workflow_doc("RUNNING"))
    server.reply("GET", WF, workflow_doc("RUNNING", done=1))
    server.reply("GET", WF, workflow_doc(final, done=2 if final == "SUCCESS" else 1, reason=reason))
    server.stream(
        EVENTS,
        event_doc(5, "workflow.action.succeeded", action="stream-image"),
        event_doc(6, f"workflow.{final.lower()}"),
    )


def test_watch_success_exits_0(server: FakeServer, run: Run) -> None:
    serve_run(server, "SUCCESS")

    result = run("workflow", "watch", WF_ID)

    assert result.exit_code == 0, result.output
    stream = next(r for r in server.requests if r.url.path == EVENTS)
    assert dict(stream.url.params) == {"workflow": WF_ID, "follow": "true"}
    lines = result.stdout.splitlines()
    assert "workflow.action.succeeded" in lines[0] and "action=stream-image" in lines[0]
    assert "workflow.success" in lines[1]
    assert lines[-1] == f"workflow {WF_ID} SUCCESS"


def test_watch_failed_exits_1_with_reason(server: FakeServer, run: Run) -> None:
    serve_run(server, "FAILED", reason="action write-config exited 3")

    result = run("workflow", "watch", WF_ID)

    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == (
        f"workflow {WF_ID} FAILED (action write-config exited 3)"
    )


def test_watch_finished_workflow_does_not_stream(server: FakeServer, run: Run) -> None:
    server.reply("GET", WF, workflow_doc("TIMEOUT", reason="global timeout"))

    result = run("workflow", "watch", WF_ID)

    assert result.exit_code == 1
    assert [r.url.path for r in server.requests] == [WF]
    assert result.stdout == f"workflow {WF_ID} TIMEOUT (global timeout)\n"


def test_watch_reopens_a_closed_stream_after_the_last_event(
    server: FakeServer, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow_cli, "RECONNECT_DELAY", 0)
    server.reply("GET", WF, workflow_doc("RUNNING"))
    server.stream(EVENTS, event_doc(5, "workflow.action.started"))
    server.stream(EVENTS, event_doc(6, "workflow.success"))
    server.reply("GET", WF, workflow_doc("RUNNING"))
    server.reply("GET", WF, workflow_doc("RUNNING"))
    server.reply("GET", WF, workflow_doc("SUCCESS", done=2))

    result = run("workflow", "watch", WF_ID)

    assert result.exit_code == 0, result.output
    streams = [r for r in server.requests if r.url.path == EVENTS]
    assert "last-event-id" not in streams[0].headers
    assert streams[1].headers["last-event-id"] == "5"


def test_watch_as_json_prints_the_final_workflow(server: FakeServer, run: Run) -> None:
    serve_run(server, "SUCCESS")

    result = run("-o", "json", "workflow", "watch", WF_ID)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "SUCCESS"


def test_watch_on_a_terminal_shows_progress(
    server: FakeServer, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    serve_run(server, "FAILED", reason="boom")

    result = run("workflow", "watch", WF_ID)

    assert result.exit_code == 1
    assert "1/2" in result.stdout
    assert "workflow.action.succeeded" in result.stdout
    assert "FAILED" in result.stdout and "(boom)" in result.stdout


def test_watch_missing_workflow(server: FakeServer, run: Run) -> None:
    server.error(
        "GET",
        f"{WORKFLOWS}/nope",
        404,
        {"message": "workflow 'nope' not found", "field": "workflow"},
    )

    result = run("workflow", "watch", "nope")

    assert result.exit_code == 2
    assert result.stderr == "error: workflow 'nope' not found\n"
