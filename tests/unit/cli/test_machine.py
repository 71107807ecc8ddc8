"""`metalflow machine list|show|events`."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
import yaml

from tests.unit.cli.fakes import FakeServer, Run, event_doc, machine_doc

MACHINES = "/api/v1/machines"
EVENTS = "/api/v1/events"


def test_list_is_a_table(server: FakeServer, run: Run) -> None:
    busy = machine_doc("m2", state="provisioning", workflow="wf-1", interfaces=[], project=None)
    rented = machine_doc(project_id="p" * 32, metro="am6")
    server.reply("GET", MACHINES, {"items": [rented, busy], "count": 2})

    result = run("machine", "list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATE",
        "ARCH",
        "MAC",
        "IP",
        "PROJECT",
        "TENANT",
        "METRO",
        "WORKFLOW",
    ]
    assert lines[1].split() == [
        "m1",
        "ready",
        "x86_64",
        "52:54:00:00:00:01",
        "10.0.0.11",
        "default",
        "p" * 32,
        "am6",
        "-",
    ]
    assert lines[2].split() == ["m2", "provisioning", "x86_64", "-", "-", "-", "-", "-", "wf-1"]


def test_list_filters(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    run("machine", "list", "--state", "ready", "--label", "rack=r1", "--label", "role=db")

    assert server.last.url.params.get_list("label") == ["rack=r1", "role=db"]
    assert server.last.url.params["state"] == "ready"


def test_list_without_filters_sends_no_parameters(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    run("machine", "list")

    assert server.last.url.query == b""


def test_bad_label_is_a_usage_error(server: FakeServer, run: Run) -> None:
    result = run("machine", "list", "--label", "rack")

    assert result.exit_code == 2
    assert "KEY=VALUE" in result.stderr
    assert server.requests == []


def test_show(server: FakeServer, run: Run) -> None:
    shown = machine_doc(state_reason="inspected", project_id="p" * 32, metro="am6")
    server.reply("GET", f"{MACHINES}/m1", shown)

    result = run("machine", "show", "m1")

    assert result.exit_code == 0, result.output
    out = result.stdout
    summary = [line.split() for line in out.splitlines()[:5]]
    assert summary[2:] == [["project:", "default"], ["tenant:", "p" * 32], ["metro:", "am6"]]
    assert "state:" in out and "ready (inspected)" in out
    assert "labels:" in out and "rack=r1" in out
    assert "ipmi 10.1.0.11 (admin, password set)" in out
    assert "52:54:00:00:00:01" in out and "255.255.255.0" in out
    assert "/dev/sda" in out and "480.0 GiB" in out


@pytest.mark.parametrize(
    ("user_data", "shown"),
    [
        ({"userData": "#cloud-config\nhostname: é\n"}, "user-data:  27 B, text"),
        ({"userDataBase64": base64.b64encode(gzip.compress(b"x" * 4000)).decode()}, ", gzip"),
        ({"userDataBase64": base64.b64encode(b"\xff" * 2048).decode()}, "2.0 KiB, binary"),
        ({}, "user-data:  -"),
    ],
)
def test_show_tells_the_user_data_size_and_kind_not_its_content(
    server: FakeServer, run: Run, user_data: dict[str, str], shown: str
) -> None:
    server.reply("GET", f"{MACHINES}/m1", machine_doc(**user_data))

    result = run("machine", "show", "m1")

    assert result.exit_code == 0, result.output
    assert shown in result.stdout
    assert "cloud-config" not in result.stdout


def test_yaml_shows_user_data_as_it_applies_again(server: FakeServer, run: Run) -> None:
    """U+0085 (NEL) is text, yet PyYAML left alone turns it into a line break on reading."""
    text = '#cloud-config\nwrite_files: [{path: /etc/motd, content: "a\x85b  \\n"}]\n'
    binary = base64.b64encode(b"\x1f\x8b\x08\x00\xff").decode()
    server.reply("GET", f"{MACHINES}/m1", machine_doc(userData=text))
    server.reply("GET", f"{MACHINES}/m2", machine_doc("m2", userDataBase64=binary))

    shown = [yaml.safe_load(run("-o", "yaml", "machine", "show", m).stdout) for m in ("m1", "m2")]

    assert (shown[0]["userData"], shown[0]["userDataBase64"]) == (text, None)
    assert (shown[1]["userData"], shown[1]["userDataBase64"]) == (None, binary)


def test_show_bmc_port_and_tls(server: FakeServer, run: Run) -> None:
    bmc = {
        "driver": "redfish",
        "address": "10.1.0.12",
        "port": 8443,
        "username": "root",
        "has_password": False,
        "insecure_tls": True,
        "options": {"system": "1"},
    }
    server.reply("GET", f"{MACHINES}/m1", machine_doc(bmc=bmc))

    result = run("machine", "show", "m1")

    assert "redfish 10.1.0.12 port 8443 (root, no password, any TLS certificate)" in result.stdout


def test_show_escapes_the_name(server: FakeServer, run: Run) -> None:
    server.reply("GET", f"{MACHINES}/a b", machine_doc("a b"))

    run("machine", "show", "a b")

    assert server.last.url.raw_path == b"/api/v1/machines/a%20b"


def test_show_missing_machine(server: FakeServer, run: Run) -> None:
    server.error("GET", f"{MACHINES}/m9", 404, {"message": 'machine "m9" not found', "field": None})

    result = run("machine", "show", "m9")

    assert result.exit_code == 2
    assert result.stderr == 'error: machine "m9" not found\n'
    assert "Traceback" not in result.output


def test_events(server: FakeServer, run: Run) -> None:
    events = [
        event_doc(2, "workflow.action.started", action="stream-image"),
        event_doc(1, "machine.created", workflow=None),
    ]
    server.reply("GET", EVENTS, {"items": events, "count": 2})

    result = run("machine", "events", "m1", "--limit", "5")

    assert result.exit_code == 0, result.output
    assert server.last.url.params["machine"] == "m1"
    assert server.last.url.params["limit"] == "5"
    assert "follow" not in server.last.url.params
    first, second = result.stdout.splitlines()
    assert "machine.created" in first
    assert second.endswith(
        "workflow.action.started  workflow=0123456789abcdef0123456789abcdef action=stream-image"
    )


def test_events_quote_values_with_spaces(server: FakeServer, run: Run) -> None:
    event = event_doc(1, "workflow.action.failed", message="exit code 3", code=3)
    server.reply("GET", EVENTS, {"items": [event], "count": 1})

    result = run("machine", "events", "m1")

    assert result.stdout.rstrip().endswith('message="exit code 3" code=3')


def test_events_follow_streams(server: FakeServer, run: Run) -> None:
    server.stream(
        EVENTS,
        event_doc(1, "machine.created"),
        event_doc(2, "workflow.created"),
    )

    result = run("machine", "events", "m1", "--follow")

    assert result.exit_code == 0, result.output
    assert server.last.url.params["follow"] == "true"
    assert server.last.url.params["machine"] == "m1"
    assert server.last.headers["accept"] == "text/event-stream"
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "machine.created" in lines[0] and "workflow.created" in lines[1]


def test_events_follow_as_json_lines(server: FakeServer, run: Run) -> None:
    server.stream(EVENTS, event_doc(1, "machine.created"), event_doc(2, "workflow.created"))

    result = run("-o", "json", "machine", "events", "m1", "-f")

    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]


def test_events_follow_ctrl_c_exits_cleanly(
    server: FakeServer, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("metalflow.cli.client.ApiClient.events", interrupted)

    result = run("machine", "events", "m1", "--follow")

    assert result.exit_code == 0
    assert result.stderr == ""


def test_assign_puts_the_project(server: FakeServer, run: Run) -> None:
    server.reply("PUT", f"{MACHINES}/m1/project", machine_doc(project_id="p-web"))

    result = run("machine", "assign", "m1", "--project", "p-web")

    assert result.exit_code == 0, result.output
    assert server.last.method == "PUT"
    assert json.loads(server.last.content) == {"project": "p-web"}
    assert result.stdout == "machine/m1 assigned to project p-web\n"


def test_unassign_gives_the_machine_back(server: FakeServer, run: Run) -> None:
    server.reply("PUT", f"{MACHINES}/m1/project", machine_doc(project_id=None))

    result = run("-o", "json", "machine", "unassign", "m1")

    assert result.exit_code == 0, result.output
    assert json.loads(server.last.content) == {"project": None}
    assert json.loads(result.stdout)["project_id"] is None


def test_assign_to_an_unknown_project_is_bad_input(server: FakeServer, run: Run) -> None:
    detail = {"message": "project 'nope' not found", "field": "project"}
    server.error("PUT", f"{MACHINES}/m1/project", 404, detail)

    result = run("machine", "assign", "m1", "--project", "nope")

    assert result.exit_code == 2
    assert result.stderr == "error: project 'nope' not found\n"


def test_list_by_project(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    run("machine", "list", "--project", "p-web")

    assert server.last.url.params["project"] == "p-web"
