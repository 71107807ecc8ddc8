"""Names of templates and workflows: what Kubernetes and tink accept, within the stored width."""

from __future__ import annotations

import re
from typing import Any

from metalflow.errors import Invalid

NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,198}[A-Za-z0-9])?")


def check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} is required", field=where)
    if not NAME.fullmatch(value.replace("_", "-")):
        raise Invalid(
            f"{where} {value[:60]!r} must be 1-200 letters, digits, '.', '_', ':' or '-',"
            " starting and ending with a letter or digit",
            field=where,
        )
    return value
