"""METALFLOW_ROLES / the `roles` setting: comma-separated, every role by default, an unknown one
named (the `--roles` flag is tested with the other `metalflow up` flags, in tests/unit/cli)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

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
