"""`metalflow template list|show`."""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.cli.fakes import FakeServer, Run

TEMPLATE_YAML = "version: '0.1'\nname: ubuntu\ntasks: []\n"


def template(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "ubuntu",
        "version": "0.1",
        "tasks": 1,
        "actions": 3,
        "created_at": "2024-05-01T12:00:00+00:00",
        "updated_at": "2024-05-01T12:00:00+00:00",
    }
    doc.update(changes)
    return doc


def test_list(server: FakeServer, run: Run) -> None:
    server.reply("GET", "/api/v1/templates", {"items": [template()], "count": 1})

    result = run("template", "list")

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "TASKS", "ACTIONS", "CREATED", "UPDATED"]
    assert row.split()[:4] == ["ubuntu", "0.1", "1", "3"]


def test_show_prints_the_yaml_verbatim(server: FakeServer, run: Run) -> None:
    server.reply("GET", "/api/v1/templates/ubuntu", template(data=TEMPLATE_YAML))

    result = run("template", "show", "ubuntu")

    assert result.exit_code == 0, result.output
    assert result.stdout == TEMPLATE_YAML


def test_show_as_yaml_is_the_whole_document(server: FakeServer, run: Run) -> None:
    server.reply("GET", "/api/v1/templates/ubuntu", template(data=TEMPLATE_YAML))

    result = run("-o", "yaml", "template", "show", "ubuntu")

    assert yaml.safe_load(result.stdout) == template(data=TEMPLATE_YAML)


def test_show_missing(server: FakeServer, run: Run) -> None:
    server.error(
        "GET",
        "/api/v1/templates/nope",
        404,
        {"message": 'template "nope" not found', "field": None},
    )

    result = run("template", "show", "nope")

    assert result.exit_code == 2
    assert result.stderr == 'error: template "nope" not found\n'
