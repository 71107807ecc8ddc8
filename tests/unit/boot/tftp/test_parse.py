"""parse_request: a table of good and malformed requests, and nothing but MalformedPacket ever."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.boot.tftp.session import (
    DropReason,
    MalformedPacket,
    Opcode,
    ReadRequest,
    TransferMode,
    WriteRequest,
    parse_request,
)
from tests.unit.boot.tftp import ack, request

GOOD = [
    (
        b"\x00\x01pxelinux.0\x00octet\x00",
        ReadRequest(filename="pxelinux.0", mode=TransferMode.OCTET),
    ),
    (
        b"\x00\x01/boot/x\x00NetASCII\x00",
        ReadRequest(filename="/boot/x", mode=TransferMode.NETASCII),
    ),
    (
        b"\x00\x01f\x00OCTET\x00BLKSIZE\x001468\x00tsize\x000\x00windowsize\x008\x00",
        ReadRequest(
            filename="f",
            mode=TransferMode.OCTET,
            options={"blksize": "1468", "tsize": "0", "windowsize": "8"},
        ),
    ),
    (
        b"\x00\x01f\x00octet\x00x-vendor\x00\x00",
        ReadRequest(filename="f", mode=TransferMode.OCTET, options={"x-vendor": ""}),
    ),
    (b"\x00\x02up\x00octet\x00", WriteRequest(filename="up", mode=TransferMode.OCTET)),
    (b"\x00\x01m\x00mail\x00", ReadRequest(filename="m", mode=TransferMode.MAIL)),
    (
        b"\x00\x01" + "ipxe-é.efi".encode() + b"\x00octet\x00",
        ReadRequest(filename="ipxe-é.efi", mode=TransferMode.OCTET),
    ),
    (
        b"\x00\x01" + b"a" * 255 + b"\x00octet\x00",
        ReadRequest(filename="a" * 255, mode=TransferMode.OCTET),
    ),
]


@pytest.mark.parametrize(("datagram", "expected"), GOOD)
def test_good_requests(datagram: bytes, expected: ReadRequest | WriteRequest) -> None:
    assert parse_request(datagram) == expected


MALFORMED = [
    (b"", DropReason.MALFORMED),
    (b"\x00", DropReason.MALFORMED),
    (b"\x00\x00f\x00octet\x00", DropReason.UNKNOWN_OPCODE),
    (b"\x00\x07f\x00octet\x00", DropReason.UNKNOWN_OPCODE),
    (b"\xff\xff", DropReason.UNKNOWN_OPCODE),
    (b"\x00\x03\x00\x01data", DropReason.UNEXPECTED_OPCODE),
    (b"\x00\x04\x00\x01", DropReason.UNEXPECTED_OPCODE),
    (b"\x00\x06blksize\x00512\x00", DropReason.UNEXPECTED_OPCODE),
    (b"\x00\x01", DropReason.MALFORMED),
    (b"\x00\x01file", DropReason.MALFORMED),
    (b"\x00\x01file\x00", DropReason.MALFORMED),
    (b"\x00\x01file\x00octet", DropReason.MALFORMED),
    (b"\x00\x01\x00octet\x00", DropReason.MALFORMED),
    (b"\x00\x01" + b"a" * 256 + b"\x00octet\x00", DropReason.MALFORMED),
    (b"\x00\x01\xff\xfe\x00octet\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00binary\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00oct\xe9t\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00blksize\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00blksize\x00512", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00blksize\x00512\x00blksize\x001024\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00blksize\x00512\x00BlkSize\x001024\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00\x00512\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00\xffname\x001\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00blksize\x00\x01\x00", DropReason.MALFORMED),
    (b"\x00\x01f\x00octet\x00blksize\x00512\x00\x00", DropReason.MALFORMED),
]


@pytest.mark.parametrize(("datagram", "reason"), MALFORMED)
def test_malformed_requests(datagram: bytes, reason: DropReason) -> None:
    with pytest.raises(MalformedPacket) as raised:
        parse_request(datagram)
    assert raised.value.reason == reason


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_malformed_packet(datagram: bytes) -> None:
    try:
        parse_request(datagram)
    except MalformedPacket as exc:
        assert exc.reason in set(DropReason)


@given(
    st.binary(max_size=600),
    st.sampled_from([Opcode.RRQ, Opcode.WRQ]),
)
def test_request_prefixed_bytes_raise_only_malformed_packet(body: bytes, opcode: Opcode) -> None:
    with contextlib.suppress(MalformedPacket):
        parse_request(opcode.to_bytes(2, "big") + body)


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20)


@given(
    filename=st.text(
        st.characters(exclude_characters="\0", exclude_categories=["Cs"]),
        min_size=1,
        max_size=60,
    ),
    mode=st.sampled_from(["octet", "netascii", "OCTET"]),
    options=st.dictionaries(printable.map(str.lower), printable, max_size=5),
)
def test_built_requests_parse_back(filename: str, mode: str, options: dict[str, str]) -> None:
    parsed = parse_request(request(filename, mode, options))
    assert parsed == ReadRequest(
        filename=filename, mode=TransferMode(mode.lower()), options=options
    )


def test_an_ack_on_the_listening_port_is_not_a_request() -> None:
    with pytest.raises(MalformedPacket) as raised:
        parse_request(ack(1))
    assert raised.value.reason is DropReason.UNEXPECTED_OPCODE
