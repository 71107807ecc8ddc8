"""Kernel command line, environment and flags."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.agent.cmdline import ConfigError, parse_cmdline, resolve

TOKEN = "mfa.abc.1.sig"


def test_parses_metalflow_keys_among_others() -> None:
    text = (
        "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 metalflow.url=http://192.0.2.1:8080"
        f" metalflow.token={TOKEN} metalflow.mac=52:54:00:12:34:56 metalflow.machine=m1"
        " metalflow.other=x quiet\n"
    )
    assert parse_cmdline(text) == {
        "url": "http://192.0.2.1:8080",
        "token": TOKEN,
        "mac": "52:54:00:12:34:56",
        "machine": "m1",
    }


@pytest.mark.parametrize(
    "text",
    [
        'metalflow.url="http://h:1/x y"',
        '"metalflow.url=http://h:1/x y"',
        "metalflow.url='http://h:1/x y'",
    ],
)
def test_tolerates_quoting(text: str) -> None:
    assert parse_cmdline(f"quiet {text} ro")["url"] == "http://h:1/x y"


def test_unbalanced_quote_falls_back_to_words() -> None:
    assert parse_cmdline('a="b metalflow.token=t')["token"] == "t"


def test_last_occurrence_wins() -> None:
    assert parse_cmdline("metalflow.mac=a metalflow.mac=b") == {"mac": "b"}


def test_flags_beat_env_beat_cmdline() -> None:
    cmdline = f"metalflow.url=http://c:1 metalflow.token={TOKEN} metalflow.mac=cc"
    env = {"METALFLOW_AGENT_URL": "http://e:1/", "METALFLOW_AGENT_MAC": "ee"}
    config = resolve({"url": None, "token": None, "mac": "ff"}, env, cmdline)
    assert (config.url, config.token, config.mac) == ("http://e:1", TOKEN, "ff")


def test_missing_token_names_every_way_to_set_it() -> None:
    with pytest.raises(ConfigError) as error:
        resolve({}, {}, "metalflow.url=http://h:1")
    message = str(error.value)
    assert "--token" in message and "METALFLOW_AGENT_TOKEN" in message
    assert "metalflow.token=" in message


def test_a_discovery_boot_needs_no_token() -> None:
    cmdline = "metalflow.url=http://h:1 metalflow.mac=52:54:00:00:00:01 metalflow.discovery=1"
    config = resolve({}, {}, cmdline)
    assert (config.token, config.discovery, config.mac) == ("", True, "52:54:00:00:00:01")
    with pytest.raises(ConfigError, match="no token"):
        resolve({}, {}, "metalflow.url=http://h:1 metalflow.discovery=0")


def test_bad_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        resolve({"url": "192.0.2.1:8080", "token": TOKEN}, {}, "")


@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    assert set(parse_cmdline(text)) <= {"url", "token", "mac", "machine"}


@given(st.from_regex(r"[A-Za-z0-9:/._-]{1,40}", fullmatch=True))
def test_round_trips_plain_values(value: str) -> None:
    assert parse_cmdline(f"ro metalflow.token={value} quiet") == {"token": value}
