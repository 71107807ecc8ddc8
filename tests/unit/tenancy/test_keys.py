"""API keys' text form: what a caller who pastes a key right, wrong or half is told."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from metalflow.tenancy.keys import (
    BASE62,
    KEY_LENGTH,
    KeyKind,
    display_prefix,
    generate_key,
    hash_key,
    parse_key,
)

kinds = st.sampled_from(list(KeyKind))


def test_keys_have_the_scannable_shape() -> None:
    assert re.fullmatch(r"mfu_[0-9A-Za-z]{46}", generate_key(KeyKind.USER))
    assert re.fullmatch(r"mfp_[0-9A-Za-z]{46}", generate_key(KeyKind.PROJECT))
    assert len(generate_key(KeyKind.USER)) == KEY_LENGTH == 50


def test_generated_keys_differ() -> None:
    assert len({generate_key(KeyKind.USER) for _ in range(100)}) == 100


@given(kinds)
def test_a_generated_key_parses_as_its_kind(kind: KeyKind) -> None:
    parsed = parse_key(generate_key(kind))
    assert (parsed.kind, parsed.well_formed, parsed.checksum_ok) == (kind, True, True)
    assert parsed.problem is None


@given(kinds, st.integers(4, KEY_LENGTH - 1), st.sampled_from(BASE62))
def test_one_changed_character_is_caught_by_the_checksum(
    kind: KeyKind, position: int, replacement: str
) -> None:
    key = generate_key(kind)
    typo = key[:position] + replacement + key[position + 1 :]
    if typo != key:
        parsed = parse_key(typo)
        assert parsed.well_formed and not parsed.checksum_ok
        assert parsed.problem is not None and "mistyped" in parsed.problem


@given(kinds, st.integers(0, KEY_LENGTH - 1))
def test_a_truncated_key_is_malformed(kind: KeyKind, length: int) -> None:
    parsed = parse_key(generate_key(kind)[:length])
    assert not parsed.checksum_ok
    assert parsed.problem is not None


def test_a_foreign_token_is_not_a_key() -> None:
    parsed = parse_key("ghp_" + "a" * 40)
    assert parsed.kind is None
    assert parsed.problem is not None and "mfu_" in parsed.problem


def test_a_key_with_a_foreign_character_is_malformed() -> None:
    key = generate_key(KeyKind.PROJECT)
    parsed = parse_key(key[:10] + "-" + key[11:])
    assert parsed.kind is KeyKind.PROJECT and not parsed.well_formed
    assert parsed.problem is not None and "malformed" in parsed.problem


def test_hash_is_stable_hex_and_differs_per_key() -> None:
    key = generate_key(KeyKind.USER)
    assert hash_key(key) == hash_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key))
    assert hash_key(key) != hash_key(generate_key(KeyKind.USER))


def test_display_prefix_names_the_kind_but_cannot_be_used() -> None:
    key = generate_key(KeyKind.USER)
    shown = display_prefix(key)
    assert key.startswith(shown) and shown.startswith("mfu_")
    assert parse_key(shown).problem is not None
