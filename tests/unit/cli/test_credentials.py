"""Where the CLI finds its token: METALFLOW_TOKEN, then `metalflow login`'s credentials file,
then the data dir's admin-token; and how login writes that file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalflow.cli.tenancy import write_credentials
from tests.unit.cli.fakes import TOKEN, FakeServer, Run

USERS = "/api/v1/users"
KEY = "mfu_" + "a" * 46


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config home and data dir holding an admin token."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    data_dir = tmp_path / "metalflow-data"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text("admin-token-value\n")
    return tmp_path


def credentials(home: Path) -> Path:
    return home / "config" / "metalflow" / "credentials"


def sent_token(server: FakeServer, run: Run) -> str:
    server.reply("GET", USERS, {"items": [], "count": 0})
    result = run("user", "list")
    assert result.exit_code == 0, result.output
    return server.last.headers["authorization"].removeprefix("Bearer ")


def test_the_environment_beats_the_credentials_file(
    server: FakeServer, run: Run, homes: Path
) -> None:
    write_credentials(credentials(homes), KEY)
    assert sent_token(server, run) == TOKEN


def test_the_credentials_file_beats_the_admin_token(
    server: FakeServer, run: Run, homes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METALFLOW_TOKEN")
    assert sent_token(server, run) == "admin-token-value"
    write_credentials(credentials(homes), KEY)
    assert sent_token(server, run) == KEY


def test_without_xdg_the_file_is_under_home_config(
    server: FakeServer, run: Run, homes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METALFLOW_TOKEN")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(homes / "home"))
    write_credentials(homes / "home" / ".config" / "metalflow" / "credentials", KEY)
    assert sent_token(server, run) == KEY


def test_no_token_anywhere_names_login_and_both_files(
    server: FakeServer, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METALFLOW_TOKEN")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = run("user", "list")
    assert result.exit_code == 2
    assert '"metalflow login"' in result.stderr
    assert str(tmp_path / "config" / "metalflow" / "credentials") in result.stderr
    assert server.requests == []


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1))
def test_rewriting_keeps_mode_0600_and_leaves_only_the_new_key(tmp_path: Path, first: str) -> None:
    path = tmp_path / first[:20] / "credentials"
    write_credentials(path, first)
    os.chmod(path, 0o644)
    write_credentials(path, KEY)
    assert path.read_text() == KEY + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["credentials"]
