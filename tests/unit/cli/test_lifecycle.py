"""`metalflow provision|deprovision|agent-token`."""

from __future__ import annotations

import json

import yaml

from tests.unit.cli.fakes import FakeServer, Run, machine_doc, workflow_doc

M1 = "/api/v1/machines/m1"


def test_provision(server: FakeServer, run: Run) -> None:
    server.reply("POST", f"{M1}/provision", workflow_doc(), status=201)

    result = run("provision", "m1", "--template", "ubuntu", "--map", "disk=/dev/sda")

    assert result.exit_code == 0, result.output
    assert json.loads(server.last.content) == {
        "template": "ubuntu",
        "hardware_map": {"disk": "/dev/sda"},
        "power": None,
        "reboot": False,
    }, "power left to the server: on when the machine has a BMC"
    assert result.stdout == (
        "workflow 0123456789abcdef0123456789abcdef created for machine m1 (template ubuntu)\n"
    )
    run("provision", "m1", "--template", "ubuntu", "--no-power", "--reboot")
    assert json.loads(server.last.content)["power"] is False
    assert json.loads(server.last.content)["reboot"] is True


def test_provision_needs_a_template(server: FakeServer, run: Run) -> None:
    result = run("provision", "m1")

    assert result.exit_code == 2
    assert server.requests == []


def test_provision_bad_map(server: FakeServer, run: Run) -> None:
    result = run("provision", "m1", "--template", "ubuntu", "--map", "disk")

    assert result.exit_code == 2
    assert "--map" in result.stderr
    assert server.requests == []


def test_provision_busy_machine(server: FakeServer, run: Run) -> None:
    message = 'machine "m1" is provisioning; cancel workflow 42 first'
    server.error("POST", f"{M1}/provision", 409, {"message": message, "field": None})

    result = run("provision", "m1", "--template", "ubuntu")

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def test_deprovision_with_a_workflow(server: FakeServer, run: Run) -> None:
    wf = workflow_doc(kind="deprovision", template="wipe")
    server.reply("POST", f"{M1}/deprovision", {"machine": machine_doc(), "workflow": wf})

    result = run("deprovision", "m1", "--template", "wipe")

    assert result.exit_code == 0, result.output
    assert json.loads(server.last.content) == {"template": "wipe"}
    assert result.stdout == (
        "machine m1 deprovisioning: workflow 0123456789abcdef0123456789abcdef created "
        "(template wipe)\n"
    )


def test_deprovision_without_a_workflow(server: FakeServer, run: Run) -> None:
    server.reply("POST", f"{M1}/deprovision", {"machine": machine_doc(), "workflow": None})

    result = run("deprovision", "m1")

    assert json.loads(server.last.content) == {"template": None}
    assert result.stdout == "machine m1 deprovisioned: ready\n"


def test_agent_token_prints_only_the_token(server: FakeServer, run: Run) -> None:
    server.reply("POST", f"{M1}/agent-token", {"token": "agent-secret"})

    for args in (["agent-token", "m1"], ["-o", "table", "agent-token", "m1"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout == "agent-secret\n"
        assert result.stderr == ""


def test_agent_token_as_yaml(server: FakeServer, run: Run) -> None:
    server.reply("POST", f"{M1}/agent-token", {"token": "agent-secret"})

    result = run("-o", "yaml", "agent-token", "m1")

    assert yaml.safe_load(result.stdout) == {"token": "agent-secret"}
