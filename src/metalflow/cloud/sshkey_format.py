"""OpenSSH public key lines (`TYPE BASE64 [COMMENT]`, as in `~/.ssh/id_ed25519.pub`): parsed,
checked, normalised and fingerprinted the way Equinix Metal showed them (MD5, colon-separated
hex, as `ssh-keygen -l -E md5` prints without its `MD5:`).

Looked at: RFC 4253 §6.6 (ssh-rsa), RFC 5656 §3.1 (ecdsa-sha2-*), RFC 8709 (ssh-ed25519),
OpenSSH's PROTOCOL.u2f (sk-*), and `cryptography`'s `load_ssh_public_key`, which reads all of
them and checks the key material (an RSA modulus, a point on the curve); it is used for that.
What it does not say in words a user can act on is done here first: the line's shape, a known
type, base64 that is canonical, the blob's own type matching the line's, RSA's size.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
MIN_RSA_BITS = 2048
MAX_LINE = 16_384
"""Longer than any key line OpenSSH makes (an RSA-16384 key is about 2,900 characters)."""
MAX_COMMENT = 1024


class KeyProblem(ValueError):
    """Why a line is not a public key this server takes, in words that say how to fix it."""


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    blob: bytes
    """The key in SSH wire format, as the base64 field carries it."""
    comment: str

    @property
    def line(self) -> str:
        """The normalised line: one space between fields, canonical base64."""
        encoded = base64.b64encode(self.blob).decode()
        return f"{self.key_type} {encoded} {self.comment}".rstrip()

    @property
    def fingerprint(self) -> str:
        digest = hashlib.md5(self.blob, usedforsecurity=False).hexdigest()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _inner_type(blob: bytes) -> str:
    """The type string a key blob starts with (a uint32 length, then the name)."""
    if len(blob) < 4:
        raise KeyProblem("the base64 field is too short to be a key")
    length = int.from_bytes(blob[:4], "big")
    if length > 64 or len(blob) < 4 + length:
        raise KeyProblem("the base64 field does not start with a key type: it is not an SSH key")
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        raise KeyProblem("the base64 field does not start with a key type") from None


def _decode(text: str) -> bytes:
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem(
            "the second field is not base64: paste the whole line of the .pub file"
        ) from None
    if base64.b64encode(blob).decode() != text:
        raise KeyProblem("the second field is not canonical base64 (padding or trailing bits)")
    return blob


def parse_public_key(text: str) -> PublicKey:
    """The key on `text` (surrounding white space ignored), or KeyProblem saying why not."""
    if len(text) > MAX_LINE:
        raise KeyProblem(f"longer than {MAX_LINE} characters: that is no public key line")
    line = text.strip()
    if not line:
        raise KeyProblem("empty: paste the public key line, e.g. the contents of id_ed25519.pub")
    if "\n" in line or "\r" in line:
        raise KeyProblem("more than one line: give one key per call")
    if line.startswith("-----BEGIN"):
        raise KeyProblem(
            "this is a PEM file, not an OpenSSH public key: give the .pub line"
            " (`ssh-keygen -y -f KEY` prints it)"
        )
    fields = line.split(maxsplit=2)
    key_type = fields[0]
    if key_type not in KEY_TYPES:
        if "PRIVATE" in line:
            raise KeyProblem("this is a private key: give the public one (the .pub file)")
        raise KeyProblem(
            f"{key_type[:40]!r} is not a key type taken here (one of {', '.join(KEY_TYPES)});"
            " authorized_keys options are not taken either"
        )
    if len(fields) < 2:
        raise KeyProblem(f"{key_type} is not followed by the key's base64")
    blob = _decode(fields[1])
    comment = fields[2].strip() if len(fields) > 2 else ""
    if len(comment) > MAX_COMMENT or not comment.isprintable():
        raise KeyProblem(f"the comment must be at most {MAX_COMMENT} printable characters")
    inner = _inner_type(blob)
    if inner != key_type:
        raise KeyProblem(f"the line says {key_type} but its base64 holds a {inner[:40]!r} key")
    try:
        material = load_ssh_public_key(f"{key_type} {fields[1]}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyProblem(f"the {key_type} key is damaged ({exc})") from None
    if isinstance(material, rsa.RSAPublicKey) and material.key_size < MIN_RSA_BITS:
        raise KeyProblem(
            f"this RSA key has {material.key_size} bits; at least {MIN_RSA_BITS} are needed"
            " (`ssh-keygen -t ed25519` makes a better one)"
        )
    return PublicKey(key_type, blob, comment)
