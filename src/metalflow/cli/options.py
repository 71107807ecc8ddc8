"""Options and argument parsing shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer

HardwareMap = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        metavar="KEY=VALUE",
        help="Template variable for the workflow's hardware map; repeat for more.",
        show_default=False,
    ),
]


def pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """`["k=v", ...]` as a dict; a value without `=` is a usage error naming `option`."""
    result: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        result[key] = val
    return result
