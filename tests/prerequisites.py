"""What a test needs from the machine it runs on: under CI, where scripts/test.sh installs
everything, a missing piece fails the test; elsewhere it skips, saying how to get it."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
"""PATH plus the sbin directories, where mkfs.*, losetup and friends live."""


def unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message + " (skipped outside CI only)")


def needs_tool(tool: str, package: str) -> str:
    """The tool's path, or unavailable() naming the Debian package that has it."""
    path = shutil.which(tool, path=_SEARCH_PATH)
    if path is None:
        unavailable(f"{tool} is not installed: apt-get install {package} (scripts/test.sh does)")
    return path


def needs_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (run scripts/test.sh as root)")
