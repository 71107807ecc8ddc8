"""The agent's key for this boot: what lets a restarted agent exchange its boot token again.

A boot token (``mfb.``, from the iPXE script) is exchanged once at hello for the run token; the
server accepts the same boot token again only with the key the first exchange sent. The key is
kept under /run (a tmpfs: gone with the boot, never on the disk being installed), so an agent
that restarts in the same boot says hello again and gets the same run token, while anyone who
only copied the boot token from the script cannot.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .system import Log

DEFAULT_STATE_DIR = Path("/run/metalflow-agent")
KEY_FILE = "boot-key"
BOOT_TOKEN_PREFIX = "mfb."


def is_boot_token(token: str) -> bool:
    return token.startswith(BOOT_TOKEN_PREFIX)


def boot_key(state_dir: Path, log: Log) -> str:
    """The key of this boot: read, else created (0600); in memory only when the directory
    cannot be written (then a restarted agent cannot exchange again: netboot once more)."""
    path = state_dir / KEY_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log(f"cannot read {path} ({error}); using a key held in memory only")
        return secrets.token_urlsafe(32)
    key = secrets.token_urlsafe(32)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as error:
        log(f"cannot keep the boot key in {path} ({error}); using a key held in memory only")
        return key
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _read(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise OSError(f"{path} is empty")
    return key
