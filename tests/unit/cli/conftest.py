"""Fixtures: a clean environment, a fake server wired into the CLI, and a command runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from metalflow.cli import app, context
from tests.unit.cli.fakes import TOKEN, FakeServer

TERMINAL_VARIABLES = {"FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No METALFLOW_* or terminal settings leak in, nor a credentials file of `metalflow login`;
    the default data dir is empty."""
    for name in list(os.environ):
        if name.startswith("METALFLOW_") or name in TERMINAL_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(context, "make_transport", lambda: httpx.MockTransport(fake.handle))
    monkeypatch.setenv("METALFLOW_TOKEN", TOKEN)
    return fake


@pytest.fixture
def run() -> Callable[..., Result]:
    """`run("machine", "list", input=None)` invokes `metalflow machine list`."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), input=input)

    return invoke
