"""The metadata port's own HTTP/1.1 server: asyncio protocol + httptools' parser (llhttp, the
parser uvicorn uses), answering from metadata/service.py.

Why not uvicorn and the FastAPI app, as the API port does: every machine's OS asks several
small questions at boot, and at fleet scale the metadata port is the hottest path metalflow has.
Through FastAPI a request cost ~330 µs (routing, dependency solving, middleware); uvicorn with a
bare ASGI app still spends ~75 µs building the scope, the receive/send cycle and header lists.
This server parses with the same maintained parser, answers GETs synchronously from the
in-memory index, and keeps each answer's bytes (per caller, path and Host) until the machine
changes, so a repeated question costs a dict lookup and one write (bench/metadata.py).

It serves only metadata paths (anything else is a 404: a machine's OS talking to this port
never reaches the API), HTTP/1.0 and 1.1 with keep-alive and pipelining (answers in order),
GET/HEAD, PUT for the IMDSv2 token, POST for phone-home. A request the parser rejects gets a 400
and the connection is closed; headers over MAX_HEAD_BYTES get a 431, a body over
MAX_POST_BODY a 413; a request not complete within REQUEST_SECONDS is answered 408 and closed,
an idle connection is closed after IDLE_SECONDS. Each is counted
(`metalflow_metadata_requests{outcome}`); none of it can stop the server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import http
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import cast

import httptools

from metalflow.index.views import MachineIndex, MachineView
from metalflow.metadata.service import (
    MAX_POST_BODY,
    Answer,
    MetadataRequest,
    MetadataService,
    is_metadata_path,
    text,
)

log = logging.getLogger("metalflow.metadata.wire")

MAX_HEAD_BYTES = 16 * 1024
REQUEST_SECONDS = 30.0
IDLE_SECONDS = 75.0
SWEEP_SECONDS = 5.0
MAX_CACHED = 100_000
MAX_QUEUED = 64
"""Pipelined requests held behind a POST before the connection stops reading."""


def _status_line(status: int) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


def head_tail(answer: Answer, closing: bool) -> bytes:
    """The response head after the status line and Date: type, length, extras, blank line."""
    lines = [f"content-type: {answer.content_type}", f"content-length: {len(answer.body)}"]
    lines += [f"{name}: {value}" for name, value in answer.headers]
    if closing:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(slots=True)
class _Cached:
    view: MachineView
    status_line: bytes
    tail: bytes
    """Head after Date plus the body: all of the response that does not change."""


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode()
        return self._line


class MetadataServer:
    """Listens on the metadata socket; one `_Connection` per client."""

    def __init__(
        self,
        service: MetadataService,
        index: MachineIndex,
        *,
        idle_seconds: float = IDLE_SECONDS,
        request_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self.service = service
        self.index = index
        self.idle_seconds = idle_seconds
        self.request_seconds = request_seconds
        self.sweep_seconds = min(SWEEP_SECONDS, idle_seconds / 2, request_seconds / 2)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.cache: dict[tuple[str | None, str | None, str | None, str], _Cached] = {}
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self.status_lines = {status: _status_line(status) for status in (200, 204, 400, 404, 405)}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock)
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_seconds)
            now = loop.time()
            for connection in list(self.connections):
                connection.check_time(now)

    def status_line(self, status: int) -> bytes:
        line = self.status_lines.get(status)
        if line is None:
            line = self.status_lines[status] = _status_line(status)
        return line

    def cached(self, key: tuple[str | None, str | None, str | None, str]) -> _Cached | None:
        """The kept answer for `key`, if its machine is unchanged in the index since."""
        entry = self.cache.get(key)
        if entry is None:
            return None
        if self.index.by_id(entry.view.id) is not entry.view:
            del self.cache[key]
            return None
        return entry

    def keep(self, key: tuple[str | None, str | None, str | None, str], entry: _Cached) -> None:
        if len(self.cache) >= MAX_CACHED:
            self.cache.clear()
        self.cache[key] = entry


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer in order, hold the line on a POST."""

    def __init__(self, server: MetadataServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: str | None = None
        self.local: str | None = None
        self.queue: collections.deque[tuple[MetadataRequest, bool]] = collections.deque()
        self.busy = False
        """A POST is being answered: later answers wait for it."""
        self.closing = False
        self.last_seen = 0.0
        self.started: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.head_bytes = 0
        self.host: str | None = None
        self.forwarded_for: str | None = None
        self.token_ttl: str | None = None
        self.body: list[bytes] = []
        self.body_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self.transport.get_extra_info("peername")
        local = self.transport.get_extra_info("sockname")
        self.peer = str(peer[0]) if peer else None
        if local:
            host = str(local[0])
            self.local = f"[{host}]:{local[1]}" if ":" in host else f"{host}:{local[1]}"
        self.last_seen = asyncio.get_running_loop().time()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_seen = asyncio.get_running_loop().time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse("malformed", text(400, "upgrades are not served here"))
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._refuse("malformed", text(400, f"bad request: {exc}"))

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing and not self.busy:
            self.transport.resume_reading()

    def check_time(self, now: float) -> None:
        if self.started is not None and now - self.started > self.server.request_seconds:
            self._refuse("timeout", text(408, "request not complete in time"))
        elif (
            self.started is None
            and not self.busy
            and now - self.last_seen > (self.server.idle_seconds)
        ):
            self.server.outcomes["idle_closed"] += 1
            self.abort()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.started = asyncio.get_running_loop().time()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        lowered = name.lower()
        if lowered == b"host":
            self.host = value.decode("latin-1")
        elif lowered == b"x-forwarded-for":
            joined = value.decode("latin-1")
            self.forwarded_for = (
                joined if self.forwarded_for is None else f"{self.forwarded_for},{joined}"
            )
        elif lowered == b"x-aws-ec2-metadata-token-ttl-seconds":
            self.token_ttl = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_POST_BODY:
            self._refuse("too_large", text(413, f"the body is over {MAX_POST_BODY} bytes"))
            raise httptools.HttpParserCallbackError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.started = None
        path = httptools.parse_url(self.url).path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        request = MetadataRequest(
            method=self.parser.get_method().decode("latin-1"),
            path=path,
            peer=self.peer,
            host=self.host,
            forwarded_for=self.forwarded_for,
            token_ttl=self.token_ttl,
            body=b"".join(self.body),
            local=self.local,
        )
        keep_alive = self.parser.should_keep_alive()
        self._reset()
        self.queue.append((request, keep_alive))
        if self.busy:
            if len(self.queue) > MAX_QUEUED and self.transport is not None:
                self.transport.pause_reading()
            return
        self._drain()

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._refuse("too_large", text(431, f"request head over {MAX_HEAD_BYTES} bytes"))
            raise httptools.HttpParserCallbackError("head too large")

    # answering

    def _drain(self) -> None:
        """Answer queued requests in order until one needs to wait (a POST)."""
        while self.queue and not self.closing:
            request, keep_alive = self.queue.popleft()
            if request.method == "POST" and self.server.service.post_route(request) is not None:
                self.busy = True
                if self.transport is not None:
                    self.transport.pause_reading()
                asyncio.get_running_loop().create_task(self._post(request, keep_alive))
                return
            self._answer(request, keep_alive)

    async def _post(self, request: MetadataRequest, keep_alive: bool) -> None:
        try:
            answer = await self.server.service.post(request)
        except Exception:
            log.exception("event=metadata.post_failed path=%s", request.path)
            answer = text(500, "the event could not be recorded; try again")
        self.busy = False
        if self.closing:
            return
        self._send(request, answer, keep_alive)
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        self._drain()

    def _answer(self, request: MetadataRequest, keep_alive: bool) -> None:
        server = self.server
        key = (request.peer, request.forwarded_for, request.host, request.path)
        if request.method == "GET" and keep_alive:
            entry = server.cached(key)
            if entry is not None:
                server.outcomes["200"] += 1
                assert self.transport is not None
                self.transport.write(entry.status_line + server.clock.line() + entry.tail)
                return
        if not is_metadata_path(request.path):
            answer = text(404, "not found on this port")
        else:
            try:
                answer = server.service.answer(request)
            except Exception:  # a machine's data metalflow cannot render: that answer only
                log.exception("event=metadata.answer_failed path=%s", request.path)
                answer = text(500, "metalflow could not build this answer; see its log")
        if (
            answer.cacheable
            and answer.caller is not None
            and request.method == "GET"
            and keep_alive
        ):
            server.keep(
                key,
                _Cached(
                    answer.caller,
                    server.status_line(answer.status),
                    head_tail(answer, closing=False) + answer.body,
                ),
            )
        self._send(request, answer, keep_alive)

    def _send(self, request: MetadataRequest, answer: Answer, keep_alive: bool) -> None:
        server = self.server
        server.outcomes[str(answer.status)] += 1
        body = b"" if request.method == "HEAD" else answer.body
        assert self.transport is not None
        self.transport.write(
            server.status_line(answer.status)
            + server.clock.line()
            + head_tail(answer, closing=not keep_alive)
            + body
        )
        if not keep_alive:
            self.abort()

    def _refuse(self, outcome: str, answer: Answer) -> None:
        """Answer a request that cannot be read and close: the parser cannot go on after it."""
        if self.closing:
            return
        self.server.outcomes[outcome] += 1
        if self.transport is not None and not self.busy and not self.queue:
            self.transport.write(
                self.server.status_line(answer.status)
                + self.server.clock.line()
                + head_tail(answer, closing=True)
                + answer.body
            )
        self.abort()
