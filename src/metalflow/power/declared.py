"""A declared BMC checked offline by its own driver when it is applied: a typo in a host or an
option fails the apply, not a power job hours later while a workflow waits on it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from metalflow.inventory.schemas import BmcSpec
from metalflow.power.driver import DriverFactory, driver_class
from metalflow.power.service import bmc_from

SECONDS_OPTIONS = ("power_timeout", "soft_off_timeout", "poll_interval")
"""The job's own `bmc.options` that `runner.limits_for` reads as seconds."""
_DRIVER_FIELD = re.compile(r"^(host|port|username|password|insecure_tls|options\.[\w.-]+): (.*)$")
_SPEC_FIELD = {"host": "address"}
"""A driver's `Bmc` field → the `spec.bmc` field an operator writes."""


class BmcFieldError(ValueError):
    """`field` is the path inside `spec.bmc` ("address", "options.system"; "" for the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _seconds(key: str, value: Any) -> None:
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BmcFieldError(
            f"options.{key}",
            f"{repr(value)[:40]} is not a number of seconds; write e.g. {key}: 120",
        )


def _installed(name: str) -> DriverFactory | None:
    """The driver, or None where this build lacks it (its module or its library is missing):
    such a BMC is checked when a power job first loads its driver."""
    try:
        return driver_class(name)
    except (ValueError, ModuleNotFoundError):
        return None


def check(spec: BmcSpec) -> None:
    """BmcFieldError naming the field when `spec` cannot work with its driver; never contacts
    the BMC (drivers' `validate` is offline)."""
    for key in SECONDS_OPTIONS:
        if key in spec.options:
            _seconds(key, spec.options[key])
    factory = _installed(spec.driver)
    if factory is None:
        return
    password = spec.password.get_secret_value() if spec.password is not None else None
    bmc = bmc_from(spec.driver, spec.address, spec.username, password, spec.stored_options())
    try:
        factory.validate(bmc)
    except ValueError as exc:
        found = _DRIVER_FIELD.match(str(exc))
        if found is None:
            raise BmcFieldError("", str(exc)) from None
        name, message = found.groups()
        raise BmcFieldError(_SPEC_FIELD.get(name, name), message) from None
