"""Finding files in an unpacked staging root, whose symlinks point into the root, not the host."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

MERGED = ("bin", "sbin", "lib", "lib64")
"""Top-level directories that are links into /usr in the initramfs (merged /usr, as Debian 12)."""


def initramfs_path(path: PurePosixPath) -> str:
    """Where a file of a package lands: `lib/x/y` -> `usr/lib/x/y` (the top dirs link to usr/)."""
    parts = PurePosixPath("/", path).parts[1:]
    if parts and parts[0] in MERGED:
        parts = ("usr", *parts)
    return "/".join(parts)


def resolve_in_root(root: Path, path: PurePosixPath, limit: int = 40) -> Path | None:
    """The real file behind `path` inside `root`, following symlinks as if `root` were `/`.

    None when it does not exist or the links loop.
    """
    current = PurePosixPath("/", path)
    for _ in range(limit):
        host = root / current.relative_to("/")
        if host.is_symlink():
            target = PurePosixPath(host.readlink().as_posix())
            current = target if target.is_absolute() else current.parent / target
            current = PurePosixPath("/", *_normalise(current.parts[1:]))
            continue
        return host if host.exists() else None
    return None


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            if out:
                out.pop()
        elif part not in (".", ""):
            out.append(part)
    return out
