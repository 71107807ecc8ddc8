"""docs/settings.md is the settings model written out: a setting added, renamed or given a new
default without the page following fails here. `python -m tests.unit.test_settings_doc` writes
the page again."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from metalflow.config import Role, Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
HEADER = """\
# Settings

Every setting is an environment variable of `metalflow up` (and of the other commands that open
the data dir); `metalflow up --help` lists the options that set the common ones for one run, and
an option wins over its variable. Lists and maps are JSON
(`METALFLOW_DISCOVERY_NETWORKS='["192.0.2.0/24"]'`), except `METALFLOW_ROLES`, which is
comma-separated. The CLI's own `METALFLOW_URL` and `METALFLOW_TOKEN` are in the README.

| variable | default | what it is |
|---|---|---|
"""


def _default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, frozenset):
        return ",".join(role.value for role in Role if role in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    text = str(value)
    return text if text else '""'


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        factory = field.default_factory
        value = factory() if factory is not None else field.default  # type: ignore[call-arg]
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `METALFLOW_{name.upper()}` | `{_default(value)}` | {description} |\n")
    return HEADER + "".join(rows)


def test_the_settings_page_lists_every_setting_with_its_default() -> None:
    assert PAGE.read_text() == render(), "run `python -m tests.unit.test_settings_doc`"


if __name__ == "__main__":
    PAGE.write_text(render())
