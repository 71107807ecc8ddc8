"""image2disk's pure parts: format detection, incremental decompression, checks, progress."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.agent.actions.base import ActionError, Context
from metalflow.agent.actions.image import (
    Progress,
    decompress,
    detect_format,
    parse_checksum,
    wipe_ends,
)
from metalflow.agent.system import System

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (gzip.compress(b"x", mtime=0), "gzip"),
        (bz2.compress(b"x"), "bzip2"),
        (lzma.compress(b"x"), "xz"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"QFI\xfb\x00\x00\x00\x03", "qcow2"),
        (b"\xeb\x63\x90" + bytes(13), "raw"),
        (b"", "raw"),
    ],
    ids=["gzip", "bzip2", "xz", "zstd", "qcow2", "raw-boot-sector", "raw-empty"],
)
def test_detects_by_magic(head: bytes, fmt: str) -> None:
    assert detect_format(head) == fmt


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(sorted(COMPRESSORS)),
    st.lists(st.binary(max_size=3000), min_size=1, max_size=3),
    st.lists(st.integers(0, 10_000), max_size=6),
    st.integers(1, 5000),
)
def test_decompresses_any_chunking_and_concatenated_streams(
    fmt: str, members: list[bytes], cuts: list[int], limit: int
) -> None:
    compressed = b"".join(COMPRESSORS[fmt](m) for m in members)
    out = list(decompress(pieces(compressed, cuts), fmt, limit=limit))
    assert b"".join(out) == b"".join(members)
    assert all(len(piece) <= limit for piece in out)


def test_zeros_expand_in_bounded_pieces() -> None:
    compressed = gzip.compress(bytes(64 << 20), compresslevel=1)
    assert len(compressed) < 1 << 20
    sizes = [len(p) for p in decompress(iter([compressed]), "gzip", limit=1 << 20)]
    assert sum(sizes) == 64 << 20 and max(sizes) == 1 << 20


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_truncated_stream_fails(fmt: str) -> None:
    compressed = COMPRESSORS[fmt](os.urandom(50_000))
    with pytest.raises(ActionError, match="ends early"):
        b"".join(decompress(iter([compressed[: len(compressed) // 2]]), fmt))


def test_checksum_forms() -> None:
    digest = "ab" * 32
    assert parse_checksum(f"sha256:{digest.upper()}") == digest
    assert parse_checksum(digest) == digest
    assert parse_checksum("") is None
    for bad in ("md5:" + "a" * 32, "sha256:xyz", "a" * 63):
        with pytest.raises(ActionError, match="CHECKSUM"):
            parse_checksum(bad)


def test_progress_every_five_percent_or_ten_seconds() -> None:
    progress = Progress(100 << 20, start=0.0)
    assert progress.update(1 << 20, 1.0) is None
    line = progress.update(5 << 20, 1.0)
    assert line == "downloaded 5.0 MiB of 100.0 MiB (5%), 5.0 MiB/s"
    assert progress.update(6 << 20, 2.0) is None
    assert progress.update(6 << 20, 11.0) is not None
    unknown = Progress(None, start=0.0)
    assert unknown.update(1 << 20, 5.0) is None
    assert unknown.update(2 << 20, 10.0) == "downloaded 2.0 MiB, 0.2 MiB/s"


@pytest.mark.parametrize("size", [512, 1 << 20, (1 << 20) + 512, 3 << 20])
def test_wipe_zeroes_first_and_last_mib_only(tmp_path: Path, size: int) -> None:
    target = tmp_path / "disk"
    target.write_bytes(b"\xff" * size)
    fd = os.open(target, os.O_WRONLY)
    try:
        wipe_ends(fd, size)
    finally:
        os.close(fd)
    data = target.read_bytes()
    assert len(data) == size
    mib = 1 << 20
    assert data[: min(mib, size)] == bytes(min(mib, size))
    assert data[max(0, size - mib) :] == bytes(min(mib, size))
    assert data[mib : size - mib] == b"\xff" * max(0, size - 2 * mib)


def ctx(**env: str) -> Context:
    return Context(env=env, log=lambda _line: None, system=System(), action="image2disk")


def test_context_messages_name_the_variable_and_fix() -> None:
    with pytest.raises(ActionError, match=r"IMG_URL is not set.*IMG_URL: http") as error:
        ctx().require("IMG_URL", "http://192.0.2.1/x.raw")
    assert error.value.exit_code == 2
    with pytest.raises(ActionError, match="COMPRESSED='maybe' is not a boolean"):
        ctx(COMPRESSED="maybe").flag("COMPRESSED")
    assert ctx(COMPRESSED="True").flag("COMPRESSED") is True
    assert ctx(MODE="0600").octal("MODE", 0o644) == 0o600
    with pytest.raises(ActionError, match="MODE='rw' is not an octal mode"):
        ctx(MODE="rw").octal("MODE", 0)
    with pytest.raises(ActionError, match="UID='root' is not a whole number"):
        ctx(UID="root").number("UID", 0)
