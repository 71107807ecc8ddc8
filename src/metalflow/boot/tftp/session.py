"""TFTP read transfers without I/O: datagrams and the clock go in, datagrams come out.

As in h11, the caller owns the socket and the timer (see server.py). Nothing here blocks, sleeps
or reads a clock, so option negotiation (RFC 2347-2349), windows (RFC 7440), retransmission and
block number rollover are tested with a fake clock and no sockets. Bytes from the wire that are
not a packet we can act on raise `MalformedPacket` from the parser and are counted and dropped by
the session; a `ValueError` or `RuntimeError` from here means the caller has a bug.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Protocol


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6
    """Option acknowledgement, RFC 2347."""


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TRANSFER_ID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8
    """RFC 2347: the client will not take the options in our OACK."""


class TransferMode(StrEnum):
    NETASCII = "netascii"
    OCTET = "octet"
    MAIL = "mail"
    """Obsolete (RFC 1350 itself says so); parsed so that it can be refused by name."""


class DropReason(StrEnum):
    """Why a datagram was ignored: the keys of the server's `dropped` counter."""

    MALFORMED = "malformed"
    UNKNOWN_OPCODE = "unknown_opcode"
    UNEXPECTED_OPCODE = "unexpected_opcode"
    """A valid packet that means nothing where it arrived, such as an ACK sent to port 69."""
    WRONG_TID = "wrong_tid"
    """From a port other than the transfer's client; answered with ERROR 5 (RFC 1350)."""
    DUPLICATE_REQUEST = "duplicate_request"
    """A retransmitted RRQ for a transfer that is already running."""
    STALE_ACK = "stale_ack"
    """An ACK for a block that is already acknowledged or was never sent."""
    BUSY = "busy"
    """An RRQ over the server's transfer limits; answered with ERROR 0 from the listening port."""


class Outcome(StrEnum):
    COMPLETE = "complete"
    ERROR = "error"
    """Ended after it started: the client sent an ERROR, the file could not be read, or the
    server shut down."""
    TIMEOUT = "timeout"
    REFUSED = "refused"
    """Never started: the server answered the request with an ERROR (not found, read-only)."""


MAX_FILENAME_BYTES = 255
DEFAULT_BLKSIZE = 512
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
"""RFC 2348's bounds: a DATA packet of 65464 bytes fills the largest UDP datagram over IPv4."""
MAX_WINDOWSIZE = 65535
MIN_TIMEOUT = 1
MAX_TIMEOUT = 255
BLOCK_NUMBERS = 1 << 16
"""Block numbers are 16 bits on the wire; past 65535 they wrap to 0, as tftp-hpa and curl do."""
_MAX_OPTION_DIGITS = 10

_OPCODE = struct.Struct("!H")
_HEADER = struct.Struct("!HH")
"""Opcode followed by a block number (DATA, ACK) or an error code (ERROR)."""


class MalformedPacket(ValueError):
    """The peer sent bytes we cannot act on: count them under `reason` and drop them."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    filename: str
    mode: TransferMode
    options: Mapping[str, str] = field(default_factory=dict)
    """Option names lower-cased (RFC 2347 says they are case-insensitive), in the client's order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteRequest:
    filename: str
    mode: TransferMode
    options: Mapping[str, str] = field(default_factory=dict)


def parse_request(datagram: bytes) -> ReadRequest | WriteRequest:
    """Decode an RRQ or WRQ: opcode, filename NUL, mode NUL, then option NUL value NUL pairs."""
    opcode = _opcode(datagram)
    if opcode not in (Opcode.RRQ, Opcode.WRQ):
        raise MalformedPacket(DropReason.UNEXPECTED_OPCODE, f"{opcode.name} is not a request")
    body = datagram[_OPCODE.size :]
    if not body.endswith(b"\0"):
        raise MalformedPacket(DropReason.MALFORMED, "request does not end in NUL")
    fields = body[:-1].split(b"\0")
    if len(fields) < 2:
        raise MalformedPacket(DropReason.MALFORMED, "request has no mode")
    if len(fields) % 2:
        raise MalformedPacket(DropReason.MALFORMED, "option without a value")
    raw_filename, raw_mode, *raw_options = fields
    filename = _filename(raw_filename)
    mode = _mode(raw_mode)
    options = _options(raw_options)
    if opcode is Opcode.RRQ:
        return ReadRequest(filename=filename, mode=mode, options=options)
    return WriteRequest(filename=filename, mode=mode, options=options)


def _opcode(datagram: bytes) -> Opcode:
    if len(datagram) < _OPCODE.size:
        raise MalformedPacket(DropReason.MALFORMED, "shorter than an opcode")
    (value,) = _OPCODE.unpack_from(datagram)
    try:
        return Opcode(value)
    except ValueError:
        raise MalformedPacket(DropReason.UNKNOWN_OPCODE, f"opcode {value}") from None


def _filename(raw: bytes) -> str:
    if not raw:
        raise MalformedPacket(DropReason.MALFORMED, "empty filename")
    if len(raw) > MAX_FILENAME_BYTES:
        raise MalformedPacket(DropReason.MALFORMED, f"filename over {MAX_FILENAME_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(DropReason.MALFORMED, "filename is not UTF-8") from None


def _ascii(raw: bytes, what: str) -> str:
    text = raw.decode("ascii", "replace")
    if not raw.isascii() or not text.isprintable():
        raise MalformedPacket(DropReason.MALFORMED, f"{what} is not printable ASCII")
    return text


def _mode(raw: bytes) -> TransferMode:
    name = _ascii(raw, "mode").lower()
    try:
        return TransferMode(name)
    except ValueError:
        raise MalformedPacket(DropReason.MALFORMED, f"unknown mode {name!r}") from None


def _options(fields: list[bytes]) -> dict[str, str]:
    options: dict[str, str] = {}
    for raw_name, raw_value in zip(fields[::2], fields[1::2], strict=True):
        name = _ascii(raw_name, "option name").lower()
        if not name:
            raise MalformedPacket(DropReason.MALFORMED, "empty option name")
        if name in options:
            raise MalformedPacket(DropReason.MALFORMED, f"option {name!r} given twice")
        options[name] = _ascii(raw_value, "option value")
    return options


def encode_data(block: int, payload: bytes) -> bytes:
    """A DATA packet; `block` counts from 1 without limit and is wrapped here."""
    return _HEADER.pack(Opcode.DATA, block % BLOCK_NUMBERS) + payload


def encode_oack(options: Mapping[str, str]) -> bytes:
    fields = b"".join(f"{name}\0{value}\0".encode("ascii") for name, value in options.items())
    return _OPCODE.pack(Opcode.OACK) + fields


def encode_error(code: ErrorCode, message: str) -> bytes:
    return _HEADER.pack(Opcode.ERROR, code) + message.encode("ascii", "replace") + b"\0"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimits:
    """What the server allows whatever a client asks, and how patient it is."""

    max_blksize: int = 1468
    """1500-byte Ethernet MTU less the IPv4, UDP and TFTP headers: no IP fragmentation."""
    max_windowsize: int = 64
    timeout: float = 1.0
    """Seconds before an unacknowledged window is sent again, unless the client asks otherwise."""
    max_timeout: int = 5
    """The longest `timeout` option taken: a client asking up to 255 s would keep a transfer's
    socket and file open for 255 s x (retries + 1), about 25 minutes at the default retries."""
    retries: int = 5
    """Retransmissions of one window before the transfer is given up."""

    def __post_init__(self) -> None:
        if not MIN_BLKSIZE <= self.max_blksize <= MAX_BLKSIZE:
            raise ValueError(f"max_blksize must be {MIN_BLKSIZE}..{MAX_BLKSIZE}")
        if not 1 <= self.max_windowsize <= MAX_WINDOWSIZE:
            raise ValueError(f"max_windowsize must be 1..{MAX_WINDOWSIZE}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not MIN_TIMEOUT <= self.max_timeout <= MAX_TIMEOUT:
            raise ValueError(f"max_timeout must be {MIN_TIMEOUT}..{MAX_TIMEOUT}")
        if self.retries < 0:
            raise ValueError("retries must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    blksize: int
    windowsize: int
    timeout: float
    acknowledged: Mapping[str, str]
    """The options for the OACK, in the client's order; empty means no OACK is sent."""


def negotiate(
    options: Mapping[str, str], *, mode: TransferMode, size: int, limits: SessionLimits
) -> Negotiated:
    """Take what we understand of the client's options, clamped to `limits` (RFC 2347-2349, 7440).

    Unknown options and values out of their RFC's range are left out of the OACK, which the RFCs
    allow, rather than failing the transfer. A timeout over `limits.max_timeout` is left out too,
    not lowered: RFC 2349 says the timeout in the OACK "must match the value specified by the
    client", and RFC 2347 lets the server leave out an option it does not accept, in which case
    the transfer runs at the server's own `limits.timeout`. tsize is answered in octet mode only,
    as the netascii size is not known without converting the whole file first, and not for an
    empty file: curl (lib/tftp.c) fails a download whose OACK says tsize 0.
    """
    blksize, windowsize, timeout = DEFAULT_BLKSIZE, 1, limits.timeout
    acknowledged: dict[str, str] = {}
    for name, value in options.items():
        number = _decimal(value)
        if number is None:
            continue
        if name == "blksize" and MIN_BLKSIZE <= number <= MAX_BLKSIZE:
            blksize = min(number, limits.max_blksize)
            acknowledged[name] = str(blksize)
        elif name == "windowsize" and 1 <= number <= MAX_WINDOWSIZE:
            windowsize = min(number, limits.max_windowsize)
            acknowledged[name] = str(windowsize)
        elif name == "timeout" and MIN_TIMEOUT <= number <= limits.max_timeout:
            timeout = float(number)
            acknowledged[name] = str(number)
        elif name == "tsize" and mode is TransferMode.OCTET and size > 0:
            acknowledged[name] = str(size)
    return Negotiated(
        blksize=blksize, windowsize=windowsize, timeout=timeout, acknowledged=acknowledged
    )


def _decimal(value: str) -> int | None:
    if value.isascii() and value.isdigit() and len(value) <= _MAX_OPTION_DIGITS:
        return int(value)
    return None


class ByteSource(Protocol):
    """Where a transfer's bytes come from: an open binary file, or anything that reads alike.

    `read` may return fewer bytes than asked; an empty result means the end.
    """

    def read(self, size: int, /) -> bytes: ...


def to_netascii(data: bytes) -> bytes:
    """RFC 1350 (via RFC 764): LF is sent as CR LF and a bare CR as CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class NetasciiEncoder:
    """A ByteSource converted to netascii on the fly; bytes convert independently, so chunk
    boundaries need no carried state."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._pending = b""

    def read(self, size: int, /) -> bytes:
        if not self._pending:
            self._pending = to_netascii(self._source.read(size))
        chunk, self._pending = self._pending[:size], self._pending[size:]
        return chunk


class ReadSession:
    """One RRQ served from its OACK or first DATA to the ACK of its last block.

    Blocks are numbered from 1 without limit here and wrapped only on the wire. The unacknowledged
    window is kept as encoded datagrams, so a retransmission never rereads the file. An ACK for a
    block inside the window slides it to the block after (RFC 7440) and the whole new window is
    sent; an ACK for anything else is stale and ignored, which keeps a duplicated ACK from
    doubling the traffic (the Sorcerer's Apprentice bug).
    """

    def __init__(
        self,
        request: ReadRequest,
        source: ByteSource,
        size: int,
        limits: SessionLimits,
        *,
        dropped: Counter[str] | None = None,
    ) -> None:
        if request.mode is TransferMode.MAIL:
            raise ValueError("mail mode is refused before a session is made")
        self.request = request
        self.negotiated = negotiate(request.options, mode=request.mode, size=size, limits=limits)
        self.dropped: Counter[str] = Counter() if dropped is None else dropped
        self.outcome: Outcome | None = None
        self.error: str | None = None
        """Why the transfer ended, when it did not complete."""
        self.bytes_sent = 0
        """File bytes put on the wire, retransmissions included."""
        self.bytes_acked = 0
        """File bytes the client has acknowledged."""
        self._source: ByteSource = (
            NetasciiEncoder(source) if request.mode is TransferMode.NETASCII else source
        )
        self._retries = limits.retries
        self._retries_left = limits.retries
        self._window: deque[bytes] = deque()
        self._acked = 0
        """The last block the client acknowledged; 0 before the first."""
        self._last_block: int | None = None
        """The final (short, possibly empty) block, once it has been read."""
        self._oack = (
            encode_oack(self.negotiated.acknowledged) if self.negotiated.acknowledged else b""
        )
        self._awaiting_oack_ack = False
        self._deadline: float | None = None
        self._started = False

    @property
    def blksize(self) -> int:
        return self.negotiated.blksize

    @property
    def windowsize(self) -> int:
        return self.negotiated.windowsize

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def next_deadline(self) -> float | None:
        """When `on_timeout` has work to do; None once the transfer is over."""
        return None if self.done else self._deadline

    def start(self, now: float) -> list[bytes]:
        """The first datagrams: the OACK when options were taken (ACK 0 answers it), else DATA."""
        if self._started:
            raise RuntimeError("session already started")
        self._started = True
        if self._oack:
            self._awaiting_oack_ack = True
            self._deadline = now + self.negotiated.timeout
            return [self._oack]
        return self._send_window(now)

    def on_datagram(self, data: bytes, now: float) -> list[bytes]:
        """A datagram from the client's address and port; anything unusable is counted, dropped."""
        if not self._started:
            raise RuntimeError("session not started")
        if self.done:
            return []
        try:
            opcode = _opcode(data)
        except MalformedPacket as exc:
            self.dropped[exc.reason] += 1
            return []
        if opcode is Opcode.ACK:
            return self._on_ack(data, now)
        if opcode is Opcode.ERROR:
            self._on_error(data)
            return []
        self.dropped[DropReason.UNEXPECTED_OPCODE] += 1
        return []

    def on_timeout(self, now: float) -> list[bytes]:
        """Resend the unacknowledged OACK or window, or give up quietly once retries run out."""
        if self._deadline is None or self.done or now < self._deadline:
            return []
        if self._retries_left == 0:
            self._end(Outcome.TIMEOUT, f"no ACK after {self._retries} retransmissions")
            return []
        self._retries_left -= 1
        self._deadline = now + self.negotiated.timeout
        if self._awaiting_oack_ack:
            return [self._oack]
        return self._transmit_window()

    def abort(self, message: str) -> list[bytes]:
        """End the transfer from our side (shutdown): the ERROR to send, if it was still going."""
        if self.done:
            return []
        self._end(Outcome.ERROR, message)
        return [encode_error(ErrorCode.NOT_DEFINED, message)]

    def _on_ack(self, data: bytes, now: float) -> list[bytes]:
        if len(data) != _HEADER.size:
            self.dropped[DropReason.MALFORMED] += 1
            return []
        (_, block) = _HEADER.unpack(data)
        if self._awaiting_oack_ack:
            if block != 0:
                self.dropped[DropReason.STALE_ACK] += 1
                return []
            self._awaiting_oack_ack = False
            self._retries_left = self._retries
            return self._send_window(now)
        advance = (block - self._acked) % BLOCK_NUMBERS
        if not 1 <= advance <= len(self._window):
            self.dropped[DropReason.STALE_ACK] += 1
            return []
        for _ in range(advance):
            self.bytes_acked += len(self._window.popleft()) - _HEADER.size
        self._acked += advance
        self._retries_left = self._retries
        if self._acked == self._last_block:
            self._end(Outcome.COMPLETE, None)
            return []
        return self._send_window(now)

    def _on_error(self, data: bytes) -> None:
        if len(data) < _HEADER.size:
            self.dropped[DropReason.MALFORMED] += 1
            return
        (_, code) = _HEADER.unpack_from(data)
        message = data[_HEADER.size :].split(b"\0", 1)[0].decode("ascii", "replace")
        if code == ErrorCode.OPTION_REFUSED and self._awaiting_oack_ack:
            self._end(Outcome.ERROR, f"client refused the options: {message}")
        else:
            self._end(Outcome.ERROR, f"client sent ERROR {code}: {message}")

    def _send_window(self, now: float) -> list[bytes]:
        try:
            self._fill_window()
        except OSError as exc:
            message = f"read error: {exc.strerror or exc}"
            self._end(Outcome.ERROR, message)
            return [encode_error(ErrorCode.NOT_DEFINED, message)]
        self._deadline = now + self.negotiated.timeout
        return self._transmit_window()

    def _fill_window(self) -> None:
        block = self._acked + len(self._window) + 1
        while len(self._window) < self.windowsize and self._last_block is None:
            payload = self._read_block()
            if len(payload) < self.blksize:
                self._last_block = block
            self._window.append(encode_data(block, payload))
            block += 1

    def _read_block(self) -> bytes:
        parts: list[bytes] = []
        missing = self.blksize
        while missing > 0:
            chunk = self._source.read(missing)
            if not chunk:
                break
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    def _transmit_window(self) -> list[bytes]:
        datagrams = list(self._window)
        self.bytes_sent += sum(len(datagram) - _HEADER.size for datagram in datagrams)
        return datagrams

    def _end(self, outcome: Outcome, error: str | None) -> None:
        self.outcome = outcome
        self.error = error
        self._window.clear()
        self._deadline = None
