"""Global options, the token, error reporting and output formats, shared by every command."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from metalflow.cli import app, context, hoist_output_option
from metalflow.cli.client import parse_sse
from tests.unit.cli.fakes import TOKEN, FakeServer, Run, machine_doc

MACHINES = "/api/v1/machines"


def test_sends_the_token_from_the_environment(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    result = run("machine", "list")

    assert result.exit_code == 0, result.output
    assert server.last.headers["authorization"] == f"Bearer {TOKEN}"


def test_token_option_beats_the_environment(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    run("--token", "from-flag", "machine", "list")

    assert server.last.headers["authorization"] == "Bearer from-flag"


@pytest.mark.parametrize("via_env", [False, True])
def test_token_from_the_data_dir_admin_token_file(
    server: FakeServer,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    via_env: bool,
) -> None:
    monkeypatch.delenv("METALFLOW_TOKEN")
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text("file-token\n")
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    if via_env:
        monkeypatch.setenv("METALFLOW_DATA_DIR", str(data_dir))
        result = run("machine", "list")
    else:
        result = run("--data-dir", str(data_dir), "machine", "list")

    assert result.exit_code == 0, result.output
    assert server.last.headers["authorization"] == "Bearer file-token"


def test_token_from_the_default_data_dir(
    server: FakeServer, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METALFLOW_TOKEN")
    (tmp_path / "metalflow-data").mkdir()
    (tmp_path / "metalflow-data" / "admin-token").write_text("default-token")
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    run("machine", "list")

    assert server.last.headers["authorization"] == "Bearer default-token"


def test_no_token_anywhere_is_bad_input(
    server: FakeServer, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METALFLOW_TOKEN")

    result = run("machine", "list")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: no API token")
    assert "metalflow-data/admin-token" in result.stderr
    assert server.requests == []


def test_url_option_and_environment(
    server: FakeServer, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    run("--url", "http://flag:1/", "machine", "list")
    assert str(server.last.url) == "http://flag:1/api/v1/machines"

    monkeypatch.setenv("METALFLOW_URL", "http://env:2")
    run("machine", "list")
    assert str(server.last.url) == "http://env:2/api/v1/machines"


def test_connection_refused_names_the_url_and_exits_1(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(context, "make_transport", lambda: httpx.MockTransport(refuse))

    result = run("--token", "t", "--url", "http://10.9.9.9:7080", "machine", "list")

    assert result.exit_code == 1
    assert result.stderr == (
        'error: cannot reach metalflow at http://10.9.9.9:7080 (is "metalflow up" running?)\n'
    )
    assert result.stdout == ""


def test_server_error_exits_1(server: FakeServer, run: Run) -> None:
    server.error("GET", MACHINES, 500, {"message": "database is locked", "field": None})

    result = run("machine", "list")

    assert result.exit_code == 1
    assert result.stderr == "error: database is locked\n"


def test_unauthorized_hints_at_the_token(server: FakeServer, run: Run) -> None:
    server.error("GET", MACHINES, 401, {"message": "invalid token", "field": None})

    result = run("machine", "list")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid token (check --token")


def test_fastapi_validation_errors_are_one_line(server: FakeServer, run: Run) -> None:
    detail = [
        {"loc": ["body", "hardware_map", "disk"], "msg": "Input should be a valid string"},
        {"loc": ["body", "actions", 0, "name"], "msg": "Field required"},
    ]
    server.error("POST", "/api/v1/workflows", 422, detail)

    result = run("workflow", "create", "--machine", "m1", "--template", "t")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: hardware_map.disk: Input should be a valid string; "
        "actions[0].name: Field required\n"
    )


def test_error_without_a_json_body(server: FakeServer, run: Run) -> None:
    server.add("GET", MACHINES, httpx.Response(502, text="<html>bad gateway</html>"))

    result = run("machine", "list")

    assert result.exit_code == 1
    assert result.stderr == "error: 502 Bad Gateway\n"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_machine_readable_output_is_the_response(server: FakeServer, run: Run, fmt: str) -> None:
    body = {"items": [machine_doc()], "count": 1}
    server.reply("GET", MACHINES, body)

    result = run("-o", fmt, "machine", "list")

    assert result.exit_code == 0, result.output
    load = json.loads if fmt == "json" else yaml.safe_load
    assert load(result.stdout) == body


def test_json_output_is_indented(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    result = run("--output", "json", "machine", "list")

    assert result.stdout == '{\n  "items": [],\n  "count": 0\n}\n'


def test_unknown_output_format_is_a_usage_error(run: Run) -> None:
    result = run("-o", "xml", "machine", "list")

    assert result.exit_code == 2


def test_sse_parser_skips_comments_and_joins_data_lines() -> None:
    lines = [
        ": keep-alive",
        "",
        "id: 7",
        "event: machine.created",
        'data: {"time": "t",',
        'data:  "data": {}}',
        "",
        "id: 8",
        "data: {}",
    ]

    assert list(parse_sse(lines)) == [{"id": 7, "kind": "machine.created", "time": "t", "data": {}}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", "t", "--url", "http://[::1", "machine", "list"], "is not a URL"),
        (["--token", "t", "--url", "localhost:7080", "machine", "list"], "http://HOST:PORT"),
        (["--token", "é", "machine", "list"], "characters no token has"),
        (["--token", "t", "machine", "show", ""], "is empty"),
    ],
)
def test_bad_url_token_or_name_is_bad_input(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["machine", "list", "-o", "json"], ["-o", "json", "machine", "list"]),
        (["workflow", "show", "w1", "--output=yaml"], ["--output=yaml", "workflow", "show", "w1"]),
        (["-ojson", "template", "list"], ["-ojson", "template", "list"]),
        (["apply", "-f", "-", "--", "-o"], ["apply", "-f", "-", "--", "-o"]),
        (["machine", "list"], ["machine", "list"]),
    ],
)
def test_output_option_may_follow_the_verb(argv: list[str], expected: list[str]) -> None:
    assert hoist_output_option(argv) == expected


def test_output_option_after_the_verb_reaches_the_command(server: FakeServer) -> None:
    server.reply("GET", "/api/v1/machines", {"items": [machine_doc()], "count": 1})
    result = CliRunner().invoke(app, hoist_output_option(["machine", "list", "-o", "json"]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["items"][0]["name"] == "m1"
