"""The agent's boot key: one per boot, private, kept across agent restarts."""

from __future__ import annotations

import stat
from pathlib import Path

from metalflow.agent.identity import KEY_FILE, boot_key, is_boot_token


def test_the_key_is_made_once_private_and_read_back(tmp_path: Path) -> None:
    said: list[str] = []
    state = tmp_path / "run" / "metalflow-agent"
    first = boot_key(state, said.append)
    assert len(first) >= 32 and first.replace("-", "").replace("_", "").isalnum()
    assert boot_key(state, said.append) == first, "a restarted agent has the same key"
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert said == []


def test_an_unwritable_state_dir_gives_a_key_in_memory(tmp_path: Path) -> None:
    said: list[str] = []
    blocked = tmp_path / "file"
    blocked.write_text("")
    key = boot_key(blocked / "state", said.append)
    assert len(key) >= 32
    assert len(said) == 1 and "held in memory only" in said[0]


def test_boot_tokens_are_told_apart_from_agent_tokens() -> None:
    assert is_boot_token("mfb.m.w.1.2.3.sig")
    assert not is_boot_token("mfa.m.0.sig")
    assert not is_boot_token("")
