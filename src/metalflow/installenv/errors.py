"""The one error type of the builder: a message for the operator that names the fix."""

from __future__ import annotations


class InstallEnvError(Exception):
    """Bad input or a missing tool or package; the CLI shows the message and exits 2."""
