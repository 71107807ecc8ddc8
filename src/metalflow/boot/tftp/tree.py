"""The files the TFTP server may serve: named single files plus directory roots, read-only.

A virtual tree rather than one TFTP root directory, because the iPXE binaries stay where the
distribution installs them (/usr/lib/ipxe, partly symlinks into /boot) and a copy would go stale
on upgrade. File names arrive over unauthenticated UDP, so a name is confined before it touches
the file system: no "..", no NUL, nothing a symlink takes out of its directory, regular files only.

`open` then opens the resolved file relative to a descriptor of its root, so that a directory
swapped for a symlink after `resolve` looked cannot lead outside: with openat2(2)
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the kernel has it (Linux 5.6), else one component at
a time with O_NOFOLLOW. Python has no os.openat2; on PyPI, pathrs (0.2.6, the bindings of
libpathrs) needs the libpathrs C library, which Debian does not package, so the system call is
made through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import stat
from collections.abc import Callable, Mapping, Sequence
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


RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437
"""The same number on every architecture since Linux 5.1's unified table (alpha aside)."""
_UNIFIED_SYSCALLS = ("x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x", "armv7l")
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


OpenAt2 = Callable[[int, str, int, int], int]
"""(dir_fd, relative path, open flags, resolve flags) -> fd; OSError as os.open raises it."""


@functools.cache
def _syscall() -> Callable[..., int] | None:
    if platform.machine() not in _UNIFIED_SYSCALLS:
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    return function


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2); OSError(ENOSYS) where this kernel or architecture lacks it."""
    syscall = _syscall()
    if syscall is None:
        raise OSError(errno.ENOSYS, "openat2 is not available here")
    how = _OpenHow(flags, 0, resolve)
    fd = syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def _walk(dir_fd: int, parts: Sequence[str]) -> int:
    """The fallback: each directory opened O_NOFOLLOW relative to the one before it."""
    current = dir_fd
    try:
        for part in parts[:-1]:
            following = os.open(part, _DIRECTORY_FLAGS, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = following
        return os.open(parts[-1], _READ_FLAGS | os.O_NOFOLLOW, dir_fd=current)
    finally:
        if current != dir_fd:
            os.close(current)


def open_beneath(
    name: str, root: Path, parts: Sequence[str], *, beneath: OpenAt2 | None = openat2
) -> int:
    """A read-only descriptor of the regular file `root/parts`, no symlink followed on the way.

    `beneath` is openat2, or None to walk the components (what a kernel without it gets).
    """
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise AccessViolation(name, f"cannot open {root}: {exc.strerror}") from None
    try:
        fd = None
        if beneath is not None:
            try:
                fd = beneath(
                    dir_fd, "/".join(parts), _READ_FLAGS, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
                )
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise
        if fd is None:
            fd = _walk(dir_fd, parts)
    except FileNotFoundError:
        raise FileNotFound(name, f"{root.joinpath(*parts)} is gone") from None
    except OSError as exc:
        # ELOOP or ENOTDIR: a symlink on the way; EXDEV: a way out of root.
        raise AccessViolation(name, f"{root.joinpath(*parts)}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    return _checked_regular(name, fd)


def _checked_regular(name: str, fd: int) -> int:
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AccessViolation(name, "not a regular file when opened")
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        return self._locate(name)[1]

    def open(self, name: str, *, beneath: OpenAt2 | None = openat2) -> int:
        """A read-only, non-blocking descriptor of the regular file `resolve(name)` names.

        A file under a directory root is opened relative to that root along its real path,
        so a symlink or FIFO swapped in since `resolve` looked is refused, not followed.
        """
        root, real = self._locate(name)
        if root is None:
            try:
                fd = os.open(real, _READ_FLAGS | os.O_NOFOLLOW)
            except FileNotFoundError:
                raise FileNotFound(name, f"{real} is gone") from None
            except OSError as exc:
                raise AccessViolation(name, f"{real}: {exc.strerror}") from None
            return _checked_regular(name, fd)
        return open_beneath(name, root, real.relative_to(root).parts, beneath=beneath)

    def _locate(self, name: str) -> tuple[Path | None, Path]:
        """The directory root `name` is served from (None for a single file), and its file."""
        parts = split_name(name)
        if not parts:
            raise AccessViolation(name, "names the top of the tree")
        if parts in self._files:
            return None, _regular_file(name, self._files[parts])
        for prefix, root in self._directories:
            if len(parts) > len(prefix) and parts[: len(prefix)] == prefix:
                found = _inside(name, root, parts[len(prefix) :])
                if found is not None:
                    return root, found
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
