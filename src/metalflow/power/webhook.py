"""Power through an HTTP endpoint the site runs itself: a PDU bridge, a homegrown controller.

Every call is one signed POST of a JSON object to `options.url` (or `host`, when it is a URL):

    {"id": "9f2c...", "action": "power", "state": "on|off|soft-off|cycle|reset"}
    {"id": "...", "action": "boot-device", "device": "pxe|disk|cdrom|bios",
     "persistent": false, "efi": true}
    {"id": "...", "action": "status"}     answered {"power": "on"} or {"power": "off"}
    {"id": "...", "action": "probe"}      answered {} or {"boot_device": true, "details": {...}}

plus `"machine": NAME` when `options.machine` is set (a receiver serving many machines). `id` is
random per request. Any 2xx accepts; 501 means the receiver has no such action (Unsupported);
any other answer is a refusal whose message is the body's `message` (or `error`, or its text),
cut to 200 characters. 5xx, 408, 429, timeouts and connection errors may pass (transient); other
4xx will not. Redirects are not followed. There is no virtual media in this protocol.

Signature, so that a receiver can trust a request (the secret is the BMC password):

    X-Metalflow-Timestamp: 1767225600                  (unix seconds when sent)
    X-Metalflow-Signature: sha256=HEX                  (HMAC-SHA256 with the secret, lowercase hex)
    HEX = HMAC(secret, TIMESTAMP + "." + BODY)         (the header's text, a dot, the raw body)

A receiver recomputes the HMAC over the body bytes exactly as received, compares in constant
time, rejects a timestamp more than 300 s from its own clock, and refuses replays by remembering
the `id`s it served in the last 300 s. `verify` below does the first three. The secret is never
logged or sent.

httpx (already a dependency) does the HTTP, hmac the signature: nothing else is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from metalflow.power.driver import (
    Bmc,
    BootRequest,
    FieldDoc,
    PowerAction,
    PowerError,
    PowerState,
    Probe,
    Unsupported,
    is_host_name,
    seconds_option,
)

SIGNATURE_HEADER = "X-Metalflow-Signature"
TIMESTAMP_HEADER = "X-Metalflow-Timestamp"
REPLAY_WINDOW = 300.0
"""Seconds a receiver accepts a timestamp away from its clock, and remembers ids for."""
DEFAULT_TIMEOUT = 10.0
MAX_ANSWER = 64 * 1024
"""Bytes of an answer read at most: a receiver's reply is a line of JSON, not a download."""
MAX_MESSAGE = 200
TRANSIENT_STATUS = frozenset({408, 429})
_TIMESTAMP = re.compile(r"[0-9]{1,20}")


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign(secret: bytes, timestamp: int, body: bytes) -> tuple[str, str]:
    """The timestamp and signature headers' values for `body` sent at `timestamp`."""
    text = str(timestamp)
    return text, _mac(secret, text, body)


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float,
    window: float = REPLAY_WINDOW,
) -> bool:
    """What a receiver checks: the signature over these exact bytes, and a fresh timestamp."""
    if timestamp is None or signature is None or not _TIMESTAMP.fullmatch(timestamp):
        return False
    if abs(now - int(timestamp)) > window:
        return False
    expected = _mac(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def _url(bmc: Bmc) -> str:
    url = bmc.options.get("url") or bmc.host
    parts = urlsplit(url)
    try:
        port_ok = parts.port != 0
    except ValueError:
        port_ok = False
    field = "options.url" if bmc.options.get("url") else "host"
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(
            f"{field}: {url!r} is not an http(s) URL; the webhook driver needs the receiver's"
            " URL in options.url (or as host), e.g. https://pdu-bridge.example/metalflow"
        )
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        if not is_host_name(parts.hostname):
            raise ValueError(
                f"{field}: {parts.hostname!r} in {redacted(url)!r} is neither an IP address nor"
                " a host name (letters, digits and inner hyphens between dots)"
            ) from None
    return url


def redacted(url: str) -> str:
    """The URL without credentials or query, which may carry a token: for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def refusal_message(status: int, reason: str, body: bytes) -> str:
    """A receiver's refusal in its own words, on one line and at most MAX_MESSAGE characters."""
    text = body.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        answer = None
    if isinstance(answer, dict):
        for key in ("message", "error"):
            if isinstance(answer.get(key), str):
                text = answer[key]
                break
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return f"HTTP {status} {reason}: {text}" if text else f"HTTP {status} {reason}"


class WebhookDriver:
    name: ClassVar[str] = "webhook"
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = None
    fields: ClassVar[tuple[FieldDoc, ...]] = (
        FieldDoc("options.url", "the receiver's http(s) URL (or put it in host)"),
        FieldDoc("host", "the receiver's URL when options.url is not set", required=True),
        FieldDoc("password", "the secret that signs every request (HMAC-SHA256)", required=True),
        FieldDoc("options.machine", "sent as `machine`, for a receiver serving many machines"),
        FieldDoc("options.timeout", f"seconds per request (default {DEFAULT_TIMEOUT})"),
        FieldDoc("insecure_tls", "accept any TLS certificate from the receiver"),
    )

    def __init__(self, bmc: Bmc) -> None:
        self.validate(bmc)
        self._url = _url(bmc)
        self._where = redacted(self._url)
        self._secret = (bmc.password or "").encode()
        self._machine = bmc.options.get("machine")
        self._timeout = seconds_option(bmc, "timeout", DEFAULT_TIMEOUT)
        self._client = httpx.Client(
            timeout=self._timeout, verify=not bmc.insecure_tls, follow_redirects=False
        )

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        _url(bmc)
        if not bmc.password:
            raise ValueError("password: the webhook driver signs every request with it; set one")
        seconds_option(bmc, "timeout", DEFAULT_TIMEOUT)

    def _post(self, action: str, payload: Mapping[str, object]) -> bytes:
        """The 2xx answer's body; PowerError for anything else."""
        message: dict[str, object] = {"id": secrets.token_hex(16), **payload}
        if self._machine:
            message["machine"] = self._machine
        body = json.dumps(message, separators=(",", ":")).encode()
        timestamp, signature = sign(self._secret, int(time.time()), body)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature,
        }
        try:
            with self._client.stream("POST", self._url, content=body, headers=headers) as answer:
                data = bytearray()
                for chunk in answer.iter_bytes():
                    data += chunk
                    if len(data) >= MAX_ANSWER:
                        break
        except httpx.TimeoutException as exc:
            raise self._error(
                action, f"no answer within {self._timeout} s", transient=True
            ) from exc
        except httpx.TransportError as exc:
            raise self._error(action, f"cannot reach the receiver: {exc}", transient=True) from exc
        if answer.is_success:
            return bytes(data[:MAX_ANSWER])
        text = refusal_message(answer.status_code, answer.reason_phrase, bytes(data[:MAX_ANSWER]))
        if answer.status_code == 501:
            raise Unsupported(self.name, self._where, action, text)
        transient = answer.status_code >= 500 or answer.status_code in TRANSIENT_STATUS
        raise self._error(action, text, transient=transient)

    def _error(self, action: str, message: str, *, transient: bool = False) -> PowerError:
        return PowerError(self.name, self._where, action, message, transient=transient)

    def _answer(self, action: str, body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise self._error(action, f"the answer is not a JSON object: {body[:80]!r}")
        return answer

    def power_state(self) -> PowerState:
        answer = self._answer("status", self._post("status", {"action": "status"}))
        power = answer.get("power")
        if power not in ("on", "off"):
            raise self._error(
                "status", f'answered {json.dumps(answer)[:80]} instead of {{"power": "on"|"off"}}'
            )
        return PowerState(power)

    def set_power(self, action: PowerAction) -> None:
        self._post(f"power {action}", {"action": "power", "state": action.value})

    def set_boot_device(self, request: BootRequest) -> None:
        self._post(
            f"boot-device {request.device}",
            {
                "action": "boot-device",
                "device": request.device.value,
                "persistent": request.persistent,
                "efi": request.efi,
            },
        )

    def insert_media(self, url: str) -> None:
        raise Unsupported(self.name, self._where, "insert-media", "webhooks have no virtual media")

    def eject_media(self) -> None:
        raise Unsupported(self.name, self._where, "eject-media", "webhooks have no virtual media")

    def probe(self) -> Probe:
        answer = self._answer("probe", self._post("probe", {"action": "probe"}))
        details = answer.get("details")
        return Probe(
            driver=self.name,
            power=True,
            boot_device=answer.get("boot_device") is True,
            virtual_media=False,
            details=(
                {str(key): str(value) for key, value in details.items()}
                if isinstance(details, dict)
                else {}
            ),
        )

    def close(self) -> None:
        self._client.close()
