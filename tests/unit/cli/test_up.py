"""`metalflow up`: settings from flags and environment, then the (faked) server."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from metalflow.config import Role, ScriptToken, Settings
from tests.unit.cli.fakes import Run


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Replaces `metalflow.server.serve`, recording the settings it was given."""
    calls: list[Settings] = []
    module = types.ModuleType("metalflow.server")
    monkeypatch.setattr(module, "serve", calls.append, raising=False)
    monkeypatch.setitem(sys.modules, "metalflow.server", module)
    return calls


def test_flags_become_settings(served: list[Settings], run: Run, tmp_path: Path) -> None:
    result = run(
        "up",
        "--data-dir",
        str(tmp_path / "d"),
        "--database",
        "postgresql://db/metalflow",
        "--http",
        "127.0.0.1:9000",
    )

    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.data_dir == tmp_path / "d"
    assert settings.database == "postgresql://db/metalflow"
    assert settings.http == "127.0.0.1:9000"


def test_needs_no_token(served: list[Settings], run: Run) -> None:
    result = run("up")

    assert result.exit_code == 0, result.output
    assert served[0] == Settings()


def test_environment_fills_unset_flags(
    served: list[Settings], run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFLOW_HTTP", "0.0.0.0:8080")

    run("up", "--database", "sqlite:///x.db")

    assert served[0].http == "0.0.0.0:8080"
    assert served[0].database == "sqlite:///x.db"


def test_global_data_dir_is_used(served: list[Settings], run: Run, tmp_path: Path) -> None:
    run("--data-dir", str(tmp_path / "g"), "up")

    assert served[0].data_dir == tmp_path / "g"


def test_bad_http_names_the_option(served: list[Settings], run: Run) -> None:
    result = run("up", "--http", "7080")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --http must be ADDR:PORT")
    assert len(result.stderr.splitlines()) == 1
    assert served == []


def test_bad_environment_names_the_variable(
    served: list[Settings], run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFLOW_CONTROLLER_INTERVAL", "-1")

    result = run("up")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: METALFLOW_CONTROLLER_INTERVAL: ")


def test_script_token_settings(
    served: list[Settings], run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("up").exit_code == 0
    assert served[0].script_token is ScriptToken.BOOT
    assert served[0].boot_token_ttl == 1800 and not served[0].script_token_any_address

    flags = ("--script-token", "agent", "--boot-token-ttl", "60", "--script-token-any-address")
    assert run("up", *flags).exit_code == 0
    assert served[1].script_token is ScriptToken.AGENT
    assert served[1].boot_token_ttl == 60 and served[1].script_token_any_address

    monkeypatch.setenv("METALFLOW_SCRIPT_TOKEN", "agent")
    assert run("up").exit_code == 0
    assert served[2].script_token is ScriptToken.AGENT


def test_bad_boot_token_ttl_names_the_option(served: list[Settings], run: Run) -> None:
    result = run("up", "--boot-token-ttl", "0")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --boot-token-ttl")
    assert served == []


def test_discovery_limits_from_flags(served: list[Settings], run: Run) -> None:
    result = run(
        "up",
        "--discovery-networks",
        "192.0.2.0/24, 2001:db8::/32",
        "--discovery-networks",
        "198.18.0.0/15",
        "--discovery-rate-per-address",
        "3",
        "--discovery-rate",
        "30",
    )

    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.discovery_networks == ["192.0.2.0/24", "2001:db8::/32", "198.18.0.0/15"]
    assert (settings.discovery_rate_per_address, settings.discovery_rate) == (3, 30)


def test_a_bad_discovery_network_names_the_option(served: list[Settings], run: Run) -> None:
    result = run("up", "--discovery-networks", "192.0.2.0/24,rack2")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --discovery-networks 'rack2' is not an address")
    assert served == []


def test_up_passes_the_roles_on(served: list[Settings], run: Run) -> None:
    result = run("up", "--roles", "api,boot")

    assert result.exit_code == 0, result.output
    assert served[0].roles == {Role.API, Role.BOOT}


def test_up_refuses_an_unknown_role_with_exit_2(served: list[Settings], run: Run) -> None:
    result = run("up", "--roles", "api,controler")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --roles: 'controler' is not a role (valid: api,")
    assert len(result.stderr.splitlines()) == 1
    assert served == []
