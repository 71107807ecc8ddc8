"""Router solicitations in, the answer decision out: malformed input is None, never an error."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from metalflow.boot.ra import (
    ADVERTISEMENT,
    mac_from_link_local,
    parse_solicitation,
    should_answer,
)

MAC = "52:54:00:5b:00:01"
LINK_LOCAL = "fe80::5054:ff:fe5b:1"


def solicitation(*options: bytes) -> bytes:
    return struct.pack("!BBHI", 133, 0, 0, 0) + b"".join(options)


def source_link_layer(mac: str) -> bytes:
    return bytes([1, 1]) + bytes.fromhex(mac.replace(":", ""))


def mac_of(packet: bytes, source: str) -> str | None:
    found = parse_solicitation(packet, source)
    assert found is not None
    return found.mac


def test_the_mac_comes_from_the_option_first_then_the_source_address() -> None:
    other = "02:00:00:00:00:09"
    assert mac_of(solicitation(source_link_layer(other)), LINK_LOCAL) == other
    assert mac_of(solicitation(), LINK_LOCAL) == MAC
    assert mac_of(solicitation(), "fe80::1") is None
    assert mac_of(solicitation(), "::") is None


def test_anything_but_a_wellformed_solicitation_is_none() -> None:
    assert parse_solicitation(b"", LINK_LOCAL) is None
    assert parse_solicitation(ADVERTISEMENT, LINK_LOCAL) is None
    assert parse_solicitation(solicitation()[:7], LINK_LOCAL) is None
    assert parse_solicitation(bytes([133, 1]) + bytes(6), LINK_LOCAL) is None  # code must be 0
    assert parse_solicitation(solicitation(bytes([1, 0]) + bytes(6)), LINK_LOCAL) is None
    assert parse_solicitation(solicitation(bytes([1, 2]) + bytes(6)), LINK_LOCAL) is None
    assert parse_solicitation(solicitation(b"\x01"), LINK_LOCAL) is None


def test_the_advertisement_announces_nothing() -> None:
    kind, code, _checksum, hop_limit, flags, lifetime, reachable, retrans = struct.unpack(
        "!BBHBBHII", ADVERTISEMENT
    )
    assert (kind, code) == (134, 0)
    assert (hop_limit, flags, lifetime, reachable, retrans) == (0, 0, 0, 0, 0)


def test_only_known_machines_get_an_answer_unless_discovery_is_on() -> None:
    known = {MAC}.__contains__
    assert should_answer(MAC, known, discovery=False) is None
    assert should_answer("02:00:00:00:00:09", known, discovery=False) == "not in inventory"
    assert should_answer("02:00:00:00:00:09", known, discovery=True) is None
    assert should_answer(None, known, discovery=True) == "no MAC in the solicitation"


@given(st.binary(min_size=6, max_size=6))
def test_eui64_link_local_gives_back_its_mac(raw: bytes) -> None:
    eui = bytes([raw[0] ^ 0x02]) + raw[1:3] + b"\xff\xfe" + raw[3:]
    address = "fe80::" + ":".join(eui[i : i + 2].hex() for i in range(0, 8, 2))
    assert mac_from_link_local(address) == ":".join(f"{b:02x}" for b in raw)
    assert mac_from_link_local(address + "%eth0") == ":".join(f"{b:02x}" for b in raw)


@given(st.binary(max_size=80), st.text(max_size=40))
def test_arbitrary_packets_never_raise(packet: bytes, source: str) -> None:
    found = parse_solicitation(packet, source)
    assert found is None or found.mac is None or len(found.mac) == 17
