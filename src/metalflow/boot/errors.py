"""The one error the boot services raise at start: bad configuration, missing interface."""

from __future__ import annotations

from metalflow.errors import Invalid


class BootSetupError(Invalid):
    """`metalflow up` shows it as one line and exits 2."""
