"""METALFLOW_ROLES / the `roles` setting: comma-separated, every role by default, an unknown one
named (the `--roles` flag is tested with the other `metalflow up` flags, in tests/unit/cli); the
per-host IPAM sizes: Packet's by default, overridden per metro, a bad one named with the fix."""

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


def test_per_host_sizes_are_packets_unless_a_metro_overrides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METALFLOW_IPAM_METRO_SIZES", '{"am6": {"public4": 32, "public6": 64}}')
    monkeypatch.setenv("METALFLOW_IPAM_HOST_SIZES", '{"project_private4": 24}')

    found = Settings()

    packet = {"public4": 31, "private4": 31, "public6": 127, "project_public6": 56}
    assert found.host_sizes("ny5") == {**packet, "project_private4": 24}
    assert found.host_sizes("am6") == {
        **packet,
        "project_private4": 24,
        "public4": 32,
        "public6": 64,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"am6": {"public_v4": 31}},
            "METALFLOW_IPAM_METRO_SIZES['am6']: 'public_v4' is not a per-host size: use one of"
            " public4, private4, public6, project_private4, project_public6",
        ),
        (
            {"am6": {"public6": 129}},
            "METALFLOW_IPAM_METRO_SIZES['am6']: public6 must be an IPv6 prefix length from 64"
            " to 128 (got 129)",
        ),
        (
            {"am6": {"private4": 28, "project_private4": 29}},
            "METALFLOW_IPAM_METRO_SIZES['am6']: a /29 project_private4 block cannot hold a /28"
            " private4: make project_private4 at most 28",
        ),
        (
            {"am6": {"public6": 56}},
            "public6 must be an IPv6 prefix length from 64 to 128 (got 56)",
        ),
        ({" ": {}}, "METALFLOW_IPAM_METRO_SIZES: a metro code is empty"),
    ],
)
def test_a_bad_size_override_is_named_with_the_fix(
    overrides: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"ipam_metro_sizes": overrides})

    assert message in str(caught.value)


def test_an_override_is_checked_against_the_defaults_it_leaves_in_place() -> None:
    with pytest.raises(ValidationError, match="HOST_SIZES: a /29 project_private4 block"):
        Settings.model_validate({"ipam_host_sizes": {"private4": 28, "project_private4": 29}})
    with pytest.raises(ValidationError, match=r"\['am6'\]: a /30 project_private4 block"):
        Settings.model_validate(
            {
                "ipam_host_sizes": {"private4": 29},
                "ipam_metro_sizes": {"am6": {"project_private4": 30}},
            }
        )
