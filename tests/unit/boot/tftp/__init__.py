"""Helpers shared by the TFTP tests: client-side packets, a strict reply decoder, a server running
on its own event loop thread (pytest-asyncio is not used), and a small blocking client."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from metalflow.boot.tftp.server import TftpServer, TransferRecord
from metalflow.boot.tftp.session import BLOCK_NUMBERS, ErrorCode, Opcode
from metalflow.boot.tftp.tree import VirtualTree
from tests.prerequisites import unavailable

T = TypeVar("T")
IPXE_DIR = Path("/usr/lib/ipxe")


def require_ipxe() -> Path:
    """Debian's iPXE binaries; missing fails under CI (scripts/test.sh installs them), skips
    only outside it."""
    if not (IPXE_DIR / "undionly.kpxe").is_file():
        unavailable(f"{IPXE_DIR}/undionly.kpxe is missing: apt-get install ipxe")
    return IPXE_DIR


def request(
    filename: str | bytes,
    mode: str = "octet",
    options: Mapping[str, str] | None = None,
    *,
    opcode: Opcode = Opcode.RRQ,
) -> bytes:
    name = filename.encode() if isinstance(filename, str) else filename
    fields = [name, mode.encode()]
    for option, value in (options or {}).items():
        fields += [option.encode(), value.encode()]
    return struct.pack("!H", opcode) + b"".join(part + b"\0" for part in fields)


def ack(block: int) -> bytes:
    return struct.pack("!HH", Opcode.ACK, block % BLOCK_NUMBERS)


def error(code: int, message: str) -> bytes:
    return struct.pack("!HH", Opcode.ERROR, code) + message.encode() + b"\0"


@dataclass(frozen=True)
class Reply:
    opcode: Opcode
    block: int = 0
    payload: bytes = b""
    options: dict[str, str] = field(default_factory=dict)
    code: int = 0
    message: str = ""


def decode_reply(datagram: bytes, *, max_payload: int = 65464) -> Reply:
    """What a server may send, decoded; any other shape fails the test."""
    assert len(datagram) >= 2, datagram
    opcode = Opcode(struct.unpack_from("!H", datagram)[0])
    if opcode is Opcode.DATA:
        assert len(datagram) >= 4, datagram
        payload = datagram[4:]
        assert len(payload) <= max_payload
        return Reply(opcode, block=struct.unpack_from("!H", datagram, 2)[0], payload=payload)
    if opcode is Opcode.OACK:
        assert datagram.endswith(b"\0"), datagram
        fields = datagram[2:-1].split(b"\0")
        assert len(fields) % 2 == 0, datagram
        names = [name.decode("ascii") for name in fields[::2]]
        values = [value.decode("ascii") for value in fields[1::2]]
        assert all(value.isdigit() for value in values), datagram
        assert len(set(names)) == len(names), datagram
        return Reply(opcode, options=dict(zip(names, values, strict=True)))
    assert opcode is Opcode.ERROR, datagram
    assert len(datagram) >= 5 and datagram.endswith(b"\0"), datagram
    code = struct.unpack_from("!H", datagram, 2)[0]
    assert code in set(ErrorCode), datagram
    message = datagram[4:-1]
    assert b"\0" not in message and message.isascii(), datagram
    return Reply(opcode, code=code, message=message.decode("ascii"))


class TftpClientError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ERROR {code}: {message}")
        self.code = code
        self.message = message


def download(
    port: int,
    filename: str,
    *,
    options: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> bytes:
    """A lossless-network RFC 1350/7440 client: good enough to check the server still serves."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request(filename, options=options), ("127.0.0.1", port))
        server: tuple[str, int] | None = None
        windowsize, expected, since_ack = 1, 1, 0
        blksize = 512
        received = bytearray()
        while True:
            data, sender = sock.recvfrom(65536)
            if server is None:
                server = sender
            if sender != server:
                continue
            reply = decode_reply(data)
            if reply.opcode is Opcode.ERROR:
                raise TftpClientError(reply.code, reply.message)
            if reply.opcode is Opcode.OACK:
                blksize = int(reply.options.get("blksize", "512"))
                windowsize = int(reply.options.get("windowsize", "1"))
                sock.sendto(ack(0), server)
                continue
            if reply.block != expected % BLOCK_NUMBERS:
                sock.sendto(ack(expected - 1), server)
                since_ack = 0
                continue
            received += reply.payload
            expected += 1
            since_ack += 1
            if len(reply.payload) < blksize:
                sock.sendto(ack(reply.block), server)
                return bytes(received)
            if since_ack == windowsize:
                sock.sendto(ack(reply.block), server)
                since_ack = 0


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll for something the server does in its own thread; no assertion on how long it took."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class ServerThread:
    """A TftpServer on 127.0.0.1, a free port, with its event loop in a background thread.

    Every error the loop reports (an exception out of a protocol callback) lands in
    `loop_errors`; every TransferRecord lands in `records` unless `on_transfer` is given.
    """

    def __init__(
        self,
        tree: VirtualTree,
        *,
        on_transfer: Callable[[TransferRecord], None] | None = None,
        **options: Any,
    ) -> None:
        self.records: list[TransferRecord] = []
        self.loop_errors: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.server = TftpServer(tree, on_transfer=on_transfer or self.records.append, **options)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.run(self.server.start("127.0.0.1", 0))
        self.port = self.server.sockname[1]
        return self

    def __exit__(self, *_exc: object) -> None:
        self.run(self.server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def read(self, getter: Callable[[], T]) -> T:
        """Read server state on its own thread."""

        async def get() -> T:
            return getter()

        return self.run(get())
