"""HTTP client for the metalflow API: JSON calls, one-line errors, and Server-Sent Event streams."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from metalflow.cli.exit_codes import CliError, ExitCode

Json = dict[str, Any]
Params = Mapping[str, str | int | bool | list[str] | None]

CONNECT_SECONDS = 10.0
"""Connecting (and waiting for a pooled connection) sends nothing: a short wait is safe."""
TIMEOUT = httpx.Timeout(60.0, connect=CONNECT_SECONDS)
"""Each read or write of a request; a long list is not bounded as a whole, only its pauses."""
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=CONNECT_SECONDS)
"""Event streams stay quiet between events; the server sends a keep-alive every 15 seconds."""
WORK_BASE_SECONDS = 120.0
WORK_SECONDS_PER_MIB = 300.0
"""How long a request that makes the server work on its body may wait for the answer: about
five minutes per MiB of YAML (20,000 small machines are ~2 MiB) on top of two minutes; generous,
because giving up on an apply the server is still committing tells the operator nothing."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def work_timeout(body_bytes: int) -> httpx.Timeout:
    """Timeouts of a request whose answer takes time in proportion to its body (an apply)."""
    seconds = WORK_BASE_SECONDS + WORK_SECONDS_PER_MIB * body_bytes / 2**20
    return httpx.Timeout(seconds, connect=CONNECT_SECONDS, pool=CONNECT_SECONDS)


def resource(*segments: str) -> str:
    """An API path: `resource("machines", name)` is `/api/v1/machines/<name, escaped>`."""
    if any(not segment for segment in segments):
        raise CliError("a name or id is empty", ExitCode.BAD_INPUT)
    return "/api/v1/" + "/".join(quote(segment, safe="") for segment in segments)


class ApiClient:
    """A thin wrapper around `httpx.Client` that turns every failure into a `CliError`."""

    def __init__(
        self, url: str, token: str | None, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        """Without a token, for the routes that take none (`POST /login`)."""
        self.url = url.rstrip("/")
        _check_url(self.url)
        if token is not None and (not token.isascii() or not token.isprintable()):
            raise CliError(
                "the API token has characters no token has; check --token or METALFLOW_TOKEN",
                ExitCode.BAD_INPUT,
            )
        self._http = httpx.Client(
            base_url=self.url,
            headers={} if token is None else {"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Params | None = None) -> Json:
        return self._request("GET", path, params=params)

    def post(
        self,
        path: str,
        *,
        json: Json | None = None,
        params: Params | None = None,
        content: str | bytes | None = None,
        content_type: str | None = None,
        timeout: httpx.Timeout | None = None,
        check: str | None = None,
    ) -> Json:
        """POST a request; `check` tells the operator how to find out whether a request that
        timed out or lost its connection was carried out anyway."""
        headers = {"Content-Type": content_type} if content_type else None
        return self._request(
            "POST",
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            timeout=timeout or TIMEOUT,
            check=check,
        )

    def patch(self, path: str, *, json: Json, check: str | None = None) -> Json:
        return self._request("PATCH", path, params=None, json=json, check=check)

    def put(self, path: str, *, json: Json, check: str | None = None) -> Json:
        return self._request("PUT", path, params=None, json=json, check=check)

    def delete(self, path: str) -> None:
        with self._errors("DELETE", TIMEOUT):
            response = self._http.request("DELETE", path)
        if response.is_error:
            raise _api_error(response)

    def events(self, params: Params, *, after: int | None = None) -> Iterator[Json]:
        """Follow `/api/v1/events` as an SSE stream; each item is one event (`id`, `kind`, ...).

        `after` resumes a stream: it is sent as `Last-Event-ID`.
        """
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        with self._errors("GET", STREAM_TIMEOUT):
            request = self._http.build_request(
                "GET",
                resource("events"),
                params={**_clean(params), "follow": "true"},
                headers=headers,
                timeout=STREAM_TIMEOUT,
            )
            response = self._http.send(request, stream=True)
            try:
                if response.is_error:
                    response.read()
                    raise _api_error(response)
                yield from parse_sse(response.iter_lines())
            finally:
                response.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None,
        timeout: httpx.Timeout = TIMEOUT,
        check: str | None = None,
        **kwargs: Any,
    ) -> Json:
        with self._errors(method, timeout, check):
            response = self._http.request(
                method, path, params=_clean(params or {}), timeout=timeout, **kwargs
            )
        if response.is_error:
            raise _api_error(response)
        try:
            body = response.json()
        except ValueError:
            raise CliError(f"{method} {path}: the server did not answer with JSON") from None
        if not isinstance(body, dict):
            raise CliError(f"{method} {path}: the server answered with an unexpected document")
        return body

    @contextmanager
    def _errors(
        self, method: str, timeout: httpx.Timeout, check: str | None = None
    ) -> Iterator[None]:
        """One line per transport failure, saying whether the server may have done the work:
        a write whose request was sent can have been carried out however the wait ended."""
        unsure = ""
        if method in WRITE_METHODS:
            unsure = (
                "; the server may still have carried out the request: "
                + (check or "check with `metalflow machine list` or `metalflow workflow list`")
                + " before sending it again"
            )
        try:
            yield
        except httpx.ConnectError:
            raise CliError(
                f'cannot reach metalflow at {self.url} (is "metalflow up" running?)'
            ) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            raise CliError(
                f"no connection to metalflow at {self.url} within {CONNECT_SECONDS:g} s "
                '(is "metalflow up" running, and is --url right?); nothing was sent'
            ) from None
        except httpx.WriteTimeout:
            raise CliError(
                f"timed out after {timeout.write:.0f} s sending the request to metalflow at "
                f"{self.url}; it was not sent whole, so nothing was applied"
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                f"timed out after {timeout.read:.0f} s waiting for metalflow at {self.url} "
                f"to answer {method}{unsure}"
            ) from None
        except httpx.TransportError as exc:
            raise CliError(f"lost connection to metalflow at {self.url}: {exc}{unsure}") from None


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CliError(f"--url {url!r} is not a URL: {exc}", ExitCode.BAD_INPUT) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(
            f"--url {url!r} must look like http://HOST:PORT (e.g. http://127.0.0.1:7080)",
            ExitCode.BAD_INPUT,
        )


def parse_sse(lines: Iterable[str]) -> Iterator[Json]:
    """Events of a `text/event-stream`; `data` is the event's JSON, `id`/`event` fill gaps."""
    event_id: str | None = None
    kind: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                event = _event_json("\n".join(data))
                if event_id is not None and event_id.isdigit():
                    event.setdefault("id", int(event_id))
                if kind is not None:
                    event.setdefault("kind", kind)
                yield event
            event_id, kind, data = None, None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)


def _event_json(data: str) -> Json:
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise CliError(f"the event stream sent something that is not an event: {data[:80]}")
    return event


def _error_message(response: httpx.Response) -> str:
    """The server's explanation of a failed request, on one line.

    A validation error (422) names the field at fault, once: before a message that does not
    start with it already (apply's messages do); other errors name it in their message.
    """
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict) and detail.get("message"):
        message, field = str(detail["message"]), detail.get("field")
        if (
            field
            and response.status_code == httpx.codes.UNPROCESSABLE_ENTITY
            and not message.startswith(f"{field}: ")
        ):
            return f"{field}: {message}"
        return message
    if isinstance(detail, list) and detail:
        return "; ".join(_validation_error(item) for item in detail)
    if isinstance(detail, str) and detail:
        return detail
    return f"{response.status_code} {response.reason_phrase}".strip()


def _validation_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    path = ""
    for part in item.get("loc") or []:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "body":
            path += f".{part}" if path else str(part)
    message = str(item.get("msg", "invalid"))
    return f"{path}: {message}" if path else message


def _api_error(response: httpx.Response) -> CliError:
    message = _error_message(response)
    if (
        response.status_code == httpx.codes.UNAUTHORIZED
        and "authorization" in response.request.headers
    ):
        message += " (check --token, METALFLOW_TOKEN or the data dir's admin-token)"
    code = ExitCode.BAD_INPUT if response.is_client_error else ExitCode.FAILURE
    return CliError(message, code)


def _clean(params: Params) -> dict[str, str | int | list[str]]:
    """Drop unset query parameters; booleans become `true`/`false`."""
    cleaned: dict[str, str | int | list[str]] = {}
    for key, value in params.items():
        if value is None or value == []:
            continue
        cleaned[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return cleaned
