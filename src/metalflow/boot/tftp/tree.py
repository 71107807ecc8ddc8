"""The files the TFTP server may serve: named single files plus directory roots, read-only.

A virtual tree rather than one TFTP root directory, because the iPXE binaries stay where the
distribution installs them (/usr/lib/ipxe, partly symlinks into /boot) and a copy would go stale
on upgrade. File names arrive over unauthenticated UDP, so a name is confined before it touches
the file system: no "..", no NUL, nothing a symlink takes out of its directory, regular files only.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from metalflow.boot.tftp.session import ErrorCode


class TreeError(Exception):
    """A name the tree will not serve; `code` is the TFTP error to answer with."""

    code: ClassVar[ErrorCode]

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name!r}: {reason}")
        self.name = name
        self.reason = reason
        """For the log: the client is only told the code's meaning."""


class FileNotFound(TreeError):
    code = ErrorCode.FILE_NOT_FOUND


class AccessViolation(TreeError):
    code = ErrorCode.ACCESS_VIOLATION


def split_name(name: str) -> tuple[str, ...]:
    """A client's file name as path components, or refused.

    PXE ROMs ask for "/pxelinux.0" and Windows-minded ones for "boot\\pxeboot.n12": leading "/"
    is dropped and "\\" read as "/", so both name files inside the tree. Empty and "." components
    vanish; ".." and NUL are refused outright rather than resolved.
    """
    if "\0" in name:
        raise AccessViolation(name, "NUL in file name")
    parts = tuple(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))
    if ".." in parts:
        raise AccessViolation(name, "'..' in file name")
    return parts


class VirtualTree:
    """`files` maps a served name to one file anywhere (symlinks followed: the operator chose
    it). `directories` maps a name prefix ("" for the top) to a directory whose contents are
    served below that prefix, confined to it. Single files win over directories, and a longer
    prefix is tried before a shorter one.
    """

    def __init__(
        self,
        files: Mapping[str, Path] | None = None,
        directories: Mapping[str, Path] | None = None,
    ) -> None:
        self._files: dict[tuple[str, ...], Path] = {}
        for name, path in (files or {}).items():
            parts = _configured_name(name)
            if not parts:
                raise ValueError(f"served file name {name!r} is empty")
            self._files[parts] = Path(path)
        roots: list[tuple[tuple[str, ...], Path]] = []
        for prefix, root in (directories or {}).items():
            resolved = Path(root).resolve(strict=True)
            if not resolved.is_dir():
                raise ValueError(f"TFTP directory {root} is not a directory")
            roots.append((_configured_name(prefix), resolved))
        self._directories = sorted(roots, key=lambda entry: len(entry[0]), reverse=True)

    def resolve(self, name: str) -> Path:
        """The real path of a regular file to serve for `name`.

        Raises FileNotFound or AccessViolation, both TreeError.
        """
        parts = split_name(name)
        if not parts:
            raise AccessViolation(name, "names the top of the tree")
        if parts in self._files:
            return _regular_file(name, self._files[parts])
        for prefix, root in self._directories:
            if len(parts) > len(prefix) and parts[: len(prefix)] == prefix:
                found = _inside(name, root, parts[len(prefix) :])
                if found is not None:
                    return found
        raise FileNotFound(name, "not in the TFTP tree")


def _configured_name(name: str) -> tuple[str, ...]:
    try:
        return split_name(name)
    except TreeError as exc:
        raise ValueError(f"TFTP tree name {name!r}: {exc.reason}") from None


def _inside(name: str, root: Path, parts: tuple[str, ...]) -> Path | None:
    """The file under `root`, None when it is not there; refused when it escapes `root`."""
    try:
        real = root.joinpath(*parts).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, RuntimeError) as exc:
        # Python 3.11 reports a symlink loop as RuntimeError, later versions as OSError (ELOOP).
        raise AccessViolation(name, f"cannot resolve: {exc}") from None
    if not real.is_relative_to(root):
        raise AccessViolation(name, f"resolves outside {root}")
    return _regular_file(name, real)


def _regular_file(name: str, path: Path) -> Path:
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFound(name, f"{path} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise AccessViolation(name, f"cannot resolve: {exc}") from None
    if not stat.S_ISREG(mode):
        raise AccessViolation(name, f"{real} is not a regular file")
    return real
