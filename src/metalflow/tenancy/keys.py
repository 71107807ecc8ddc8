"""API keys' text form: a kind prefix, a random body and a checksum, as GitHub's tokens have.

`mfu_` (a user's key) or `mfp_` (a project's key), then 40 base62 characters (about 238 random
bits) and 6 base62 characters of the body's CRC32. The prefix lets secret scanners find leaked
keys; the checksum tells a typo or a truncated paste from an unknown key without a database
lookup. Keys are stored as SHA-256 digests only: they are high-entropy, so no stretching is
needed (argon2 is for passwords, see `passwords`).

Pure (stdlib only). Looked at `secrets.token_urlsafe` (its alphabet has `-` and `_`, which break
double-click selection and some scanners' patterns) and at base62 packages on PyPI (a dependency
for a ten-line encoder): neither fit.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from dataclasses import dataclass
from enum import StrEnum

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 40
CHECKSUM_LENGTH = 6
DISPLAY_LENGTH = 12
"""How much of a key lists show (its prefix and the body's first characters) to tell keys apart."""


class KeyKind(StrEnum):
    USER = "user"
    """Acts as its user, in every project the user belongs to."""
    PROJECT = "project"
    """Acts in its one project only."""


PREFIXES = {KeyKind.USER: "mfu_", KeyKind.PROJECT: "mfp_"}
KEY_LENGTH = 4 + BODY_LENGTH + CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    """CRC32 in 6 base62 digits (62**6 > 2**32, so every CRC fits)."""
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate_key(kind: KeyKind) -> str:
    body = "".join(secrets.choice(BASE62) for _ in range(BODY_LENGTH))
    return PREFIXES[kind] + body + checksum(body)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """What the text alone says about a key: the database is asked only when `problem` is None."""

    kind: KeyKind | None
    """None when the prefix is none of metalflow's."""
    well_formed: bool
    checksum_ok: bool

    @property
    def problem(self) -> str | None:
        if self.kind is None:
            return "not a metalflow API key: keys start with mfu_ (user) or mfp_ (project)"
        if not self.well_formed:
            return (
                f"the key is malformed: it must be the prefix and {KEY_LENGTH - 4} letters and"
                " digits; copy it again, whole"
            )
        if not self.checksum_ok:
            return "the key's checksum does not match: it was mistyped or cut; copy it again"
        return None


def parse_key(text: str) -> ParsedKey:
    kind = next((k for k, prefix in PREFIXES.items() if text.startswith(prefix)), None)
    if kind is None:
        return ParsedKey(None, False, False)
    rest = text[len(PREFIXES[kind]) :]
    well_formed = len(rest) == BODY_LENGTH + CHECKSUM_LENGTH and all(c in BASE62 for c in rest)
    if not well_formed:
        return ParsedKey(kind, False, False)
    body, check = rest[:BODY_LENGTH], rest[BODY_LENGTH:]
    return ParsedKey(kind, True, secrets.compare_digest(check, checksum(body)))


def hash_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def display_prefix(text: str) -> str:
    """The part of a key safe to show again (in lists, in the audit log): too short to use."""
    return text[:DISPLAY_LENGTH]
