"""A writer for the newc ("070701") cpio format: the format the kernel unpacks an initramfs from.

Looked at: `libarchive-c` 5.3 (PyPI) writes newc, but is a ctypes binding that loads the C
libarchive, which every build host would then need; `cpiofile` (PyPI) calls itself "in initial
development"; GNU cpio and busybox cpio take entries from the file system, so device nodes would
need root. The format is a 110-byte ASCII header, the name and the data, each padded to 4 bytes:
small enough to write here, with no root needed for /dev/console.

Entries are sorted by path and missing parent directories are added, so parents come first and
equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
DEFAULT_MTIME = 0
"""Every entry gets this mtime unless told otherwise, so rebuilds are byte-identical."""


class Sink(Protocol):
    """Where an archive goes: a file, or a gzip/xz stream."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Entry:
    """One archive member. `data` is the content of a file (bytes, or a path read when written)."""

    path: str
    mode: int
    data: bytes | Path = b""
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME
    rdev: tuple[int, int] = (0, 0)

    @property
    def size(self) -> int:
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(_clean(path), stat.S_IFDIR | mode)


def file(path: str, data: bytes | Path, mode: int = 0o644) -> Entry:
    return Entry(_clean(path), stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(_clean(path), stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(_clean(path), stat.S_IFCHR | mode, rdev=(major, minor))


def _clean(path: str) -> str:
    """Archive names are relative ("dev/console"), as the kernel and GNU cpio expect."""
    parts = PurePosixPath("/", path).parts[1:]
    if not parts or any(part in (".", "..") for part in parts):
        raise ValueError(f"bad archive path {path!r}: need a relative path without '..'")
    return "/".join(parts)


def header(
    *,
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    mtime: int,
    size: int,
    rdev: tuple[int, int],
    name: str,
) -> bytes:
    """The header and the NUL-terminated name, padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
    raw = MAGIC + b"".join(b"%08X" % value for value in fields) + encoded
    return raw + _pad(len(raw))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by path, each parent directory before its children (added if missing).

    The same path twice is an error unless both entries are equal, since one would silently win.
    """
    by_path: dict[str, Entry] = {}
    for entry in entries:
        previous = by_path.setdefault(entry.path, entry)
        if previous != entry:
            raise ValueError(f"two different entries for {entry.path!r}")
    for path in list(by_path):
        for parent in PurePosixPath(path).parents:
            name = str(parent)
            if name == ".":
                continue
            existing = by_path.setdefault(name, directory(name))
            if not stat.S_ISDIR(existing.mode):
                raise ValueError(f"{name!r} is a parent of {path!r} but not a directory")
    return sorted(by_path.values(), key=lambda entry: PurePosixPath(entry.path).parts)


def write(entries: Iterable[Entry], out: Sink) -> None:
    """Write the archive, trailer included; files given as paths are streamed, not loaded."""
    for ino, entry in enumerate(ordered(entries), start=1):
        size = 0 if stat.S_ISDIR(entry.mode) or stat.S_ISCHR(entry.mode) else entry.size
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out.write(
            header(
                ino=ino,
                mode=entry.mode,
                uid=entry.uid,
                gid=entry.gid,
                nlink=nlink,
                mtime=entry.mtime,
                size=size,
                rdev=entry.rdev,
                name=entry.path,
            )
        )
        if isinstance(entry.data, Path):
            if size:
                with entry.data.open("rb") as source:
                    shutil.copyfileobj(source, out)
        elif size:
            out.write(entry.data)
        out.write(_pad(size))
    out.write(
        header(ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, size=0, rdev=(0, 0), name=TRAILER)
    )


def encode(entries: Iterable[Entry]) -> bytes:
    buffer = io.BytesIO()
    write(entries, buffer)
    return buffer.getvalue()
