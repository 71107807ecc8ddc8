"""`metalflow apply`: create or update machines, templates and workflows from YAML."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from metalflow.cli.client import Json, resource
from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import CliError, ExitCode

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
    """Create or update the resources in YAML files; each file is applied in turn."""
    cli = cli_context(ctx)
    bodies = [read(name) for name in files]
    applied: list[Json] = []
    for body in bodies:
        response = cli.api.post(
            resource("apply"),
            params={"dry_run": dry_run},
            content=body,
            content_type="application/yaml",
        )
        applied.extend(response.get("results") or [])
        if cli.out.human:
            for item in response.get("results") or []:
                cli.out.print(result_line(item, dry_run=bool(response.get("dry_run"))))
    if not cli.out.human:
        cli.out.document({"dry_run": dry_run, "results": applied})


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


def result_line(item: Json, *, dry_run: bool) -> Text:
    """`machine/m1 created`, with ` (dry run)` when nothing was saved."""
    suffix = " (dry run)" if dry_run else ""
    return Text(f"{str(item['kind']).lower()}/{item['name']} {item['action']}{suffix}")
