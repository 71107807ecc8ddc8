"""The CLI against a real server: what an operator types, what they see."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from metalflow.cli import app
from tests.integration.conftest import AgentClient, LiveServer
from tests.manifests import TINKERBELL_STACK, machine_yaml, simple_template


def run(cli: CliRunner, *args: str, input: str | None = None) -> Result:
    return cli.invoke(app, list(args), input=input)


def test_operator_session(cli: CliRunner, live: LiveServer, tmp_path: Path) -> None:
    manifest = tmp_path / "lab.yaml"
    manifest.write_text(
        machine_yaml("m1", "52:54:00:00:00:01", "192.0.2.11") + "---\n" + simple_template(count=1)
    )
    applied = run(cli, "apply", "-f", str(manifest))
    assert applied.exit_code == 0, applied.output
    assert "machine/m1 created" in applied.output.lower()
    again = run(cli, "apply", "-f", str(manifest))
    assert "unchanged" in again.output

    listed = run(cli, "machine", "list")
    assert listed.exit_code == 0 and "m1" in listed.output and "ready" in listed.output

    provisioned = run(cli, "provision", "m1", "--template", "ubuntu")
    assert provisioned.exit_code == 0, provisioned.output
    workflow = json.loads(run(cli, "-o", "json", "workflow", "list").output)["items"][0]

    token = run(cli, "agent-token", "m1").output.strip()
    agent = AgentClient(live.url, token, "52:54:00:00:00:01")
    action = agent.next()
    assert action is not None
    agent.report(action["id"], "success", exit_code=0)
    agent.close()

    watched = run(cli, "workflow", "watch", workflow["id"])
    assert watched.exit_code == 0, watched.output
    assert "SUCCESS" in watched.output
    shown = run(cli, "workflow", "show", workflow["id"])
    assert "step-0" in shown.output and "SUCCESS" in shown.output
    events = run(cli, "machine", "events", "m1")
    assert "workflow.succeeded" in events.output


def test_bad_input_is_one_line_and_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(machine_yaml("m1", "not-a-mac"))
    result = run(cli, "apply", "-f", str(broken))
    assert result.exit_code == 2
    assert "not a MAC address" in result.output
    assert "Traceback" not in result.output
    missing = run(cli, "machine", "show", "ghost")
    assert missing.exit_code == 2 and "not found" in missing.output


def test_apply_tinkerbell_stack_from_stdin(cli: CliRunner) -> None:
    result = run(cli, "apply", "-f", "-", input=TINKERBELL_STACK)
    assert result.exit_code == 0, result.output
    assert "workflow/sm01-jammy created" in result.output.lower()
    dry = run(cli, "apply", "-f", "-", "--dry-run", input=TINKERBELL_STACK)
    assert dry.exit_code == 0 and "unchanged" in dry.output


def test_maintenance_and_deletes(cli: CliRunner) -> None:
    run(
        cli,
        "apply",
        "-f",
        "-",
        input=machine_yaml("m1", "52:54:00:00:00:01") + "---\n" + simple_template(count=1),
    )
    moved = run(cli, "machine", "transition", "m1", "maintenance", "--reason", "fan swap")
    assert moved.exit_code == 0 and "maintenance" in moved.output
    refused = run(cli, "provision", "m1", "--template", "ubuntu")
    assert refused.exit_code == 2 and "cannot provision" in refused.output
    assert run(cli, "machine", "transition", "m1", "release").exit_code == 0
    assert run(cli, "provision", "m1", "--template", "ubuntu").exit_code == 0
    busy = run(cli, "machine", "delete", "m1")
    assert busy.exit_code == 2 and "cancel its workflow first" in busy.output
    workflow = json.loads(run(cli, "-o", "json", "workflow", "list").output)["items"][0]["id"]
    assert run(cli, "workflow", "delete", workflow).exit_code == 2
    assert run(cli, "workflow", "cancel", workflow[:12]).exit_code == 0
    assert run(cli, "workflow", "delete", workflow[:12]).exit_code == 0
    assert run(cli, "template", "delete", "ubuntu").exit_code == 0
    assert "machine/m1 deleted" in run(cli, "machine", "delete", "m1").output
    assert "m1" not in run(cli, "machine", "list").output
