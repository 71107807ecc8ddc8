"""OpenSSH public key lines: every type taken round-trips through its normalised line, the
fingerprint is `ssh-keygen -l -E md5`'s, and junk is refused with a reason a user can act on."""

from __future__ import annotations

import base64
import hashlib
import struct
from functools import cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from metalflow.cloud.sshkey_format import (
    KEY_TYPES,
    MIN_RSA_BITS,
    KeyProblem,
    parse_public_key,
)

ADA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILv6PTaKFgZMRh/e8PXab7wT445CwXm00syKx6y0puU9 ada@laptop"
ADA_MD5 = "7d:95:14:1b:e6:94:20:82:aa:b7:95:20:ca:dc:1a:03"
"""Made by `ssh-keygen -t ed25519 -C ada@laptop`; the fingerprint is `ssh-keygen -l -E md5`'s."""
CURVES = {
    "ecdsa-sha2-nistp256": ec.SECP256R1(),
    "ecdsa-sha2-nistp384": ec.SECP384R1(),
    "ecdsa-sha2-nistp521": ec.SECP521R1(),
}
comments = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=40
).map(str.strip)


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def openssh(public: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@cache
def rsa_line(bits: int) -> str:
    return openssh(rsa.generate_private_key(65537, bits).public_key())


def ed25519_line(seed: bytes) -> str:
    return openssh(ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key())


def ecdsa_line(key_type: str, secret: int) -> str:
    curve = CURVES[key_type]
    return openssh(ec.derive_private_key(secret, curve).public_key())


def sk_ed25519_line(seed: bytes) -> str:
    public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = string(b"sk-ssh-ed25519@openssh.com") + string(raw) + string(b"ssh:")
    return f"sk-ssh-ed25519@openssh.com {base64.b64encode(blob).decode()}"


keys = st.one_of(
    st.binary(min_size=32, max_size=32).map(ed25519_line),
    st.binary(min_size=32, max_size=32).map(sk_ed25519_line),
    st.tuples(st.sampled_from(sorted(CURVES)), st.integers(1, 2**255)).map(
        lambda pair: ecdsa_line(*pair)
    ),
    st.sampled_from([2048, 3072]).map(rsa_line),
)


@given(keys, comments, st.sampled_from([" ", "  ", "\t"]))
def test_a_key_round_trips_through_its_normalised_line(line: str, comment: str, gap: str) -> None:
    key_type, encoded = line.split()[:2]
    messy = f"  {key_type}{gap}{encoded}{gap}{comment}\n"
    parsed = parse_public_key(messy)
    assert parsed.key_type == key_type
    assert parsed.comment == comment
    assert parsed.line == f"{key_type} {encoded} {comment}".rstrip()
    assert parse_public_key(parsed.line) == parsed
    digest = hashlib.md5(base64.b64decode(encoded), usedforsecurity=False).hexdigest()
    assert parsed.fingerprint.replace(":", "") == digest
    assert parsed.key_type in KEY_TYPES


def test_the_fingerprint_is_ssh_keygens_md5() -> None:
    parsed = parse_public_key(ADA)
    assert parsed.fingerprint == ADA_MD5
    assert parsed.comment == "ada@laptop"


def test_an_rsa_key_under_2048_bits_is_refused_with_its_size() -> None:
    with pytest.raises(KeyProblem, match=f"1024 bits; at least {MIN_RSA_BITS}"):
        parse_public_key(rsa_line(1024))


@given(st.binary(min_size=32, max_size=32), st.sampled_from(["ssh-rsa", "ecdsa-sha2-nistp256"]))
def test_a_line_whose_blob_holds_another_type_is_refused(seed: bytes, claimed: str) -> None:
    encoded = ed25519_line(seed).split()[1]
    with pytest.raises(KeyProblem, match=f"says {claimed} but its base64 holds a 'ssh-ed25519'"):
        parse_public_key(f"{claimed} {encoded}")


@given(st.binary(min_size=32, max_size=32), st.data())
def test_a_damaged_blob_is_refused(seed: bytes, data: st.DataObject) -> None:
    blob = base64.b64decode(ed25519_line(seed).split()[1])
    cut = data.draw(st.integers(0, len(blob) - 1))
    damaged = blob[:cut] if data.draw(st.booleans()) else blob + b"\x00"
    with pytest.raises(KeyProblem):
        parse_public_key(f"ssh-ed25519 {base64.b64encode(damaged).decode()}")


@given(st.text(max_size=200))
def test_junk_is_refused_with_a_reason_never_a_crash(text: str) -> None:
    try:
        parsed = parse_public_key(text)
    except KeyProblem as problem:
        assert str(problem)
    else:
        assert parsed.key_type in KEY_TYPES


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "not a key type taken here"),
        ('command="ls" ' + ADA, "authorized_keys options are not taken"),
        ("ssh-ed25519", "not followed by the key's base64"),
        ("ssh-ed25519 not*base64", "not base64"),
        (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILv6PTaKFgZMRh/e8PXab7wT445CwXm00syKx6y0puU9=",
            "base64",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "PEM"),
        (ADA + "\n" + ADA, "more than one line"),
        (ADA.replace("ada@laptop", "a\x07b"), "printable"),
    ],
)
def test_each_kind_of_junk_gets_its_own_reason(text: str, reason: str) -> None:
    with pytest.raises(KeyProblem, match=reason):
        parse_public_key(text)
