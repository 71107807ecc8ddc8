"""What of Debian's Python goes into the initramfs, and the shared libraries it needs.

The agent is stdlib only, so the interpreter plus a pruned stdlib is enough. Pruning is a rule on
the path below `usr/lib/python3.X`: test suites, GUI and REPL tooling, packaging tools, and
extension modules the agent never needs (curses, dbm, readline, sqlite, NIS, CJK codecs) go.
What is left (json, urllib, http, ssl, hashlib, gzip, bz2, lzma, zlib, subprocess, threading,
zipfile, zipimport, shutil, tempfile, logging, argparse, platform, struct, ctypes, asyncio, ...)
is what the agent may import.

The stdlib ships as bytecode only (`x.pyc` where `x.py` was, which Python imports without the
source): under emulation, compiling the sources at every boot took ~7 s of a 15 s boot, and
bytecode plus source would come close to the 15 MB budget. Tracebacks still name file and line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath

PYTHON_VERSION = "3.11"
PYTHON_PACKAGES = (
    f"python{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-stdlib",
)

DROPPED_DIRS = frozenset(
    {
        "__pycache__",
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "distutils",
        "sqlite3",
        "unittest",
        "curses",
        "dbm",
        "venv",
        "dist-packages",
        "site-packages",
    }
)
DROPPED_FILES = frozenset(
    {
        "EXTERNALLY-MANAGED",
        "LICENSE.txt",
        "turtle.py",
        "pydoc.py",
        "antigravity.py",
        "this.py",
        "__hello__.py",
        "doctest.py",
        "idle.py",
        "sitecustomize.py",
        "_pydecimal.py",
        "_distutils_system_mod.py",
    }
)
DROPPED_EXTENSIONS = frozenset(
    {
        "_ctypes_test",
        "_curses",
        "_curses_panel",
        "_dbm",
        "_gdbm",
        "_sqlite3",
        "_tkinter",
        "_testbuffer",
        "_testcapi",
        "_testclinic",
        "_testimportmultiple",
        "_testinternalcapi",
        "_testmultiphase",
        "_xxsubinterpreters",
        "_xxtestfuzz",
        "xxlimited",
        "xxlimited_35",
        "audioop",
        "nis",
        "ossaudiodev",
        "readline",
        "_crypt",
    }
)
"""lib-dynload modules, by module name (the part of the file name before the first dot)."""


def keep_stdlib(relative: PurePosixPath) -> bool:
    """Whether a file below `usr/lib/python3.X` goes into the initramfs."""
    parts = relative.parts
    if not parts or any(part in DROPPED_DIRS for part in parts[:-1]):
        return False
    name = parts[-1]
    if name in DROPPED_FILES or name.endswith((".pyc", ".exe", ".whl")):
        return False
    if parts[0] == "__phello__" or parts[0].startswith("config-"):
        return False
    if len(parts) == 2 and parts[0] == "lib-dynload":
        return name.split(".")[0] not in DROPPED_EXTENSIONS
    return True


def can_precompile(version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Bytecode is only valid for the same minor version (3.11.x share one magic number)."""
    return f"{version[0]}.{version[1]}" == PYTHON_VERSION


def bytecode_name(relative: PurePosixPath) -> PurePosixPath:
    """Where the sourceless bytecode of a stdlib `.py` goes (beside it, not in __pycache__)."""
    return relative.with_suffix(".pyc")


def resolve_sonames(
    roots: Iterable[str],
    needed_of: Callable[[str], Sequence[str]],
    find: Callable[[str], str | None],
) -> tuple[dict[str, str], set[str]]:
    """Close the DT_NEEDED graph: soname -> file for every library reached, plus those not found.

    `roots` are files (executables, extension modules); `needed_of(file)` gives a file's sonames;
    `find(soname)` gives the file providing it, or None.
    """
    found: dict[str, str] = {}
    missing: set[str] = set()
    queue = list(roots)
    visited: set[str] = set()
    while queue:
        current = queue.pop()
        if current in visited:
            continue
        visited.add(current)
        for soname in needed_of(current):
            if soname in found or soname in missing:
                continue
            target = find(soname)
            if target is None:
                missing.add(soname)
            else:
                found[soname] = target
                queue.append(target)
    return found, missing


SONAME_PACKAGES: dict[str, str] = {
    "libc.so.6": "libc6",
    "libm.so.6": "libc6",
    "libz.so.1": "zlib1g",
    "libexpat.so.1": "libexpat1",
    "libbz2.so.1.0": "libbz2-1.0",
    "liblzma.so.5": "liblzma5",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libffi.so.8": "libffi8",
    "libuuid.so.1": "libuuid1",
    "libmpdec.so.3": "libmpdec3",
    "libzstd.so.1": "libzstd1",
    "liblz4.so.1": "liblz4-1",
    "libfdisk.so.1": "libfdisk1",
    "libsmartcols.so.1": "libsmartcols1",
    "libblkid.so.1": "libblkid1",
    "libtinfo.so.6": "libtinfo6",
    "libreadline.so.8": "libreadline8",
    "libext2fs.so.2": "libext2fs2",
    "libcom_err.so.2": "libcom-err2",
    "libe2p.so.2": "libext2fs2",
}
"""Debian 12 package shipping each soname the kept files and tools need; the build fails
naming any other."""
