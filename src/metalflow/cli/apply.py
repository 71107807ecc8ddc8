"""`metalflow apply`: create or update machines, templates and workflows from YAML."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from metalflow.cli.client import Json, resource, work_timeout
from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import CliError, ExitCode
from metalflow.cli.render import Lines

STDIN = "-"


def apply(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Option(
            "-f",
            "--filename",
            metavar="FILE",
            help="YAML file of resources, '-' for stdin; repeat for more.",
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and report changes without saving.")
    ] = False,
) -> None:
    """Create or update the resources in YAML files, all of them or none."""
    cli = cli_context(ctx)
    stream = "\n---\n".join(read(name) for name in files).encode()
    response = cli.api.post(
        resource("apply"),
        params={"dry_run": dry_run},
        content=stream,
        content_type="application/yaml",
        timeout=work_timeout(len(stream)),
        check=(
            "`metalflow apply --dry-run` with the same files reports what was saved as "
            "unchanged, and `metalflow machine list` shows the machines"
        ),
    )
    cli.out.emit(response, results)


def read(name: str) -> str:
    """The text of a file, or of stdin for `-`."""
    try:
        if name == STDIN:
            return sys.stdin.read()
        with open(name, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CliError(f'file "{name}" not found', ExitCode.BAD_INPUT) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f'cannot read "{name}": {reason}', ExitCode.BAD_INPUT) from None


def results(data: Json) -> Lines:
    """`machine/m1 created` per resource, with ` (dry run)` when nothing was saved."""
    suffix = " (dry run)" if data.get("dry_run") else ""
    return Lines(
        Text(f"{str(item['kind']).lower()}/{item['name']} {item['action']}{suffix}")
        for item in data.get("results") or []
    )
