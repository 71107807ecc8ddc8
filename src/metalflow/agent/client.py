"""The agent's side of docs/agent-protocol.md over urllib.

urllib because the agent is stdlib only (httpx/requests are not in the install
environment); one request at a time per call, each with its own timeout.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from . import VERSION
from .backoff import delays
from .identity import is_boot_token

TIMEOUT = 30.0
WAIT_MARGIN = 15.0
FATAL = {400, 401, 403, 404, 405, 422}


class Stopped(Exception):
    """The agent was asked to stop while waiting to retry."""


class ProtocolError(Exception):
    """The server refused a request; retrying the same request cannot help."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        hints = {
            401: " (a boot token from the iPXE script is good for one run and expires: netboot"
            " the machine again; an agent token may have been rotated: fetch a new one with"
            " `metalflow agent-token MACHINE`)",
            403: " (this token may not use this endpoint: pass the machine's agent token)",
        }
        super().__init__(f"HTTP {status}: {message}{hints.get(status, '')}")
        self.status = status
        self.message = message
        self.field = field


class Conflict(ProtocolError):
    """409: the report contradicts what the server recorded, or a log gap."""


def _detail(body: bytes) -> tuple[str, str | None]:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500], None
    if isinstance(detail, dict):
        return str(detail.get("message")), detail.get("field")
    return str(detail), None


class Client:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        stop: threading.Event | None = None,
        retry_delays: Callable[[], Iterator[float]] = delays,
        log: Callable[[str], None] = lambda _message: None,
        boot_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.boot_key = boot_key
        """Sent with a boot token's exchange (see identity)."""
        self.boot_token: str | None = None
        """The boot token this client exchanged, kept to exchange it again (see `next`)."""
        self._hello: dict[str, Any] = {}
        self.stop = stop or threading.Event()
        self.retry_delays = retry_delays
        self.log = log

    def _once(self, method: str, path: str, body: Any, timeout: float) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("User-Agent", f"metalflow-agent/{VERSION}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            message, field = _detail(raw)
            if error.code == 409:
                raise Conflict(409, message, field) from None
            if error.code in FATAL:
                raise ProtocolError(error.code, message, field) from None
            raise ConnectionError(f"HTTP {error.code}: {message}") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = TIMEOUT,
        attempts: int | None = None,
    ) -> tuple[int, Any]:
        """Retry connection errors, timeouts and 5xx; ``attempts=None`` retries until stopped."""
        waits = self.retry_delays()
        tried = 0
        while True:
            if self.stop.is_set():
                raise Stopped()
            tried += 1
            try:
                return self._once(method, path, body, timeout)
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as error:
                if attempts is not None and tried >= attempts:
                    raise ConnectionError(f"{method} {path}: {error}") from None
                pause = next(waits)
                self.log(f"{method} {path} failed ({error}); retrying in {pause:.1f}s")
                if self.stop.wait(pause):
                    raise Stopped() from None

    def discover(self, mac: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """Register this unknown machine; the token in the answer is used from then on."""
        body = {"mac": mac, "attributes": attributes, "agent_version": VERSION}
        _, result = self.request("POST", "/api/v1/agent/discover", body)
        self.token = str(result["token"])
        return dict(result)

    def hello(self, mac: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """With a boot token, hello exchanges it: the run token in the answer is used from
        then on (a restarted agent exchanges the boot token again, with the same key)."""
        self._hello = {"mac": mac, "attributes": attributes, "agent_version": VERSION}
        if is_boot_token(self.token):
            self.boot_token = self.token
        if self.boot_token is None:
            _, result = self.request("POST", "/api/v1/agent/hello", self._hello)
            return dict(result)
        return self._exchange(self.boot_token)

    def _exchange(self, boot_token: str) -> dict[str, Any]:
        body = dict(self._hello)
        if self.boot_key is not None:
            body["key"] = self.boot_key
        self.token = boot_token
        _, result = self.request("POST", "/api/v1/agent/hello", body)
        self.token = str(result["token"])
        self.log("boot token exchanged for the run token")
        return dict(result)

    def _renew(self, boot_token: str) -> None:
        """The run token was refused: the run ended or the workflow was started again. Exchange
        the boot token again, waiting while the workflow is not running (the server says so with
        `field: workflow`), until an operator resumes or re-runs it."""
        waits = self.retry_delays()
        while True:
            try:
                self._exchange(boot_token)
                return
            except ProtocolError as error:
                if error.status != 401 or error.field != "workflow":
                    raise
                pause = next(waits)
                self.log(f"{error.message}; asking again in {pause:.1f}s")
                if self.stop.wait(pause):
                    raise Stopped() from None

    def next(self, wait: float = 30.0) -> dict[str, Any] | None:
        path = f"/api/v1/agent/next?wait={wait:g}"
        try:
            status, result = self.request("GET", path, timeout=wait + WAIT_MARGIN)
        except ProtocolError as error:
            if error.status != 401 or self.boot_token is None:
                raise
            self._renew(self.boot_token)
            status, result = self.request("GET", path, timeout=wait + WAIT_MARGIN)
        return None if status == 204 or result is None else dict(result)

    def status(
        self,
        attempt_id: int,
        status: str,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """A final report is retried until accepted (``attempts=None``); 409 raises Conflict."""
        body: dict[str, Any] = {"status": status}
        if exit_code is not None:
            body["exit_code"] = exit_code
        if message is not None:
            body["message"] = message[:4096]
        path = f"/api/v1/agent/actions/{attempt_id}/status"
        _, result = self.request("POST", path, body, attempts=attempts)
        return dict(result)

    def logs(self, attempt_id: int, seq: int, lines: list[str], *, attempts: int | None = 3) -> int:
        path = f"/api/v1/agent/actions/{attempt_id}/logs"
        _, result = self.request("POST", path, {"seq": seq, "lines": lines}, attempts=attempts)
        return int(result["received"])

    def ping(self) -> dict[str, Any]:
        _, result = self.request("GET", "/api/v1/agent/ping", attempts=1)
        return dict(result)
