"""The data dir's master key: encrypts BMC credentials at rest and signs agent, boot and run tokens.

Every process serving one database must share this key file (copy it with the data dir).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from metalflow.tenancy import tokens
from metalflow.tenancy.tokens import BootClaim, RunClaim

KEY_FILE = "secret.key"
_GENERATION = re.compile(r"[0-9]{1,9}")


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def load_or_create_master_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        make_data_dir(data_dir)
        with contextlib.suppress(FileExistsError):
            _write_private(path, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    return base64.urlsafe_b64decode(path.read_text().strip())


class Keyring:
    """Purpose-bound keys derived from the master key, so one secret file serves every use."""

    def __init__(self, master: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(self._derive(master, b"credentials")))
        self._agent_key = self._derive(master, b"agent-token")
        self._metadata_key = self._derive(master, b"metadata-token")
        self._boot_key = self._derive(master, b"boot-token")
        self._run_key = self._derive(master, b"run-token")

    @staticmethod
    def _derive(master: bytes, purpose: bytes) -> bytes:
        return hmac.new(master, b"metalflow:" + purpose, hashlib.sha256).digest()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "credentials were encrypted with another data dir's secret.key"
            ) from exc

    def agent_token(self, machine_id: str, generation: int) -> str:
        """A stable token per machine, needing no storage; bumping the generation revokes it."""
        mac = hmac.new(self._agent_key, f"{machine_id}:{generation}".encode(), hashlib.sha256)
        return (
            f"mfa.{machine_id}.{generation}.{base64.urlsafe_b64encode(mac.digest()[:24]).decode()}"
        )

    def metadata_token(self, machine_id: str, generation: int) -> str:
        """The secret path part of a machine's metadata URL (`/instances/TOKEN/...`), for OSes
        that reach the metadata service through NAT or a proxy; rotates with the agent token."""
        mac = hmac.new(self._metadata_key, f"{machine_id}:{generation}".encode(), hashlib.sha256)
        return (
            f"mfm.{machine_id}.{generation}.{base64.urlsafe_b64encode(mac.digest()[:24]).decode()}"
        )

    def parse_metadata_token(self, token: str) -> tuple[str, int] | None:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "mfm" or not _GENERATION.fullmatch(parts[2]):
            return None
        machine_id, generation = parts[1], int(parts[2])
        if not hmac.compare_digest(token, self.metadata_token(machine_id, generation)):
            return None
        return machine_id, generation

    def parse_agent_token(self, token: str) -> tuple[str, int] | None:
        """(machine_id, generation) when the signature holds, else None."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "mfa" or not _GENERATION.fullmatch(parts[2]):
            return None
        machine_id, generation = parts[1], int(parts[2])
        if not hmac.compare_digest(token, self.agent_token(machine_id, generation)):
            return None
        return machine_id, generation

    def boot_token(self, claim: BootClaim) -> str:
        """What an iPXE script carries (see `tokens`); raises ValueError on an id with a dot."""
        return tokens.boot_token(self._boot_key, claim)

    def parse_boot_token(self, token: str) -> BootClaim | None:
        return tokens.parse_boot_token(self._boot_key, token)

    def run_token(self, claim: RunClaim) -> str:
        return tokens.run_token(self._run_key, claim)

    def parse_run_token(self, token: str) -> RunClaim | None:
        return tokens.parse_run_token(self._run_key, token)


def new_api_token() -> str:
    return "mf_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens are 256-bit random, so one SHA-256 suffices (no stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def write_admin_token(data_dir: Path, token: str) -> Path:
    """Replaces any stale file (e.g. from a database the data dir used before)."""
    path = data_dir / "admin-token"
    temporary = data_dir / f".admin-token.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    _write_private(temporary, token + "\n")
    os.replace(temporary, path)
    return path


def make_data_dir(data_dir: Path) -> None:
    """Private to its owner: it holds the database, the master key and the admin token."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
