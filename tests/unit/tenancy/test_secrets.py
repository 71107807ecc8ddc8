"""Agent tokens and credential encryption from the data dir's key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.tenancy.auth import Action, Forbidden, Principal, Role, authorize
from metalflow.tenancy.secrets import Keyring, load_or_create_master_key

KEYRING = Keyring(b"k" * 32)


def test_master_key_is_created_once_and_private(tmp_path: Path) -> None:
    first = load_or_create_master_key(tmp_path)
    assert load_or_create_master_key(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600


@given(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), st.integers(0, 1000))
def test_agent_token_round_trip(machine_id: str, generation: int) -> None:
    token = KEYRING.agent_token(machine_id, generation)
    assert KEYRING.parse_agent_token(token) == (machine_id, generation)
    assert Keyring(b"x" * 32).parse_agent_token(token) is None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert KEYRING.parse_agent_token(flipped) is None


@given(st.text())
def test_parse_never_raises(token: str) -> None:
    KEYRING.parse_agent_token(token)
    KEYRING.parse_metadata_token(token)


def test_metadata_and_agent_tokens_are_not_interchangeable() -> None:
    metadata = KEYRING.metadata_token("0f3c", 2)
    assert KEYRING.parse_metadata_token(metadata) == ("0f3c", 2)
    assert KEYRING.parse_agent_token(metadata) is None
    assert KEYRING.parse_metadata_token(KEYRING.agent_token("0f3c", 2)) is None
    assert KEYRING.parse_metadata_token(KEYRING.metadata_token("0f3c", 3)) == ("0f3c", 3)


@given(st.text())
def test_credentials_round_trip(secret: str) -> None:
    sealed = KEYRING.encrypt(secret)
    assert secret == KEYRING.decrypt(sealed)
    if len(secret) >= 16:
        assert secret not in sealed


def test_agent_reaches_only_its_machine() -> None:
    agent = Principal(Role.AGENT, "agent:a", "a")
    authorize(agent, Action.AGENT, machine_id="a")
    with pytest.raises(Forbidden):
        authorize(agent, Action.AGENT, machine_id="b")
    with pytest.raises(Forbidden):
        authorize(agent, Action.READ)
    authorize(Principal(Role.ADMIN, "admin"), Action.WRITE)
