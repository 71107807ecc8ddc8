"""Errors that services raise for callers to see: each names the field at fault and the fix.

The API maps them to HTTP statuses in one place; the CLI shows their message on one line.
"""

from __future__ import annotations

from pydantic_core import ErrorDetails


class MetalflowError(Exception):
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def detail(self) -> dict[str, str | None]:
        return {"message": self.message, "field": self.field}


class Unauthorized(MetalflowError):
    """No token, or one that is unknown or revoked (the API adds `WWW-Authenticate`)."""

    status = 401


class NotFound(MetalflowError):
    status = 404


class Forbidden(MetalflowError):
    status = 403


class Conflict(MetalflowError):
    status = 409


class TooLarge(MetalflowError):
    status = 413


class Invalid(MetalflowError, ValueError):
    """Also a ValueError, so pydantic validators may raise it and name the field."""

    status = 422


def validation_message(error: ErrorDetails) -> str:
    """A pydantic error's text, without the "Value error, " pydantic puts before the message
    of a validator's own ValueError (ours already say what is wrong and how to fix it)."""
    return str(error["msg"]).removeprefix("Value error, ")
