"""The address machines reach this server at, for the boot scripts and the metadata documents."""

from __future__ import annotations

import re

from metalflow.config import Settings
from metalflow.errors import MetalflowError

WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def base_url(settings: Settings, host_header: str | None) -> str:
    """Where machines reach this server: `public_url`, else the `--http` address when it is a
    specific one, else the Host header the machine sent (iPXE sends it)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.http_host
    if host not in WILDCARD_ADDRESSES:
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{settings.http_port}"
    if host_header is None or not _HOST.fullmatch(host_header):
        raise MetalflowError(
            f"Host header {host_header!r} is not HOST[:PORT]; or set METALFLOW_PUBLIC_URL",
            field="host",
        )
    return f"http://{host_header}"
