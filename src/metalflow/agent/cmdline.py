"""Where the agent finds its server and identity: kernel command line, environment, flags.

``shlex.split`` does the quoting the way the kernel's own parser does for the cases that
matter here (double quotes around a value or around a whole ``key="a b"`` word); a full
reimplementation of ``lib/cmdline.c`` would add nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

KEYS = ("url", "token", "mac", "machine", "discovery")
TRUE = ("1", "true", "yes", "on")
PREFIX = "metalflow."
ENV_PREFIX = "METALFLOW_AGENT_"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says how to supply it."""


@dataclass(frozen=True)
class Config:
    url: str
    token: str
    """Empty when the machine boots for discovery: `discover` hands out its token."""
    mac: str | None = None
    machine: str | None = None
    discovery: bool = False


def parse_cmdline(text: str) -> dict[str, str]:
    """The ``metalflow.*`` parameters of a /proc/cmdline-style string; the last one wins."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    found: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name in KEYS:
            found[name] = value.strip("\"'")
    return found


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in KEYS:
        value = environ.get(ENV_PREFIX + name.upper())
        if value:
            found[name] = value
    return found


def resolve(flags: Mapping[str, str | None], environ: Mapping[str, str], cmdline: str) -> Config:
    """Flags beat the environment, which beats the kernel command line."""
    merged = parse_cmdline(cmdline)
    merged.update(from_environment(environ))
    merged.update({k: v for k, v in flags.items() if v})
    discovery = merged.get("discovery", "").lower() in TRUE
    for name in ("url",) if discovery else ("url", "token"):
        if not merged.get(name):
            raise ConfigError(
                f"no {name}: pass --{name}, set {ENV_PREFIX}{name.upper()}, or boot with"
                f" {PREFIX}{name}=... on the kernel command line"
            )
    url = merged["url"].rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"url {url!r} must start with http:// or https://")
    return Config(
        url=url,
        token=merged.get("token", ""),
        mac=merged.get("mac"),
        machine=merged.get("machine"),
        discovery=discovery,
    )


def read_proc_cmdline(path: str = "/proc/cmdline") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""
