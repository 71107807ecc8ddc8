"""Checked values that every layer shares: MACs, names, iPXE words and URLs, the DHCP modes.

Plain Python, no pydantic or database imports, so the pure protocol cores (iPXE scripts, the
DHCP policy) and the configuration and inventory schemas apply one set of rules.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import urlsplit

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,198}[a-z0-9])?$"
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
MAX_IPXE_SCRIPT = 64 * 1024
IPXE_MAGIC = "#!ipxe"
IPXE_COMMAND_SEPARATORS = frozenset({"||", "&&", ";"})


class DhcpMode(StrEnum):
    RESERVATION = "reservation"
    """Full DHCP: known machines get their address; an optional pool serves unknown ones."""
    PROXY = "proxy"
    """ProxyDHCP beside the site's DHCP: boot options only, never an address."""
    OFF = "off"
    """No DHCP from metalflow; the site's DHCP chains iPXE to metalflow's HTTP URL."""


def normalize_mac(value: str) -> str:
    raw = value.strip().lower()
    if not _MAC.match(raw):
        raise ValueError(f"{value!r} is not a MAC address; write it as 52:54:00:12:34:56")
    digits = raw.replace(":", "").replace("-", "")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def check_script_words(value: str, what: str) -> str:
    """Words that an iPXE script passes on as they are (kernel arguments, echo text), or refused.

    iPXE has no quoting: it reads a script line by line (a trailing backslash joins the next
    line), splits a line at whitespace, expands `${name}` as a setting, starts a new command at
    a `||`, `&&` or `;` word and ignores the rest of the line from a word starting with `#`.
    Any of these in what an operator writes would change the script, not the kernel command line.
    """
    for char in value:
        if not (char == " " or "!" <= char <= "~"):
            raise ValueError(
                f"{what} must be one line of printable ASCII characters; found {char!r}"
            )
    if "${" in value:
        raise ValueError(f"{what} must not contain '${{' (iPXE would expand it as a setting)")
    if "\\" in value:
        raise ValueError(f"{what} must not contain '\\' (iPXE reads it as a line continuation)")
    for word in value.split():
        if word in IPXE_COMMAND_SEPARATORS:
            raise ValueError(
                f"{what} must not contain the word {word!r} (iPXE would start another command)"
            )
        if word.startswith("#"):
            raise ValueError(
                f"{what} must not contain a word starting with '#' ({word!r}): iPXE would"
                " ignore the rest of the line"
            )
    return value


def check_http_url(value: str, what: str) -> str:
    """An http(s) URL that is one iPXE word: no whitespace, no `${` expansion, no backslash."""
    check_script_words(value, what)
    if " " in value:
        raise ValueError(f"{what} must not contain spaces; percent-encode them as %20")
    try:
        parts = urlsplit(value)
        valid = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:  # a bracketed host that is not IPv6, a port that is not a number
        valid = False
    if not valid:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, got {value!r}")
    return value


def check_ipxe_script(value: str, what: str) -> str:
    """A whole iPXE script: iPXE runs only a file starting with `#!ipxe` and whitespace."""
    if not re.match(re.escape(IPXE_MAGIC) + r"\s", value):
        raise ValueError(f"{what} must start with the line {IPXE_MAGIC!r}")
    size = len(value.encode())
    if size > MAX_IPXE_SCRIPT:
        raise ValueError(f"{what} is {size} bytes; the limit is {MAX_IPXE_SCRIPT} bytes")
    return value
