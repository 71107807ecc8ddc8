"""image2disk: stream an image over HTTP(S), decompress it, write it to a disk.

Built on urllib and zlib/bz2/lzma, driven with ``max_length`` because disk images are mostly
zeros and a 4 MiB compressed chunk can expand to gigabytes; zstd goes through a ``zstd -dc``
pipe (see ``_zstd``). Format detection is by magic bytes, as file(1) does, since URLs often
lack suffixes.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

from .base import ActionError, Context

CHUNK = 1 << 20
WRITE_BUFFER = 4 << 20
MIB = 1 << 20
WIPE_BYTES = 1 << 20
BLKRRPART = 0x125F
"""ioctl: re-read the partition table, so the image's partitions appear as devices."""
RESUMES = 5
RETRY_PAUSE = 1.0
READ_TIMEOUT = 60.0

MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"QFI\xfb", "qcow2"),
)
COMPRESSIONS = ("gzip", "bzip2", "xz", "zstd")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def detect_format(head: bytes) -> str:
    """``gzip``, ``bzip2``, ``xz``, ``zstd``, ``qcow2`` or ``raw``, from the first bytes."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return "raw"


def parse_checksum(text: str) -> str | None:
    """``sha256:<hex>`` or bare hex, as lower-case hex; None for an empty value."""
    text = text.strip()
    if not text:
        return None
    algorithm, sep, digest = text.partition(":")
    if not sep:
        algorithm, digest = "sha256", text
    digest = digest.strip().lower()
    if algorithm.lower() != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ActionError(
            f"image2disk: CHECKSUM={text!r} is not a sha256 checksum; use sha256:<64 hex digits>",
            exit_code=2,
        )
    return digest


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def needs_input(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


class _Gzip:
    """zlib's decompressobj behind the bz2/lzma interface (``needs_input``)."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._tail

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes:
        out = self._obj.decompress(self._tail + data, max(0, max_length))
        self._tail = self._obj.unconsumed_tail
        return out


_FACTORIES: dict[str, Callable[[], _Decompressor]] = {
    "gzip": _Gzip,
    "bzip2": bz2.BZ2Decompressor,
    "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
}


def decompress(chunks: Iterator[bytes], fmt: str, *, limit: int = CHUNK) -> Iterator[bytes]:
    """Decompressed data in pieces of at most ``limit`` bytes; concatenated streams too."""
    if fmt == "raw":
        yield from chunks
        return
    if fmt == "zstd":
        yield from _zstd(chunks, limit)
        return
    factory = _FACTORIES[fmt]
    obj = factory()
    fed = False
    for chunk in chunks:
        data = chunk
        fed = fed or bool(data)
        while True:
            out = obj.decompress(data, limit)
            data = b""
            if out:
                yield out
            if obj.eof:
                data = obj.unused_data
                obj = factory()
                fed = bool(data)
                if not data:
                    break
            elif obj.needs_input:
                break
    if fed:
        raise ActionError(f"image2disk: the {fmt} stream ends early (truncated image?)")


def _zstd(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """Through the zstd program: the stdlib has no zstd, and the zstandard module's streaming
    decompressor either has no output bound (a MiB of zeros may expand to GiBs in memory) or,
    as a stream reader, does not notice a truncated frame; `zstd -dc` does both."""
    tool = shutil.which("zstd")
    if tool is None:
        raise ActionError(
            "image2disk: the image is zstd-compressed, but the zstd program is not in this"
            " environment; add it (Debian package zstd) or serve a gzip/xz image",
            exit_code=127,
        )
    yield from _pipe([tool, "-dc"], chunks, limit)


def _pipe(argv: list[str], chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """Feed ``chunks`` to a filter program from a thread and yield its output."""
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    failure: list[BaseException] = []

    def feed() -> None:
        assert process.stdin is not None
        try:
            for chunk in chunks:
                process.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as error:
            failure.append(error)
            process.kill()
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        while out := process.stdout.read(limit):
            yield out
    finally:
        feeder.join()
        code = process.wait()
        stderr = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
        process.stdout.close()
        if process.stderr:
            process.stderr.close()
    if failure:
        raise failure[0]
    if code != 0:
        raise ActionError(f"image2disk: {argv[0]} failed (exit {code}): {stderr[-300:]}")


class Progress:
    """When to log progress: every ``step`` of the total, or every ``interval`` seconds."""

    def __init__(
        self, total: int | None, start: float, *, step: float = 0.05, interval: float = 10.0
    ) -> None:
        self.total = total
        self.start = start
        self.step = step
        self.interval = interval
        self.last_time = start
        self.last_fraction = 0.0

    def update(self, done: int, now: float) -> str | None:
        fraction = done / self.total if self.total else 0.0
        if fraction - self.last_fraction < self.step and now - self.last_time < self.interval:
            return None
        self.last_fraction = fraction
        self.last_time = now
        rate = done / MIB / max(now - self.start, 1e-6)
        share = f" of {self.total / MIB:.1f} MiB ({fraction:.0%})" if self.total else ""
        return f"downloaded {done / MIB:.1f} MiB{share}, {rate:.1f} MiB/s"


class Download:
    """The bytes at ``url``, resumed with ``Range:`` where a connection drops.

    ``offset`` counts bytes delivered; a resumed response must be a 206 whose
    ``Content-Range`` starts exactly there, or the stream would silently shift. http.client
    returns a short read at a premature EOF instead of raising, so the length is checked here.
    ``resumes`` bounds the failures in a row; any progress resets the count.
    """

    def __init__(
        self,
        url: str,
        ctx: Context,
        *,
        resumes: int = RESUMES,
        timeout: float = READ_TIMEOUT,
        pause: float = RETRY_PAUSE,
    ) -> None:
        self.url = url
        self.ctx = ctx
        self.resumes = resumes
        self.timeout = timeout
        self.pause = pause
        self.offset = 0
        self.total: int | None = None
        self.digest = hashlib.sha256()
        self._response: http.client.HTTPResponse | None = None

    def open(self) -> None:
        request = urllib.request.Request(self.url, headers={"User-Agent": "metalflow-agent"})
        if self.offset:
            request.add_header("Range", f"bytes={self.offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise
            raise ActionError(
                f"image2disk: GET {self.url} answered HTTP {error.code} {error.reason};"
                " check IMG_URL",
                exit_code=1,
            ) from None
        if self.offset:
            self._check_resumed(response)
        else:
            length = response.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
        self._response = response

    def _check_resumed(self, response: http.client.HTTPResponse) -> None:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if found and found.group(3).isdigit() and self.total is None:
            self.total = int(found.group(3))
        if response.status != 206 or found is None or int(found.group(1)) != self.offset:
            response.close()
            raise ActionError(
                f"image2disk: the connection dropped after {self.offset} bytes and the"
                f" server cannot resume (HTTP {response.status},"
                f" Content-Range {response.headers.get('Content-Range')!r}); serve the image"
                " from a server that supports Range requests"
            )

    def __iter__(self) -> Iterator[bytes]:
        failures = 0
        while True:
            try:
                if self._response is None:
                    self.open()
                assert self._response is not None
                chunk = self._response.read(CHUNK)
                if not chunk and self.total is not None and self.offset < self.total:
                    raise http.client.IncompleteRead(b"", self.total - self.offset)
            except (OSError, http.client.HTTPException) as error:
                failures += 1
                if self._response is not None:
                    self._response.close()
                    self._response = None
                if failures > self.resumes:
                    raise ActionError(
                        f"image2disk: download of {self.url} failed {failures} times, last"
                        f" at byte {self.offset}: {error}"
                    ) from None
                self.ctx.log(f"download interrupted at byte {self.offset} ({error}); retrying")
                self.ctx.cancelled.wait(self.pause * failures)
                self.ctx.check_cancelled()
                continue
            if not chunk:
                self._response.close()
                return
            failures = 0
            self.offset += len(chunk)
            self.digest.update(chunk)
            yield chunk


def _open_target(ctx: Context, path: str) -> tuple[int, int]:
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ActionError(
            f"image2disk: DEST_DISK {path} does not exist; set it to the disk's device,"
            " e.g. /dev/sda or {{ index .Hardware.Disks 0 }}",
            exit_code=2,
        ) from None
    except OSError as error:
        raise ActionError(f"image2disk: cannot open DEST_DISK {path}: {error}") from None
    return fd, os.lseek(fd, 0, os.SEEK_END)


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def wipe_ends(fd: int, size: int) -> None:
    """Zero the first and last MiB: stale MBR/GPT headers and the backup GPT at the end."""
    zeros = bytes(min(WIPE_BYTES, size))
    _write_all(fd, zeros, 0)
    if size > WIPE_BYTES:
        tail = min(WIPE_BYTES, size - WIPE_BYTES)
        _write_all(fd, zeros[:tail], size - tail)


def _peek(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first bytes of a stream and the whole stream again."""
    head = b""
    seen: list[bytes] = []
    for chunk in chunks:
        seen.append(chunk)
        head += chunk
        if len(head) >= 16:
            break

    def replay() -> Iterator[bytes]:
        yield from seen
        yield from chunks

    return head, replay()


def image2disk(ctx: Context) -> None:
    url = ctx.require("IMG_URL", "http://192.0.2.1:8080/jammy.raw.gz")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ActionError(
            f"image2disk: IMG_URL {url!r} is not an http:// or https:// URL", exit_code=2
        )
    dest = ctx.require("DEST_DISK", "/dev/sda")
    compressed = ctx.env.get("COMPRESSED", "").strip()
    want_compressed = ctx.flag("COMPRESSED") if compressed else None
    expected = parse_checksum(ctx.env.get("CHECKSUM", ""))
    fd, size = _open_target(ctx, dest)
    try:
        written = _stream(ctx, url, fd, size, want_compressed, expected, dest)
        os.fsync(fd)
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            _reread_partitions(ctx, fd, dest)
    finally:
        os.close(fd)
    ctx.log(f"wrote {written} bytes to {dest}")


def _reread_partitions(ctx: Context, fd: int, dest: str) -> None:
    """Without this the kernel keeps the old disk's partitions until a reboot, and a writefile
    to the new image's first partition would see the wrong (or no) filesystem."""
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError as error:
        ctx.log(f"note: the kernel did not re-read the partition table of {dest}: {error}")


def _stream(
    ctx: Context,
    url: str,
    fd: int,
    size: int,
    want_compressed: bool | None,
    expected: str | None,
    dest: str,
) -> int:
    download = Download(url, ctx, pause=RETRY_PAUSE)
    head, chunks = _peek(iter(download))
    fmt = detect_format(head)
    if want_compressed and fmt not in COMPRESSIONS:
        raise ActionError(
            f"image2disk: COMPRESSED=true but {url} starts with {head[:6].hex()}, which is"
            " not gzip, bzip2, xz or zstd; fix the image or set COMPRESSED: false"
        )
    if want_compressed is False and fmt in COMPRESSIONS:
        ctx.log(f"note: the image looks {fmt}-compressed but COMPRESSED=false; writing as is")
        fmt = "raw"
    ctx.log(f"streaming {url} ({fmt}) to {dest} ({size} bytes)")
    data = decompress(chunks, fmt if fmt in COMPRESSIONS else "raw")
    first, data = _peek(data)
    if detect_format(first) == "qcow2":
        return _qcow2(ctx, data, (fd, size, dest), download, expected)
    wipe_ends(fd, size)
    progress = Progress(download.total, time.monotonic())
    buffer = bytearray()
    offset = 0
    for piece in data:
        ctx.check_cancelled()
        buffer += piece
        if len(buffer) >= WRITE_BUFFER:
            offset = _flush(fd, buffer, offset, size, dest)
        line = progress.update(download.offset, time.monotonic())
        if line:
            ctx.log(line)
    offset = _flush(fd, buffer, offset, size, dest, final=True)
    _verify(ctx, download, expected)
    return offset


def _flush(
    fd: int, buffer: bytearray, offset: int, size: int, dest: str, *, final: bool = False
) -> int:
    """Write whole WRITE_BUFFER blocks (all of it when ``final``), so writes stay aligned."""
    count = len(buffer) if final else len(buffer) - len(buffer) % WRITE_BUFFER
    if offset + count > size:
        raise ActionError(
            f"image2disk: the image is larger than DEST_DISK {dest} ({size} bytes);"
            " pick a bigger disk or a smaller image"
        )
    with memoryview(buffer) as view:
        _write_all(fd, view[:count], offset)
    del buffer[:count]
    return offset + count


def _verify(ctx: Context, download: Download, expected: str | None) -> None:
    actual = download.digest.hexdigest()
    if expected is None:
        ctx.log(f"sha256 of the download: {actual}")
        return
    if actual != expected:
        raise ActionError(
            f"image2disk: sha256 mismatch for {download.url}: expected {expected}, got"
            f" {actual}; the disk holds a corrupt image"
        )
    ctx.log(f"sha256 verified: {actual}")


def _qcow2(
    ctx: Context,
    data: Iterator[bytes],
    target: tuple[int, int, str],
    download: Download,
    expected: str | None,
) -> int:
    """qcow2 needs random access, so it is spooled to a file and converted by qemu-img."""
    fd, size, dest = target
    tool = ctx.system.which("qemu-img")
    if tool is None:
        raise ActionError(
            "image2disk: the image is qcow2; writing it needs qemu-img (Debian package"
            " qemu-utils) in the install environment, or convert it to raw beforehand with"
            " `qemu-img convert -O raw`",
            exit_code=127,
        )
    with tempfile.NamedTemporaryFile(prefix="metalflow-", suffix=".qcow2") as spool:
        for piece in data:
            ctx.check_cancelled()
            spool.write(piece)
        spool.flush()
        _verify(ctx, download, expected)
        wipe_ends(fd, size)
        ctx.run(tool, "convert", "-p", "-O", "raw", "-n", spool.name, dest)
        return os.path.getsize(spool.name)
