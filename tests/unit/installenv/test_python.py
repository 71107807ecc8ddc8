"""stdlib pruning rules and the DT_NEEDED closure."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.installenv import python


@pytest.mark.parametrize(
    "path",
    [
        "json/__init__.py",
        "urllib/request.py",
        "http/client.py",
        "ssl.py",
        "hashlib.py",
        "gzip.py",
        "bz2.py",
        "lzma.py",
        "subprocess.py",
        "threading.py",
        "zipfile.py",
        "zipimport.py",
        "shutil.py",
        "tempfile.py",
        "logging/handlers.py",
        "argparse.py",
        "platform.py",
        "struct.py",
        "encodings/utf_8.py",
        "asyncio/events.py",
        "ctypes/__init__.py",
        "_sysconfigdata__x86_64-linux-gnu.py",
        "lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_hashlib.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_lzma.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_bz2.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so",
    ],
)
def test_what_the_agent_needs_is_kept(path: str) -> None:
    assert python.keep_stdlib(PurePosixPath(path))


@pytest.mark.parametrize(
    "path",
    [
        "test/test_os.py",
        "idlelib/idle.py",
        "tkinter/__init__.py",
        "turtledemo/clock.py",
        "ensurepip/__init__.py",
        "lib2to3/main.py",
        "pydoc_data/topics.py",
        "json/__pycache__/decoder.cpython-311.pyc",
        "distutils/core.py",
        "sqlite3/dbapi2.py",
        "unittest/mock.py",
        "ctypes/test/test_x.py",
        "sitecustomize.py",
        "turtle.py",
        "lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/readline.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_curses.cpython-311-x86_64-linux-gnu.so",
        "config-3.11-x86_64-linux-gnu/Makefile",
        "EXTERNALLY-MANAGED",
        "__phello__/spam.py",
    ],
)
def test_what_it_does_not_need_is_dropped(path: str) -> None:
    assert not python.keep_stdlib(PurePosixPath(path))


parts = st.lists(st.sampled_from(["a", "json", "x.py", "lib-dynload"]), min_size=0, max_size=3)


@given(parts, st.sampled_from(sorted(python.DROPPED_DIRS)), parts, st.just("f.py"))
def test_nothing_below_a_dropped_directory_is_kept(
    before: list[str], dropped: str, after: list[str], name: str
) -> None:
    assert not python.keep_stdlib(PurePosixPath(*before, dropped, *after, name))


def test_soname_closure_follows_libraries_of_libraries() -> None:
    graph = {
        "usr/bin/python3.11": ["libm.so.6", "libz.so.1", "libc.so.6"],
        "_ssl.so": ["libssl.so.3", "libcrypto.so.3", "libc.so.6"],
        "lib/libssl.so.3": ["libcrypto.so.3", "libc.so.6"],
        "lib/libcrypto.so.3": ["libc.so.6"],
        "lib/libc.so.6": ["ld-linux-x86-64.so.2"],
        "lib/libm.so.6": ["libc.so.6"],
        "lib/ld-linux-x86-64.so.2": [],
    }
    present = {"libssl.so.3", "libcrypto.so.3", "libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2"}
    found, missing = python.resolve_sonames(
        ["usr/bin/python3.11", "_ssl.so"],
        lambda file: graph[file],
        lambda soname: f"lib/{soname}" if soname in present else None,
    )
    assert found == {soname: f"lib/{soname}" for soname in present}
    assert missing == {"libz.so.1"}


def test_every_mapped_soname_names_a_package() -> None:
    assert all(package for package in python.SONAME_PACKAGES.values())
    assert python.SONAME_PACKAGES["libcrypto.so.3"] == "libssl3"


def test_bytecode_only_for_the_same_minor_version() -> None:
    assert python.can_precompile((3, 11))
    assert not python.can_precompile((3, 12))
    assert python.bytecode_name(PurePosixPath("json/decoder.py")) == PurePosixPath(
        "json/decoder.pyc"
    )
