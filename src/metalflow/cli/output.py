"""Everything the CLI prints: tables for humans, JSON or YAML documents for scripts, errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console, RenderableType
from rich.text import Text

PIPE_WIDTH = 4096
"""Width used off a terminal, so a table row stays one line for grep and awk."""


class Dumper(yaml.CSafeDumper):
    """PyYAML's safe dumper on libyaml's emitter (the pure-Python one takes minutes for a list
    of 20,000 machines), except that a string holding U+0085 (NEL) is double-quoted: left
    plain or single-quoted, it is written raw and read back as a line break, so the document
    would no longer apply as it was shown."""

    def ignore_aliases(self, data: Any) -> bool:
        """API documents are trees parsed from JSON: no object repeats, so nothing is looked up
        to become an anchor."""
        return True


def _represent_str(dumper: Dumper, value: str) -> yaml.ScalarNode:
    style = '"' if "\x85" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _represent_str)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


class Output:
    def __init__(self, fmt: OutputFormat = OutputFormat.TABLE) -> None:
        self.format = fmt
        self.console = _console(stderr=False)
        self.err = _console(stderr=True)

    @property
    def human(self) -> bool:
        return self.format is OutputFormat.TABLE

    @property
    def live(self) -> bool:
        """True when stdout is a terminal that can show a live display."""
        return self.human and self.console.is_terminal

    def emit(self, data: Any, render: Callable[[Any], RenderableType]) -> None:
        """Print `render(data)` for humans, else `data` itself as a JSON or YAML document."""
        if self.human:
            self.console.print(render(data))
        else:
            self.document(data)

    def document(self, data: Any) -> None:
        if self.format is OutputFormat.JSON:
            self.write(json.dumps(data, indent=2) + "\n")
        else:
            self.write(yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True))

    def line(self, data: Any) -> None:
        """One document of a stream: a JSON line, or a YAML document starting with `---`."""
        if self.format is OutputFormat.JSON:
            self.write(json.dumps(data) + "\n")
        else:
            self.write(
                yaml.dump(
                    data, Dumper=Dumper, sort_keys=False, allow_unicode=True, explicit_start=True
                )
            )

    def print(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    def write(self, text: str) -> None:
        """Write text exactly as given, to the console's file: through Rich, a document is
        split, measured and wrapped line by line, which took 30 s for 20,000 machines."""
        self.console.file.write(text)

    def error(self, message: str) -> None:
        self.err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, markup=False, emoji=False, highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
    return console
