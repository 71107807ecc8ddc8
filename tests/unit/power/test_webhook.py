"""The webhook driver's pure parts: the signature a receiver verifies, refusal messages,
validation."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from metalflow.power.driver import Bmc, driver_class
from metalflow.power.webhook import (
    MAX_MESSAGE,
    REPLAY_WINDOW,
    WebhookDriver,
    redacted,
    refusal_message,
    sign,
    verify,
)

NOW = 1_767_225_600
secrets_ = st.binary(min_size=1, max_size=64)
bodies = st.binary(max_size=512)
times = st.integers(NOW - int(REPLAY_WINDOW), NOW + int(REPLAY_WINDOW))


def test_the_entry_point_is_this_driver() -> None:
    assert driver_class("webhook") is WebhookDriver


def test_the_signature_is_the_documented_hmac() -> None:
    timestamp, signature = sign(b"s3cret", NOW, b'{"action":"status"}')
    assert timestamp == "1767225600"
    expected = hmac.new(b"s3cret", b'1767225600.{"action":"status"}', hashlib.sha256)
    assert signature == "sha256=" + expected.hexdigest()


@given(secrets_, bodies, times)
def test_a_receiver_accepts_what_sign_makes(secret: bytes, body: bytes, sent: int) -> None:
    timestamp, signature = sign(secret, sent, body)
    assert verify(secret, body, timestamp, signature, now=NOW)


@given(secrets_, bodies, times, st.data())
def test_a_receiver_rejects_any_change(
    secret: bytes, body: bytes, sent: int, data: st.DataObject
) -> None:
    timestamp, signature = sign(secret, sent, body)
    other_body = data.draw(bodies)
    assume(other_body != body)
    assert not verify(secret, other_body, timestamp, signature, now=NOW)
    other_secret = data.draw(secrets_)
    assume(other_secret != secret)
    assert not verify(other_secret, body, timestamp, signature, now=NOW)
    other_time = data.draw(st.text(alphabet="0123456789", min_size=1, max_size=11))
    assume(other_time != timestamp)
    assert not verify(secret, body, other_time, signature, now=NOW)
    at = data.draw(st.integers(0, len(signature) - 1))
    other_signature = signature[:at] + data.draw(st.characters()) + signature[at + 1 :]
    assume(other_signature != signature)
    assert not verify(secret, body, timestamp, other_signature, now=NOW)


@given(secrets_, bodies, st.integers(1, 10**6))
def test_a_stale_or_future_timestamp_is_rejected(secret: bytes, body: bytes, away: int) -> None:
    for sent in (NOW - int(REPLAY_WINDOW) - away, NOW + int(REPLAY_WINDOW) + away):
        timestamp, signature = sign(secret, sent, body)
        assert not verify(secret, body, timestamp, signature, now=NOW)


@pytest.mark.parametrize(
    ("timestamp", "signature"), [(None, "sha256=00"), ("1767225600", None), ("-5", "sha256=")]
)
def test_missing_or_malformed_headers_are_rejected(
    timestamp: str | None, signature: str | None
) -> None:
    assert not verify(b"k", b"{}", timestamp, signature, now=NOW)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"message": "outlet 7 is locked"}', "HTTP 409 Conflict: outlet 7 is locked"),
        (b'{"error": "no such machine"}', "HTTP 409 Conflict: no such machine"),
        (b"outlet\n  7 is\tlocked", "HTTP 409 Conflict: outlet 7 is locked"),
        (b'{"detail": 3}', 'HTTP 409 Conflict: {"detail": 3}'),
        (b"", "HTTP 409 Conflict"),
    ],
)
def test_a_refusal_is_told_in_the_receivers_words(body: bytes, message: str) -> None:
    assert refusal_message(409, "Conflict", body) == message


def test_a_long_refusal_is_cut() -> None:
    message = refusal_message(500, "Internal Server Error", b"x" * 10_000)
    assert message.endswith("x…")
    assert len(message) == len("HTTP 500 Internal Server Error: ") + MAX_MESSAGE


def test_messages_name_the_receiver_without_credentials_or_query() -> None:
    url = "https://ops:pw@pdu-bridge.example:8443/hooks/metalflow?token=abc"
    assert redacted(url) == "https://pdu-bridge.example:8443/hooks/metalflow"
    assert redacted("http://[2001:db8::1]/power") == "http://[2001:db8::1]/power"


def webhook_bmc(host: str = "pdu1", password: str | None = "s3cret", **options: str) -> Bmc:
    return Bmc(driver="webhook", host=host, password=password, options=options)


@pytest.mark.parametrize(
    ("bmc", "message"),
    [
        (webhook_bmc(), "host: 'pdu1' is not an http(s) URL"),
        (webhook_bmc(url="ftp://pdu1/x"), "options.url: 'ftp://pdu1/x' is not an http(s) URL"),
        (webhook_bmc(url="http://pdu1:99999/x"), "options.url: 'http://pdu1:99999/x'"),
        (webhook_bmc("https://pdu1/x", password=None), "password: the webhook driver signs"),
        (
            webhook_bmc(url="https://not a host!!/x"),
            "options.url: 'not a host!!' in 'https://not a host!!/x' is neither an IP address"
            " nor a host name",
        ),
        (webhook_bmc("https://pdu1/x", timeout="0"), "options.timeout: '0'"),
    ],
)
def test_validate_names_the_field(bmc: Bmc, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        WebhookDriver.validate(bmc)


def test_validate_takes_the_url_from_options_or_host() -> None:
    WebhookDriver.validate(webhook_bmc(url="https://pdu-bridge.example/metalflow"))
    WebhookDriver.validate(webhook_bmc("http://127.0.0.1:8080/power", timeout="2.5"))
