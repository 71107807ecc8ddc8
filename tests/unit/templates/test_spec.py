"""Tinkerbell's structural rules on rendered templates."""

from __future__ import annotations

import pytest

from metalflow.templates import TemplateError, check_template

BASE = """\
version: 0.1
name: wipe
tasks:
  - name: t1
    worker: "{{ .device_1 }}"
    volumes: [/dev:/dev, /statedir:/statedir]
    environment:
      MIRROR: http://mirror
      LEVEL: 1
    actions:
      - name: wipe
        image: alpine:3.19
        timeout: 60
        command: ["sh", "-c", "wipefs -a /dev/sda"]
        volumes: [/statedir:/statedir, /tmp:/tmp]
        environment:
          LEVEL: 2
          EMPTY:
        retries: 2
        retry_backoff: 1.5
      - name: reboot
        image: ghcr.io/jacobweinstock/waitdaemon@sha256:0123456789abcdef0123456789abcdef
        command: reboot now
        terminal: false
"""


def test_defaults_merges_and_coercions() -> None:
    spec = check_template(BASE)
    assert spec.version == "0.1"
    assert spec.global_timeout == 0
    task = spec.tasks[0]
    assert dict(task.environment) == {"MIRROR": "http://mirror", "LEVEL": "1"}
    wipe, reboot = task.actions
    assert dict(wipe.environment) == {"MIRROR": "http://mirror", "LEVEL": "2", "EMPTY": ""}
    assert wipe.volumes == ("/dev:/dev", "/statedir:/statedir", "/tmp:/tmp")
    assert wipe.command == ("sh", "-c", "wipefs -a /dev/sda")
    assert (wipe.retries, wipe.retry_backoff, wipe.timeout) == (2, 1.5, 60)
    assert reboot.command == ("reboot now",)
    assert reboot.terminal is False
    assert reboot.timeout == 0


@pytest.mark.parametrize(
    ("old", "new", "field", "fragment"),
    [
        ("name: wipe\ntasks", "tasks", "name", "required"),
        ("version: 0.1\n", "", "version", "required"),
        ("name: wipe\n", "name: wipe\nextra: 1\n", "extra", "unknown field 'extra'"),
        (
            "      - name: reboot",
            "      - name: wipe",
            "tasks[0].actions[1].name",
            "duplicate action name 'wipe'",
        ),
        ("        timeout: 60", "        timeout: -1", "tasks[0].actions[0].timeout", "from 0 to"),
        (
            "        timeout: 60",
            "        timeout: soon",
            "tasks[0].actions[0].timeout",
            "from 0 to",
        ),
        ("        retries: 2", "        retries: true", "tasks[0].actions[0].retries", "from 0 to"),
        (
            "        timeout: 60",
            "        timeout: 99999999999",
            "tasks[0].actions[0].timeout",
            "2592000",
        ),
        ("        retries: 2", "        retries: 101", "tasks[0].actions[0].retries", "0 to 100"),
        (
            "        terminal: false",
            "        terminal: maybe",
            "tasks[0].actions[1].terminal",
            "true or false",
        ),
        (
            "        retries: 2",
            "        retries: 2\n        on-failure: [x]",
            "tasks[0].actions[0].on-failure",
            "unknown field",
        ),
        ('    worker: "{{ .device_1 }}"\n', "", "tasks[0].worker", "required"),
        (
            "        image: alpine:3.19",
            "        image: Not An Image",
            "tasks[0].actions[0].image",
            "invalid action image",
        ),
        (
            "          LEVEL: 2",
            "          LEVEL: [2]",
            "tasks[0].actions[0].environment.LEVEL",
            "must be a string",
        ),
        ("  - name: t1", "  - name: " + "n" * 201, "tasks[0].name", "200 characters"),
        ("  - name: t1", "  - name: ''", "tasks[0].name", "empty"),
        (
            "    volumes: [/dev:/dev, /statedir:/statedir]",
            "    volumes: /dev",
            "tasks[0].volumes",
            "list",
        ),
        ("name: wipe\n", "name: wipe\nglobal_timeout: 1.5\n", "global_timeout", "from 0 to"),
    ],
)
def test_rule_violations_name_the_field(old: str, new: str, field: str, fragment: str) -> None:
    assert old in BASE
    with pytest.raises(TemplateError) as err:
        check_template(BASE.replace(old, new, 1))
    assert err.value.field == field
    assert fragment in err.value.message
    assert str(err.value).startswith(field + ": ")
    assert err.value.line is not None


def test_duplicate_task_names() -> None:
    text = BASE + BASE[BASE.index("  - name: t1") :]
    with pytest.raises(TemplateError, match="duplicate task name") as err:
        check_template(text)
    assert err.value.field == "tasks[1].name"


@pytest.mark.parametrize(
    "text",
    ["", "- a\n- b\n", "version: 0.1\nname: x\n", "version: 0.1\nname: x\ntasks: []\n"],
)
def test_shapes_without_tasks_fail(text: str) -> None:
    with pytest.raises(TemplateError):
        check_template(text)


def test_terminal_default_follows_image_name() -> None:
    text = BASE.replace("        terminal: false\n", "").replace(
        "ghcr.io/jacobweinstock/waitdaemon@sha256:0123456789abcdef0123456789abcdef",
        "quay.io/tinkerbell/actions/poweroff:latest",
    )
    assert check_template(text).tasks[0].actions[1].terminal is True
