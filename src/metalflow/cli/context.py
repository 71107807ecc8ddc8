"""The state every command shares: one API client and one output, built by the root callback."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import httpx
import typer

from metalflow.cli.client import ApiClient
from metalflow.cli.exit_codes import CliError, ExitCode
from metalflow.cli.output import Output
from metalflow.config import DEFAULT_DATA_DIR

TOKEN_FILE = "admin-token"
CREDENTIALS_FILE = "credentials"
"""The key `metalflow login` writes, under XDG_CONFIG_HOME (default ~/.config)/metalflow."""


def credentials_path() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "metalflow" / CREDENTIALS_FILE


def _read_token(path: Path) -> str:
    """The file's token, or "" when there is no such file."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f'cannot read token file "{path}": {exc}', ExitCode.BAD_INPUT) from None


def make_transport() -> httpx.BaseTransport | None:
    """The HTTP transport of the API client; None is the network (tests substitute a fake)."""
    return None


class CliContext:
    def __init__(self, *, url: str, token: str | None, data_dir: Path | None, out: Output) -> None:
        self.url = url
        self.token = token
        self.data_dir = data_dir
        self.out = out

    @cached_property
    def api(self) -> ApiClient:
        """Built on first use, so commands that need no server (`up`) need no token."""
        return ApiClient(self.url, self._resolve_token(), transport=make_transport())

    def close(self) -> None:
        if "api" in self.__dict__:
            self.api.close()

    def _resolve_token(self) -> str:
        """--token or METALFLOW_TOKEN, then the key of `metalflow login`, then the admin token."""
        if self.token:
            return self.token
        credentials = credentials_path()
        token = _read_token(credentials)
        if token:
            return token
        path = (self.data_dir or DEFAULT_DATA_DIR) / TOKEN_FILE
        token = _read_token(path)
        if not token:
            raise CliError(
                f'no API token: pass --token, set METALFLOW_TOKEN, run "metalflow login", or'
                f' point --data-dir at the directory holding "{TOKEN_FILE}" (looked for'
                f' "{credentials}" and "{path}")',
                ExitCode.BAD_INPUT,
            )
        return token


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_object(CliContext)
    assert obj is not None, "the root callback sets up the CLI context"
    return obj
