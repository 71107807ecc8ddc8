"""The wire codec against annotated captures, scapy as a second implementation, and bad input."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from metalflow.boot.dhcp.codec import (
    DhcpPacket,
    MalformedPacket,
    MessageType,
    decode,
    encode,
)
from tests.unit.boot.dhcp import captures
from tests.unit.boot.dhcp.captures import COOKIE, QEMU_MAC, QEMU_MAC_TEXT, UUID_BYTES, bootp_header

ZERO = IPv4Address(0)


def options_field(*options: tuple[int, bytes]) -> bytes:
    return b"".join(bytes((code, len(value))) + value for code, value in options)


def packet(**changes: Any) -> DhcpPacket:
    fields: dict[str, Any] = {
        "op": 1,
        "htype": 1,
        "hlen": 6,
        "hops": 0,
        "xid": 0x01020304,
        "secs": 0,
        "flags": 0,
        "ciaddr": ZERO,
        "yiaddr": ZERO,
        "siaddr": ZERO,
        "giaddr": ZERO,
        "chaddr": QEMU_MAC.ljust(16, b"\0"),
        "sname": bytes(64),
        "file": bytes(128),
        "options": {53: b"\x01"},
    }
    fields.update(changes)
    fields["options"] = dict(fields["options"])
    return DhcpPacket(**fields)


CAPTURE_FIELDS = [
    pytest.param(
        captures.IPXE_BIOS_DISCOVER,
        {
            "message_type": MessageType.DISCOVER,
            "mac": QEMU_MAC_TEXT,
            "broadcast": True,
            "client_arches": (0,),
            "vendor_class": "PXEClient:Arch:00000:UNDI:002001",
            "user_classes": (b"iPXE",),
            "max_message_size": 1472,
            "client_id": b"\x01" + QEMU_MAC,
            "ipxe_options": bytes.fromhex("150101130101170101180101210101eb03011501"),
            "requested_ip": None,
            "server_id": None,
            "relay_agent_info": None,
        },
        [53, 57, 93, 94, 60, 77, 55, 175, 61, 97],
        id="ipxe-bios-discover",
    ),
    pytest.param(
        captures.EDK2_UEFI_X64_DISCOVER,
        {
            "message_type": MessageType.DISCOVER,
            "secs": 4,
            "client_arches": (7,),
            "vendor_class": "PXEClient:Arch:00007:UNDI:003000",
            "user_classes": (),
            "ipxe_options": None,
            "client_id": None,
        },
        [53, 57, 55, 97, 94, 93, 60],
        id="edk2-uefi-x64-discover",
    ),
    pytest.param(
        captures.EDK2_HTTP_DISCOVER,
        {
            "client_arches": (16,),
            "vendor_class": "HTTPClient:Arch:00016:UNDI:003016",
            "parameter_request_list": (1, 3, 6, 12, 15, 28, 43, 60, 66, 67),
        },
        [53, 57, 55, 97, 94, 93, 60],
        id="edk2-http-discover",
    ),
    pytest.param(
        captures.RELAYED_REQUEST,
        {
            "message_type": MessageType.REQUEST,
            "mac": "52:54:00:ab:cd:ef",
            "hops": 1,
            "giaddr": IPv4Address("10.20.0.1"),
            "server_id": IPv4Address("192.0.2.1"),
            "requested_ip": IPv4Address("10.20.0.5"),
            "relay_agent_info": ((1, b"eth0/1"), (2, bytes.fromhex("0000525400abcdef"))),
            "broadcast": False,
        },
        [53, 54, 50, 57, 93, 94, 60, 82],
        id="relayed-request",
    ),
    pytest.param(
        captures.INTEL_PXE_BIOS_DISCOVER,
        {"max_message_size": 1260, "client_arches": (0,), "user_classes": ()},
        [53, 57, 93, 94, 97, 55, 60],
        id="intel-pxe-bios-discover",
    ),
    pytest.param(
        captures.DHCLIENT_INIT_REBOOT,
        {
            "message_type": MessageType.REQUEST,
            "mac": "00:16:3e:5e:6c:00",
            "requested_ip": IPv4Address("192.0.2.11"),
            "server_id": None,
            "ciaddr": ZERO,
            "vendor_class": None,
            "client_arches": (),
            "max_message_size": None,
            "parameter_request_list": (1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42),
        },
        [53, 50, 12, 55],
        id="dhclient-init-reboot",
    ),
]


@pytest.mark.parametrize(("wire", "expected", "codes"), CAPTURE_FIELDS)
def test_captures_decode_to_what_their_annotations_say(
    wire: bytes, expected: dict[str, object], codes: list[int]
) -> None:
    decoded = decode(wire)
    assert {name: getattr(decoded, name) for name in expected} == expected
    assert list(decoded.options) == codes
    assert decoded.op == 1 and decoded.htype == 1 and decoded.hlen == 6


@pytest.mark.parametrize(("wire", "expected", "codes"), CAPTURE_FIELDS)
def test_captures_survive_a_round_trip(
    wire: bytes, expected: dict[str, object], codes: list[int]
) -> None:
    decoded = decode(wire)
    assert decode(encode(decoded)) == decoded


@pytest.mark.parametrize(("wire", "expected", "codes"), CAPTURE_FIELDS)
def test_decode_agrees_with_scapy_on_captures(
    wire: bytes, expected: dict[str, object], codes: list[int]
) -> None:
    decoded = decode(wire)
    theirs = BOOTP(wire)
    assert (decoded.op, decoded.xid, decoded.secs, decoded.flags) == (
        theirs.op,
        theirs.xid,
        theirs.secs,
        int(theirs.flags),
    )
    assert str(decoded.giaddr) == theirs.giaddr and str(decoded.ciaddr) == theirs.ciaddr
    assert decoded.chaddr == theirs.chaddr
    # scapy dissects into typed values; each one re-serialised alone gives back its raw bytes.
    raw_options = []
    for option in theirs[DHCP].options:
        if isinstance(option, tuple):
            framed = bytes(DHCP(options=[option]))
            raw_options.append((framed[0], framed[2 : 2 + framed[1]]))
    assert tuple(raw_options) == tuple(decoded.options.items())


def test_decode_reads_packets_scapy_builds() -> None:
    options = [
        (53, b"\x03"),
        (50, bytes.fromhex("c000020a")),
        (54, bytes.fromhex("c0000201")),
        (175, b"\x13\x01\x01"),
        (200, b"unknown to everyone"),
    ]
    wire = bytes(
        BOOTP(
            op=1,
            xid=0xCAFEBABE,
            flags=0x8000,
            chaddr=QEMU_MAC,
            giaddr="10.20.0.1",
            file=b"ignored.bin",
        )
        / DHCP(options=[*options, "end"])
    )
    decoded = decode(wire)
    assert tuple(decoded.options.items()) == tuple(options)
    assert decoded.xid == 0xCAFEBABE and decoded.broadcast
    assert decoded.giaddr == IPv4Address("10.20.0.1")
    assert decoded.file == b"ignored.bin".ljust(128, b"\0")
    assert decoded.mac == QEMU_MAC_TEXT


def test_scapy_reads_what_encode_writes() -> None:
    reply = packet(
        op=2,
        flags=0x8000,
        yiaddr=IPv4Address("192.0.2.10"),
        siaddr=IPv4Address("192.0.2.1"),
        file=b"undionly.kpxe".ljust(128, b"\0"),
        options=(
            (53, b"\x02"),
            (54, bytes.fromhex("c0000201")),
            (51, (3600).to_bytes(4, "big")),
            (1, bytes.fromhex("ffffff00")),
            (3, bytes.fromhex("c00002fe")),
            (6, bytes.fromhex("c0000235c0000236")),
            (12, b"node1"),
            (121, bytes.fromhex("080ac00002fd")),
        ),
    )
    theirs = BOOTP(encode(reply))
    assert (theirs.op, theirs.xid, theirs.yiaddr, theirs.siaddr) == (
        2,
        0x01020304,
        "192.0.2.10",
        "192.0.2.1",
    )
    assert theirs.file.rstrip(b"\0") == b"undionly.kpxe"
    assert [option for option in theirs[DHCP].options if option != "pad"] == [
        ("message-type", 2),
        ("server_id", "192.0.2.1"),
        ("lease_time", 3600),
        ("subnet_mask", "255.255.255.0"),
        ("router", "192.0.2.254"),
        ("name_server", "192.0.2.53", "192.0.2.54"),
        ("hostname", b"node1"),
        ("classless_static_routes", ["10.0.0.0/8:192.0.2.253"]),
        "end",
    ]


def test_encode_ends_with_end_and_pads_to_the_bootp_minimum() -> None:
    wire = encode(packet())
    assert len(wire) == 300
    assert wire[236:244] == COOKIE + b"\x35\x01\x01\xff"
    assert wire[244:] == bytes(56)
    assert len(encode(packet(), min_size=0)) == 244


def test_a_long_option_is_split_and_joined_again() -> None:
    """RFC 3396: a value over 255 bytes travels as consecutive instances of the option."""
    value = bytes(range(256)) * 2 + b"tail"
    wire = encode(packet(options=((53, b"\x01"), (43, value))))
    assert wire[243:245] == b"\x2b\xff" and wire[243 + 257 : 245 + 257] == b"\x2b\xff"
    assert wire[243 + 514 : 245 + 514] == bytes((43, len(value) - 510))
    assert decode(wire).option(43) == value


def test_instances_of_a_code_are_concatenated_at_its_first_position() -> None:
    wire = (
        bootp_header(xid=1)
        + COOKIE
        + options_field((53, b"\x01"), (43, b"first,"), (60, b"PXEClient"), (43, b"second"))
        + b"\xff"
    )
    assert decode(wire).options == {53: b"\x01", 43: b"first,second", 60: b"PXEClient"}
    assert list(decode(wire).options) == [53, 43, 60]


@pytest.mark.parametrize(
    ("overload", "expected_file", "expected_sname", "expected"),
    [
        pytest.param(1, bytes(128), b"boot-server".ljust(64, b"\0"), [53, 67, 12], id="file"),
        pytest.param(2, b"pxelinux.0".ljust(128, b"\0"), bytes(64), [53, 66], id="sname"),
        pytest.param(3, bytes(128), bytes(64), [53, 67, 12, 66], id="both"),
    ],
)
def test_overloaded_fields_are_read_as_options_options_then_file_then_sname(
    overload: int,
    expected_file: bytes,
    expected_sname: bytes,
    expected: list[int],
) -> None:
    """RFC 2131 §4.1; option 52 itself, a wire detail, is not kept."""
    file = options_field((67, b"undionly.kpxe"), (12, b"node")) + b"\xff"
    sname = options_field((66, b"192.0.2.1")) + b"\xff"
    header = bootp_header(xid=1)
    if overload & 1:
        header = header[:108] + file.ljust(128, b"\0")
    else:
        header = header[:108] + b"pxelinux.0".ljust(128, b"\0")
    if overload & 2:
        header = header[:44] + sname.ljust(64, b"\0") + header[108:]
    else:
        header = header[:44] + b"boot-server".ljust(64, b"\0") + header[108:]
    wire = header + COOKIE + options_field((53, b"\x01"), (52, bytes((overload,)))) + b"\xff"
    decoded = decode(wire)
    assert list(decoded.options) == expected
    assert decoded.file == expected_file and decoded.sname == expected_sname
    assert decode(encode(decoded)) == decoded


def test_a_long_option_may_continue_into_an_overloaded_file() -> None:
    header = bootp_header(xid=1)
    file = options_field((43, b"-second")).ljust(128, b"\0")
    wire = (
        header[:108]
        + file
        + COOKIE
        + options_field((53, b"\x01"), (43, b"first"), (52, b"\x01"))
        + b"\xff"
    )
    assert decode(wire).option(43) == b"first-second"


def valid(options: bytes = b"\x35\x01\x01\xff", **header: Any) -> bytes:
    return bootp_header(xid=1, **header) + COOKIE + options


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(valid()[:239], id="header-cut-short"),
        pytest.param(bootp_header(xid=1) + b"\x63\x82\x53\x64" + b"\xff", id="bad-cookie"),
        pytest.param(bootp_header(xid=1) + b"\xff" * 4, id="no-cookie"),
        pytest.param(valid(b"\x35\x01\x01\x0c\x10short"), id="option-past-end"),
        pytest.param(valid(b"\x35\x01"), id="value-missing"),
        pytest.param(valid(b"\x35\x01\x01\x0c"), id="length-missing"),
        pytest.param(valid()[:2] + b"\x11" + valid()[3:], id="hlen-17"),
        pytest.param(valid(b"\x35\x01\x01\x34\x01\x00\xff"), id="overload-0"),
        pytest.param(valid(b"\x35\x01\x01\x34\x01\x04\xff"), id="overload-4"),
        pytest.param(valid(b"\x35\x01\x01\x34\x02\x01\x01\xff"), id="overload-two-bytes"),
        pytest.param(
            valid()[:108] + b"\x0c\xff" + bytes(126) + COOKIE + b"\x34\x01\x01\xff",
            id="overloaded-file-option-past-end",
        ),
        pytest.param(
            valid()[:108] + b"\x34\x01\x02\xff" + bytes(124) + COOKIE + b"\x34\x01\x01\xff",
            id="overload-inside-file",
        ),
    ],
)
def test_malformed_input_raises_malformed_packet(wire: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode(wire)


@pytest.mark.parametrize(
    ("wire", "codes"),
    [
        pytest.param(valid(b""), [], id="no-options-at-all"),
        pytest.param(valid(b"\x35\x01\x01"), [53], id="no-end"),
        pytest.param(valid(b"\x00\x00\x35\x01\x01\x00\x3c\x00\xff"), [53, 60], id="pads"),
        pytest.param(valid(b"\x35\x01\x01\xff\x0c\x50garbage"), [53], id="after-end"),
    ],
)
def test_tolerated_shapes(wire: bytes, codes: list[int]) -> None:
    assert list(decode(wire).options) == codes


def test_hlen_16_is_accepted_but_is_not_ethernet() -> None:
    wire = valid()[:1] + b"\x20\x10" + valid()[3:]
    decoded = decode(wire)
    assert decoded.hlen == 16 and not decoded.is_ethernet
    assert decoded.mac == (QEMU_MAC + bytes(10)).hex(":")


@pytest.mark.parametrize(
    ("options", "accessor", "expected"),
    [
        ((), "message_type", None),
        (((53, b"\x09"),), "message_type", None),
        (((53, b"\x01\x01"),), "message_type", None),
        (((50, b"\xc0\x00\x02"),), "requested_ip", None),
        (((57, b"\x02"),), "max_message_size", None),
        (((93, b"\x00\x07\x00"),), "client_arches", ()),
        (((93, b"\x00\x07\x00\x10"),), "client_arches", (7, 16)),
        (((77, b"\x04iPXE\x05Tink!"),), "user_classes", (b"iPXE", b"Tink!")),
        (((77, b"iPXE"),), "user_classes", (b"iPXE",)),
        (((77, b"\x00iPXE"),), "user_classes", (b"\x00iPXE",)),
        (((82, b"\x01\x05eth0"),), "relay_agent_info", None),
        (((60, "PXEClient:é".encode("latin-1")),), "vendor_class", "PXEClient:é"),
        (((55, b"\x01\x03\x06"),), "parameter_request_list", (1, 3, 6)),
    ],
)
def test_accessors_never_raise_on_odd_values(
    options: tuple[tuple[int, bytes], ...], accessor: str, expected: object
) -> None:
    assert getattr(packet(options=options), accessor) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"options": {0: b""}},
        {"options": {255: b""}},
        {"options": {52: b"\x01"}},
        {"chaddr": QEMU_MAC},
        {"file": b"undionly.kpxe"},
        {"sname": bytes(65)},
    ],
)
def test_encode_refuses_a_packet_that_would_not_decode_to_itself(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        encode(dataclasses.replace(packet(), **changes))
    assert not isinstance(info.value, MalformedPacket)


def test_uuid_capture_bytes_are_where_the_annotation_says() -> None:
    decoded = decode(captures.IPXE_BIOS_DISCOVER)
    assert decoded.option(97) == b"\x00" + UUID_BYTES
