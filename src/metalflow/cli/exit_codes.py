"""Exit codes of the metalflow command and the one error type commands raise to use them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    """Server unreachable, server error (5xx), or a watched workflow did not succeed."""
    BAD_INPUT = 2
    """The request was refused (4xx), or a file or flag is wrong."""


class CliError(Exception):
    """An error shown as one `error: ...` line on stderr, then the command exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())
        self.code = code
