"""The asyncio TFTP server: serves a VirtualTree read-only, each transfer from its own UDP port.

Only sockets, timers, file handles and records live here; the protocol is session.py's.

Why not a library (PyPI sources read at tftpy 0.8.7, py3tftp 1.3.0, fbtftp 0.5, tftp 0.2.1):
- tftpy serves from a blocking select() loop (TftpServer.listen), negotiates only blksize and
  tsize (no windowsize), and serves uploads too.
- fbtftp forks a multiprocessing.Process per transfer and negotiates blksize, tsize and timeout,
  no windowsize; its classifiers stop at Python 3.9.
- py3tftp is asyncio with windowsize, but its protocol logic lives in DatagramProtocol
  subclasses with their own timers (nothing to drive from a fake clock), it accepts uploads, and
  it calls itself "in maintenance mode" (Python 3.5-3.9).
- tftp (jose-pr/pytftp) claims all of these RFCs and has an asyncio server, but is marked
  Alpha, needs the netimps package, and is about 15,000 lines with its client, relay and
  capture decoder.
A read-only server over a sans-I/O session is about 1,000 lines, docstrings included, that the
tests drive both through a fake clock and with real clients.

File reads run on the event loop: boot files are small and sit in the page cache, the file is
opened once per transfer behind a 64 KiB buffer, and retransmissions resend the kept window.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from metalflow.boot.tftp.session import (
    DEFAULT_BLKSIZE,
    DropReason,
    ErrorCode,
    MalformedPacket,
    Outcome,
    ReadRequest,
    ReadSession,
    SessionLimits,
    TransferMode,
    WriteRequest,
    encode_error,
    parse_request,
)
from metalflow.boot.tftp.tree import TreeError, VirtualTree

log = logging.getLogger("metalflow.boot.tftp")

Address = tuple[str, int]
READ_ONLY_MESSAGE = "access violation: metalflow's TFTP server is read-only"
_CLIENT_MESSAGES = {
    ErrorCode.FILE_NOT_FOUND: "file not found",
    ErrorCode.ACCESS_VIOLATION: "access violation",
}
"""What a refused client is told; the reason (which may name paths) goes to the log only."""
_READ_BUFFER = 64 * 1024
BUSY_MESSAGE = "server busy, retry later"
_BUSY_LOG_INTERVAL = 10.0
"""Seconds between two `tftp.busy` log lines for one client address."""
_BUSY_LOG_CLIENTS = 256
"""Client addresses whose last `tftp.busy` line is remembered; past that, busy is only counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRecord:
    """One request's result, for events on the machine that asked."""

    client: Address
    filename: str
    """As the client sent it."""
    size: int | None
    """The file's size on disk; None when the request was refused before it was opened."""
    outcome: Outcome
    error: str | None
    bytes_sent: int
    """File bytes put on the wire, retransmissions included."""
    bytes_acked: int
    duration: float
    """Seconds from the request to the end."""
    blksize: int
    windowsize: int


class TftpServer:
    """Listens on one UDP port and starts a ReadSession on a fresh port for every RRQ.

    Every transfer holds a socket and an open file until it ends, so their number is capped in
    all (`max_transfers`) and per client IP address (`max_transfers_per_client`); an RRQ over
    either cap is answered with ERROR 0 "server busy, retry later" and counted as dropped "busy".
    """

    def __init__(
        self,
        tree: VirtualTree,
        *,
        max_blksize: int = 1468,
        max_windowsize: int = 64,
        timeout: float = 1.0,
        max_timeout: int = 5,
        retries: int = 5,
        max_transfers: int = 256,
        max_transfers_per_client: int = 16,
        on_transfer: Callable[[TransferRecord], None] | None = None,
    ) -> None:
        if max_transfers < 1:
            raise ValueError("max_transfers must be at least 1")
        if max_transfers_per_client < 1:
            raise ValueError("max_transfers_per_client must be at least 1")
        self._tree = tree
        self._limits = SessionLimits(
            max_blksize=max_blksize,
            max_windowsize=max_windowsize,
            timeout=timeout,
            max_timeout=max_timeout,
            retries=retries,
        )
        self._max_transfers = max_transfers
        self._max_transfers_per_client = max_transfers_per_client
        self._on_transfer = on_transfer
        self.dropped: Counter[str] = Counter()
        """Ignored datagrams by DropReason, listener and transfers together."""
        self._listener: asyncio.DatagramTransport | None = None
        self._local_host = ""
        """The listening address, which every transfer socket binds to as well."""
        self._transfers: dict[Address, _Transfer] = {}
        self._per_client: dict[str, int] = {}
        """Running transfers by client IP address; an address leaves it when its count is 0."""
        self._busy_logged: dict[str, float] = {}
        """When each client address was last logged as busy, oldest first; see `_log_busy`."""

    async def start(self, host: str, port: int) -> None:
        if self._listener is not None:
            raise RuntimeError("TFTP server already started")
        loop = asyncio.get_running_loop()
        self._listener, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self._on_request), local_addr=(host, port)
        )
        self._local_host = self.sockname[0]

    async def close(self) -> None:
        """Stop listening and end every transfer, telling its client with an ERROR."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        transfers = list(self._transfers.values())
        for transfer in transfers:
            transfer.abort("server shutting down")
        openings = [transfer.opening for transfer in transfers if transfer.opening is not None]
        await asyncio.gather(*openings, return_exceptions=True)

    @property
    def sockname(self) -> Address:
        """The bound (host, port): the port is the real one when 0 was asked for."""
        if self._listener is None:
            raise RuntimeError("TFTP server not started")
        host, port = self._listener.get_extra_info("sockname")[:2]
        return host, port

    @property
    def active_transfers(self) -> int:
        return len(self._transfers)

    def _on_request(self, data: bytes, client: Address) -> None:
        try:
            request = parse_request(data)
        except MalformedPacket as exc:
            self.dropped[exc.reason] += 1
            return
        if client in self._transfers:
            self.dropped[DropReason.DUPLICATE_REQUEST] += 1
            return
        if isinstance(request, WriteRequest):
            self._refuse(client, request, ErrorCode.ACCESS_VIOLATION, READ_ONLY_MESSAGE, "write")
            return
        if request.mode is TransferMode.MAIL:
            message = "mail mode is not supported"
            self._refuse(client, request, ErrorCode.ILLEGAL_OPERATION, message, message)
            return
        if self._busy(client[0]):
            self._refuse_busy(client, request)
            return
        try:
            file, size = _open_regular(self._tree, request.filename)
        except TreeError as exc:
            self._refuse(client, request, exc.code, _CLIENT_MESSAGES[exc.code], exc.reason)
            return
        except OSError as exc:
            code = (
                ErrorCode.FILE_NOT_FOUND
                if isinstance(exc, FileNotFoundError)
                else ErrorCode.ACCESS_VIOLATION
            )
            self._refuse(client, request, code, _CLIENT_MESSAGES[code], str(exc))
            return
        session = ReadSession(request, file, size, self._limits, dropped=self.dropped)
        transfer = _Transfer(
            client=client, session=session, file=file, size=size, on_end=self._transfer_ended
        )
        self._transfers[client] = transfer
        self._per_client[client[0]] = self._per_client.get(client[0], 0) + 1
        transfer.opening = asyncio.get_running_loop().create_task(
            self._open_transfer_socket(transfer)
        )

    async def _open_transfer_socket(self, transfer: _Transfer) -> None:
        """RFC 1350: a transfer talks from a new port, here on the listening address."""
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: transfer, local_addr=(self._local_host, 0))
        except OSError as exc:
            transfer.abort(f"no socket for the transfer: {exc}")

    def _busy(self, host: str) -> bool:
        return (
            len(self._transfers) >= self._max_transfers
            or self._per_client.get(host, 0) >= self._max_transfers_per_client
        )

    def _refuse_busy(self, client: Address, request: ReadRequest) -> None:
        """RFC 1350's error code 0 ("not defined, see error message"), from the listening port.

        No TransferRecord: a flood of RRQs must not become a flood of events.
        """
        if self._listener is not None:
            self._listener.sendto(encode_error(ErrorCode.NOT_DEFINED, BUSY_MESSAGE), client)
        self.dropped[DropReason.BUSY] += 1
        self._log_busy(client, request, asyncio.get_running_loop().time())

    def _log_busy(self, client: Address, request: ReadRequest, now: float) -> None:
        """At most one line per client address per `_BUSY_LOG_INTERVAL` seconds.

        `_busy_logged` is kept oldest first (an address is moved to the end when logged again),
        so expired entries are dropped from its front, and it holds at most `_BUSY_LOG_CLIENTS`
        addresses: more busy clients than that within the interval are counted, not logged.
        """
        logged = self._busy_logged
        while logged:
            oldest = next(iter(logged))
            if now - logged[oldest] < _BUSY_LOG_INTERVAL:
                break
            del logged[oldest]
        host = client[0]
        if host in logged or len(logged) >= _BUSY_LOG_CLIENTS:
            return
        logged[host] = now
        log.info(
            "event=tftp.busy client=%s:%d file=%r transfers=%d client_transfers=%d",
            *client,
            request.filename,
            len(self._transfers),
            self._per_client.get(host, 0),
        )

    def _refuse(
        self,
        client: Address,
        request: ReadRequest | WriteRequest,
        code: ErrorCode,
        message: str,
        reason: str,
    ) -> None:
        # Logged before the client can see the error: a log line never trails what it explains.
        log.info(
            "event=tftp.refused client=%s:%d file=%r code=%d reason=%r",
            *client,
            request.filename,
            code,
            reason,
        )
        if self._listener is not None:
            self._listener.sendto(encode_error(code, message), client)
        self._report(
            TransferRecord(
                client=client,
                filename=request.filename,
                size=None,
                outcome=Outcome.REFUSED,
                error=message,
                bytes_sent=0,
                bytes_acked=0,
                duration=0.0,
                blksize=DEFAULT_BLKSIZE,
                windowsize=1,
            )
        )

    def _transfer_ended(self, transfer: _Transfer, record: TransferRecord) -> None:
        del self._transfers[transfer.client]
        host = transfer.client[0]
        remaining = self._per_client[host] - 1
        if remaining:
            self._per_client[host] = remaining
        else:
            del self._per_client[host]
        if record.outcome is Outcome.COMPLETE:
            log.debug(
                "event=tftp.complete client=%s:%d file=%r size=%d duration=%.3f"
                " blksize=%d windowsize=%d",
                *record.client,
                record.filename,
                record.size,
                record.duration,
                record.blksize,
                record.windowsize,
            )
        else:
            log.info(
                "event=tftp.failed client=%s:%d file=%r outcome=%s bytes_acked=%d reason=%r",
                *record.client,
                record.filename,
                record.outcome,
                record.bytes_acked,
                record.error,
            )
        self._report(record)

    def _report(self, record: TransferRecord) -> None:
        if self._on_transfer is None:
            return
        try:
            self._on_transfer(record)
        except Exception:
            log.exception("event=tftp.on_transfer_failed client=%s:%d", *record.client)


def _open_regular(tree: VirtualTree, filename: str) -> tuple[BinaryIO, int]:
    """Open what the tree resolves, refusing a symlink or FIFO swapped in since it looked."""
    fd = tree.open(filename)
    try:
        return os.fdopen(fd, "rb", buffering=_READ_BUFFER), os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, on_request: Callable[[bytes, Address], None]) -> None:
        self._on_request = on_request

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._on_request(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("event=tftp.socket_error error=%r", exc)


class _Transfer(asyncio.DatagramProtocol):
    """Binds one ReadSession to its socket, its timer and its open file."""

    def __init__(
        self,
        *,
        client: Address,
        session: ReadSession,
        file: BinaryIO,
        size: int,
        on_end: Callable[[_Transfer, TransferRecord], None],
    ) -> None:
        self.client = client
        self.session = session
        self.opening: asyncio.Task[None] | None = None
        """Creating the socket; connection_made starts the session."""
        self._file = file
        self._size = size
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._began = self._loop.time()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        if self._ended:
            self._transport.close()
            return
        self._send(self.session.start(self._loop.time()))
        self._settle()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._ended or self._transport is None:
            return
        if (addr[0], addr[1]) != self.client:
            self.session.dropped[DropReason.WRONG_TID] += 1
            self._transport.sendto(
                encode_error(ErrorCode.UNKNOWN_TRANSFER_ID, "unknown transfer ID"), addr
            )
            return
        self._send(self.session.on_datagram(data, self._loop.time()))
        self._settle()

    def error_received(self, exc: Exception) -> None:
        log.debug("event=tftp.socket_error client=%s:%d error=%r", *self.client, exc)

    def abort(self, message: str) -> None:
        if self._ended:
            return
        self._send(self.session.abort(message))
        if self._transport is None and self.opening is not None:
            self.opening.cancel()
        self._end()

    def _on_timer(self) -> None:
        self._timer = None
        self._send(self.session.on_timeout(self._loop.time()))
        self._settle()

    def _settle(self) -> None:
        """End when the session is done, else keep one timer armed for its deadline.

        The timer is not moved when an ACK pushes the deadline later: it fires, the session finds
        nothing due yet, and it is armed again, so a busy transfer makes one timer per timeout.
        """
        if self.session.done:
            self._end()
            return
        deadline = self.session.next_deadline
        if self._timer is None and deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _send(self, datagrams: list[bytes]) -> None:
        if self._transport is None:
            return
        for datagram in datagrams:
            self._transport.sendto(datagram, self.client)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        self._file.close()
        session = self.session
        record = TransferRecord(
            client=self.client,
            filename=session.request.filename,
            size=self._size,
            outcome=session.outcome or Outcome.ERROR,
            error=session.error,
            bytes_sent=session.bytes_sent,
            bytes_acked=session.bytes_acked,
            duration=self._loop.time() - self._began,
            blksize=session.blksize,
            windowsize=session.windowsize,
        )
        self._on_end(self, record)
