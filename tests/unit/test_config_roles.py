"""`--roles` / METALFLOW_ROLES: comma-separated, every role by default, an unknown one named."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from metalflow.cli import app
from metalflow.config import ALL_ROLES, Role, Settings


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METALFLOW_ROLES", raising=False)
    monkeypatch.chdir(tmp_path)


def test_every_role_by_default() -> None:
    assert Settings().roles == ALL_ROLES
    assert {role.value for role in ALL_ROLES} == {"api", "boot", "metadata", "controller", "power"}


@pytest.mark.parametrize(
    ("given", "roles"),
    [
        ("api,boot,metadata", {Role.API, Role.BOOT, Role.METADATA}),
        (" controller , power ,", {Role.CONTROLLER, Role.POWER}),
        ("power,power", {Role.POWER}),
        (["api", "power"], {Role.API, Role.POWER}),
    ],
)
def test_comma_separated_roles(given: str | list[str], roles: set[Role]) -> None:
    assert Settings.model_validate({"roles": given}).roles == roles


def test_environment_is_comma_separated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALFLOW_ROLES", "controller,power")

    assert Settings().roles == {Role.CONTROLLER, Role.POWER}


@pytest.mark.parametrize("given", ["api,dhcp", "API", "api;boot"])
def test_an_unknown_role_is_named_with_the_valid_ones(given: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"roles": given})

    message = str(caught.value)
    assert "--roles" in message and "is not a role" in message
    assert "valid: api, boot, metadata, controller, power" in message


@pytest.mark.parametrize("given", ["", " , "])
def test_no_role_at_all_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="--roles needs at least one role"):
        Settings.model_validate({"roles": given})


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Replaces `metalflow.server.serve`, recording the settings it was given."""
    calls: list[Settings] = []
    module = types.ModuleType("metalflow.server")
    monkeypatch.setattr(module, "serve", calls.append, raising=False)
    monkeypatch.setitem(sys.modules, "metalflow.server", module)
    return calls


def test_up_passes_the_roles_on(served: list[Settings]) -> None:
    result = CliRunner().invoke(app, ["up", "--roles", "api,boot"])

    assert result.exit_code == 0, result.output
    assert served[0].roles == {Role.API, Role.BOOT}


def test_up_refuses_an_unknown_role_with_exit_2(served: list[Settings]) -> None:
    result = CliRunner().invoke(app, ["up", "--roles", "api,controler"])

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --roles: 'controler' is not a role (valid: api,")
    assert len(result.stderr.splitlines()) == 1
    assert served == []
