"""The webhook driver against a real receiver on 127.0.0.1: a stdlib HTTP server that checks
every signature as the module docstring tells receivers to, refuses replays, and plays a PDU."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    Unsupported,
)
from metalflow.power.webhook import (
    REPLAY_WINDOW,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookDriver,
    verify,
)

SECRET = "correct horse battery staple"


class Receiver(ThreadingHTTPServer):
    """A PDU bridge: one outlet's power, the requests it accepted, and scripted trouble."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.power = "off"
        self.accepted: list[dict[str, Any]] = []
        self.raw: list[tuple[bytes, dict[str, str]]] = []
        self.seen: dict[str, float] = {}
        self.trouble: list[tuple[int, bytes]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/metalflow"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads `accepted`, not stderr."""

    def do_POST(self) -> None:
        receiver = self.server
        receiver.hold.wait(timeout=30)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with receiver.lock:
            receiver.raw.append((body, dict(self.headers)))
            status, answer = self.decide(receiver, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def decide(self, receiver: Receiver, body: bytes) -> tuple[int, bytes]:
        now = time.time()
        timestamp = self.headers.get(TIMESTAMP_HEADER)
        signature = self.headers.get(SIGNATURE_HEADER)
        if not verify(SECRET.encode(), body, timestamp, signature, now=now):
            return 401, b'{"message": "bad or stale signature"}'
        request = json.loads(body)
        for ident, at in list(receiver.seen.items()):
            if now - at > REPLAY_WINDOW:
                del receiver.seen[ident]
        if request["id"] in receiver.seen:
            return 409, b'{"message": "replayed request"}'
        receiver.seen[request["id"]] = now
        if receiver.trouble:
            return receiver.trouble.pop(0)
        receiver.accepted.append(request)
        if request["action"] == "status":
            return 200, json.dumps({"power": receiver.power}).encode()
        if request["action"] == "power":
            receiver.power = {"on": "on", "cycle": "on", "reset": "on"}.get(request["state"], "off")
            return 202, b""
        if request["action"] == "probe":
            return 200, b'{"details": {"model": "homegrown PDU bridge", "outlets": 8}}'
        return 501, b'{"message": "this PDU has no boot devices"}'


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def webhook(receiver: Receiver, secret: str = SECRET, **options: str) -> Iterator[WebhookDriver]:
    driver = WebhookDriver(
        Bmc(
            driver="webhook", host="pdu7", password=secret, options={"url": receiver.url, **options}
        )
    )
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def driver(receiver: Receiver) -> Iterator[WebhookDriver]:
    yield from webhook(receiver, machine="rack4-u12", timeout="5")


def test_power_and_status_through_the_receiver(receiver: Receiver, driver: WebhookDriver) -> None:
    assert driver.power_state() is PowerState.OFF
    driver.set_power(PowerAction.ON)
    assert receiver.power == "on"
    assert driver.power_state() is PowerState.ON
    driver.set_power(PowerAction.SOFT_OFF)
    assert driver.power_state() is PowerState.OFF
    assert [(r["action"], r.get("state")) for r in receiver.accepted] == [
        ("status", None),
        ("power", "on"),
        ("status", None),
        ("power", "soft-off"),
        ("status", None),
    ]
    assert {r["machine"] for r in receiver.accepted} == {"rack4-u12"}
    assert len({r["id"] for r in receiver.accepted}) == 5


def test_the_secret_is_never_sent(receiver: Receiver, driver: WebhookDriver) -> None:
    driver.set_power(PowerAction.ON)
    ((body, headers),) = receiver.raw
    assert SECRET.encode() not in body
    assert all(SECRET not in value for value in headers.values())


def test_a_receiver_with_another_secret_refuses_for_good(receiver: Receiver) -> None:
    for driver in webhook(receiver, secret="guessed"):
        with pytest.raises(PowerError) as raised:
            driver.set_power(PowerAction.ON)
    assert not raised.value.transient
    assert raised.value.message == "HTTP 401 Unauthorized: bad or stale signature"
    assert receiver.power == "off"
    assert "guessed" not in str(raised.value)


def test_a_replayed_request_is_refused(receiver: Receiver, driver: WebhookDriver) -> None:
    driver.set_power(PowerAction.ON)
    body, headers = receiver.raw[0]
    replay = {name: headers[name] for name in (TIMESTAMP_HEADER, SIGNATURE_HEADER)}
    replayed = httpx.post(receiver.url, content=body, headers=replay)
    assert replayed.status_code == 409
    assert replayed.json() == {"message": "replayed request"}
    tampered = httpx.post(receiver.url, content=body.replace(b'"on"', b'"off"'), headers=replay)
    assert tampered.status_code == 401
    assert receiver.power == "on"


def test_boot_device_is_unsupported_when_the_receiver_says_so(
    receiver: Receiver, driver: WebhookDriver
) -> None:
    with pytest.raises(Unsupported) as raised:
        driver.set_boot_device(BootRequest(BootDevice.PXE, persistent=True, efi=False))
    assert raised.value.message == "HTTP 501 Not Implemented: this PDU has no boot devices"
    ((body, _),) = receiver.raw
    sent = json.loads(body)
    assert (sent["action"], sent["device"], sent["persistent"], sent["efi"]) == (
        "boot-device",
        "pxe",
        True,
        False,
    )


def test_probe_reports_what_the_receiver_tells(driver: WebhookDriver) -> None:
    probe = driver.probe()
    assert (probe.power, probe.boot_device, probe.virtual_media) == (True, False, False)
    assert probe.details == {"model": "homegrown PDU bridge", "outlets": "8"}


@pytest.mark.parametrize(
    ("status", "body", "transient"),
    [
        (503, b'{"message": "controller busy"}', True),
        (429, b"slow down", True),
        (400, b'{"error": "unknown outlet"}', False),
        (404, b"", False),
    ],
)
def test_refusals_say_whether_a_retry_may_help(
    receiver: Receiver, driver: WebhookDriver, status: int, body: bytes, transient: bool
) -> None:
    receiver.trouble.append((status, body))
    with pytest.raises(PowerError) as raised:
        driver.set_power(PowerAction.CYCLE)
    assert raised.value.transient is transient
    assert raised.value.message.startswith(f"HTTP {status} ")
    assert raised.value.action == "power cycle"
    driver.set_power(PowerAction.CYCLE)
    assert driver.power_state() is PowerState.ON


def test_a_malformed_status_answer_is_an_error(receiver: Receiver, driver: WebhookDriver) -> None:
    receiver.trouble.append((200, b'{"power": "standby"}'))
    with pytest.raises(PowerError, match="instead of") as raised:
        driver.power_state()
    assert not raised.value.transient


def test_a_receiver_that_does_not_answer_in_time_is_transient(receiver: Receiver) -> None:
    receiver.hold.clear()
    for driver in webhook(receiver, timeout="0.2"):
        with pytest.raises(PowerError, match=r"no answer within 0\.2 s") as raised:
            driver.power_state()
    receiver.hold.set()
    assert raised.value.transient


def test_an_unreachable_receiver_is_transient(receiver: Receiver) -> None:
    url = receiver.url
    receiver.shutdown()
    receiver.server_close()
    driver = WebhookDriver(Bmc(driver="webhook", host=url, password=SECRET))
    with pytest.raises(PowerError, match="cannot reach the receiver") as raised:
        driver.set_power(PowerAction.ON)
    driver.close()
    assert raised.value.transient
    assert raised.value.host == url
