"""newc archives: a small reader here, round trips, and GNU cpio reading what was written."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.installenv import cpio
from tests.prerequisites import needs_tool
from tests.unit.installenv.newc import read_newc


def test_members_are_encoded_with_their_metadata() -> None:
    data = cpio.encode(
        [
            cpio.file("etc/hostname", b"box\n", 0o644),
            cpio.symlink("bin", "usr/bin"),
            cpio.char_device("dev/console", 5, 1),
            cpio.char_device("dev/null", 1, 3, 0o666),
            cpio.Entry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n", uid=1, gid=2, mtime=7),
        ]
    )
    members = {m.name: m for m in read_newc(data)}
    assert list(members) == ["bin", "dev", "dev/console", "dev/null", "etc", "etc/hostname", "init"]
    assert members["dev/console"].mode == stat.S_IFCHR | 0o600
    assert members["dev/console"].rdev == (5, 1)
    assert members["dev/null"].rdev == (1, 3)
    assert members["bin"].data == b"usr/bin"
    assert members["dev"].mode == stat.S_IFDIR | 0o755
    assert members["dev"].nlink == 2
    assert members["init"].uid == 1 and members["init"].gid == 2
    assert members["init"].mtime == 7
    assert members["etc/hostname"].mtime == cpio.DEFAULT_MTIME
    assert len({m.ino for m in members.values()}) == len(members)


def test_file_content_can_come_from_a_path(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(70_001))
    (member,) = read_newc(cpio.encode([cpio.file("big", source)]))
    assert member.data == source.read_bytes()


def test_empty_archive_is_just_the_trailer() -> None:
    assert read_newc(cpio.encode([])) == []


@pytest.mark.parametrize("bad", ["", "/", "a/../b", "./"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="bad archive path"):
        cpio.file(bad, b"")


def test_conflicting_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="two different entries"):
        cpio.encode([cpio.file("a", b"1"), cpio.file("a", b"2")])
    assert len(read_newc(cpio.encode([cpio.file("a", b"1"), cpio.file("a", b"1")]))) == 1


def test_a_file_cannot_be_a_parent() -> None:
    with pytest.raises(ValueError, match="not a directory"):
        cpio.encode([cpio.file("a", b""), cpio.file("a/b", b"")])


segment = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)
paths = st.lists(segment, min_size=1, max_size=4).map("/".join)
files = st.dictionaries(paths, st.binary(max_size=64), max_size=12)


def _consistent(tree: dict[str, bytes]) -> bool:
    """No path is both a file and another file's parent directory."""
    return not any(other.startswith(path + "/") for path in tree for other in tree)


@given(files.filter(_consistent))
def test_round_trip(tree: dict[str, bytes]) -> None:
    data = cpio.encode(cpio.file(path, content) for path, content in tree.items())
    members = read_newc(data)
    got = {m.name: m.data for m in members if stat.S_ISREG(m.mode)}
    assert got == tree
    seen: set[str] = set()
    for member in members:
        name = member.name
        parent = name.rpartition("/")[0]
        assert not parent or parent in seen, f"{name} before its parent"
        seen.add(name)


@given(files.filter(_consistent), st.randoms())
def test_output_does_not_depend_on_input_order(tree: dict[str, bytes], rng: Random) -> None:
    entries = [cpio.file(path, content) for path, content in tree.items()]
    shuffled = list(entries)
    rng.shuffle(shuffled)
    assert cpio.encode(entries) == cpio.encode(shuffled)


def gnu_cpio() -> str:
    return needs_tool("cpio", "cpio")


def test_gnu_cpio_lists_and_extracts_the_archive(tmp_path: Path) -> None:
    binary = gnu_cpio()
    archive = tmp_path / "a.cpio"
    archive.write_bytes(
        cpio.encode(
            [
                cpio.file("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
                cpio.symlink("bin", "usr/bin"),
                cpio.file("etc/empty", b""),
                cpio.file("etc/odd", b"abcde"),
                cpio.directory("tmp", 0o1777),
                cpio.Entry("etc/dated", stat.S_IFREG | 0o600, b"x", mtime=1_700_000_000),
            ]
        )
    )
    listing = subprocess.run(
        [binary, "-t", "--quiet"],
        stdin=archive.open("rb"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listing == [
        "bin",
        "etc",
        "etc/dated",
        "etc/empty",
        "etc/odd",
        "tmp",
        "usr",
        "usr/bin",
        "usr/bin/tool",
    ]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        [binary, "-idm", "--quiet", "--no-absolute-filenames"],
        stdin=archive.open("rb"),
        cwd=out,
        check=True,
    )
    assert (out / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "usr/bin/tool").stat().st_mode & 0o777 == 0o755
    assert os.readlink(out / "bin") == "usr/bin"
    assert (out / "etc/odd").read_bytes() == b"abcde"
    assert (out / "etc/empty").read_bytes() == b""
    assert (out / "etc/dated").stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE((out / "tmp").stat().st_mode) == 0o1777
