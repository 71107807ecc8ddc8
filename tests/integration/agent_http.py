"""A small image server for the agent's tests: Range support, and a mode that drops the
connection once mid-stream so that resuming can be proven."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Images:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)
    no_range: bool = False
    fail_once: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up early (the agent giving up on a response) is expected."""


def _handler(images: Images) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            images.requests.append((self.path, wanted))
            body = images.files.get(self.path)
            if self.path in images.fail_once:
                self.send_error(images.fail_once.pop(self.path))
                return
            if body is None:
                self.send_error(404)
                return
            start = 0
            found = re.fullmatch(r"bytes=(\d+)-", wanted or "")
            if found and not images.no_range:
                start = int(found.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if self.path in images.cut_once:
                images.cut_once.discard(self.path)
                self.wfile.write(body[start : start + (len(body) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

    return Handler


@contextmanager
def serve(images: Images) -> Iterator[Images]:
    server = _Server(("127.0.0.1", 0), _handler(images))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    images.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield images
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Script:
    """Answers each request with the next (status, JSON body) and records what came in."""

    answers: list[tuple[int, object]] = field(default_factory=list)
    seen: list[tuple[str, str, object]] = field(default_factory=list)
    url: str = ""


def _scripted(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            script.seen.append((self.command, self.path, json.loads(raw) if raw else None))
            status, body = script.answers.pop(0) if script.answers else (500, {"detail": "?"})
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

    return Handler


@contextmanager
def scripted(script: Script, port: int = 0) -> Iterator[Script]:
    server = _Server(("127.0.0.1", port), _scripted(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
