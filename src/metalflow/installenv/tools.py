"""The programs the agent's built-in actions call, taken one by one from their Debian packages.

Only the named executables (and, through the builder's DT_NEEDED walk, their libraries) go into
the initramfs, not the whole package: util-linux alone would add megabytes for one `wipefs`.
qemu-img (qcow2 images) is left out: with its libraries it would take the initramfs past the
15 MB budget, and image2disk says how to convert such an image instead. kexec-tools is not
needed: the agent makes the kexec system calls itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Tool:
    package: str
    name: str
    """The executable's file name in the package (found in usr/sbin, sbin, usr/bin or bin)."""
    aliases: tuple[str, ...] = ()
    """Other names linking to it; mke2fs picks the filesystem from the name it is called by."""
    version_flag: str = "--version"


TOOLS = (
    Tool("zstd", "zstd"),
    Tool("fdisk", "sfdisk"),
    Tool("util-linux", "wipefs"),
    Tool("e2fsprogs", "mke2fs", ("mkfs.ext2", "mkfs.ext3", "mkfs.ext4"), "-V"),
    Tool("dosfstools", "mkfs.fat", ("mkfs.vfat",)),
)

SEARCH_DIRS = ("usr/sbin", "sbin", "usr/bin", "bin")
INSTALL_DIR = "usr/sbin"


def packages() -> list[str]:
    return sorted({tool.package for tool in TOOLS})


def locate(tool: Tool, exists: Callable[[PurePosixPath], bool]) -> PurePosixPath | None:
    """Where the unpacked package put the executable (Debian 12 still ships some in /sbin)."""
    for directory in SEARCH_DIRS:
        candidate = PurePosixPath(directory, tool.name)
        if exists(candidate):
            return candidate
    return None


def selftest_commands() -> list[str]:
    """One shell command per program: run with its version flag, output discarded."""
    return [f"{tool.name} {tool.version_flag}" for tool in TOOLS]
