"""Properties: the codec round-trips and only raises MalformedPacket; policies never raise."""

from __future__ import annotations

import contextlib
import itertools
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.boot.dhcp.codec import DhcpPacket, MalformedPacket, decode, encode
from metalflow.boot.dhcp.network import NetworkConfig
from metalflow.boot.dhcp.policy import (
    IP_UDP_HEADERS,
    MIN_MESSAGE_SIZE,
    BootSettings,
    Decision,
    Ignore,
    Release,
    Reply,
    answer_proxy,
    answer_reservation,
    classify,
)
from metalflow.index.views import MachineView
from tests.unit.boot.dhcp import captures
from tests.unit.boot.dhcp.strategies import (
    addresses,
    boot_settings,
    machines,
    packets,
    proxy_networks,
    requests,
    reservation_networks,
)
from tests.unit.boot.dhcp.testbed import SERVER

CAPTURES = (
    captures.IPXE_BIOS_DISCOVER,
    captures.INTEL_PXE_BIOS_DISCOVER,
    captures.EDK2_UEFI_X64_DISCOVER,
    captures.EDK2_HTTP_DISCOVER,
    captures.RELAYED_REQUEST,
    captures.DHCLIENT_INIT_REBOOT,
)


@settings(max_examples=300)
@given(packets)
def test_decode_inverts_encode(packet: DhcpPacket) -> None:
    assert decode(encode(packet)) == packet


def decodes_or_refuses(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        decode(data)


@given(st.binary(max_size=700))
def test_arbitrary_bytes_raise_only_malformed_packet(data: bytes) -> None:
    decodes_or_refuses(data)


@given(st.binary(max_size=400))
def test_arbitrary_options_raise_only_malformed_packet(options: bytes) -> None:
    decodes_or_refuses(captures.bootp_header(xid=1) + captures.COOKIE + options)


@given(
    st.sampled_from(CAPTURES),
    st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 400),
)
def test_mutated_captures_raise_only_malformed_packet(
    wire: bytes, changes: list[tuple[int, int]], keep: int
) -> None:
    mutated = bytearray(wire)
    for position, value in changes:
        mutated[position % len(mutated)] = value
    decodes_or_refuses(bytes(mutated[: max(keep, 236)]))


def check_reply(decision: Decision, asked: DhcpPacket, *, proxy: bool) -> None:
    assert isinstance(decision, Reply | Ignore | Release)
    if not isinstance(decision, Reply):
        return
    reply = decision.packet
    wire = encode(reply)
    assert decode(wire) == reply
    assert reply.op == 2 and reply.xid == asked.xid and reply.chaddr == asked.chaddr
    assert len(wire) <= max(asked.max_message_size or 0, MIN_MESSAGE_SIZE) - IP_UDP_HEADERS
    if proxy:
        assert reply.yiaddr == IPv4Address(0) and decision.address is None
        assert decision.lease_time is None


@settings(max_examples=500)
@given(requests(), reservation_networks, machines(), st.none() | addresses, boot_settings)
def test_answer_reservation_never_raises(
    packet: DhcpPacket,
    network: NetworkConfig,
    machine: MachineView | None,
    pool_address: IPv4Address | None,
    boot: BootSettings,
) -> None:
    asked = decode(encode(packet))
    decision = answer_reservation(
        asked, classify(asked), network, SERVER, machine, pool_address, boot
    )
    check_reply(decision, asked, proxy=False)


@settings(max_examples=500)
@given(
    requests(),
    proxy_networks,
    machines(),
    boot_settings,
    st.booleans(),
    st.sampled_from([("0.0.0.0", 68), ("192.0.2.50", 68), ("192.0.2.50", 4011)]),
)
def test_answer_proxy_never_raises_nor_gives_an_address(
    packet: DhcpPacket,
    network: NetworkConfig,
    machine: MachineView | None,
    boot: BootSettings,
    on_port_4011: bool,
    source: tuple[str, int],
) -> None:
    asked = decode(encode(packet))
    decision = answer_proxy(
        asked,
        classify(asked),
        network,
        SERVER,
        machine,
        boot,
        on_port_4011=on_port_4011,
        source=source,
    )
    check_reply(decision, asked, proxy=True)


@st.composite
def split_options(draw: st.DrawFn) -> tuple[bytes, dict[int, bytes]]:
    """An options field whose values travel in pieces, the pieces of different codes
    interleaved (RFC 3396), and the values a decoder must rebuild, in first-seen order."""
    values = draw(
        st.dictionaries(
            st.integers(1, 254).filter(lambda code: code != 52),
            st.binary(min_size=1, max_size=600),
            min_size=1,
            max_size=6,
        )
    )
    queues: dict[int, list[bytes]] = {}
    for code, value in values.items():
        cuts = draw(st.sets(st.integers(1, len(value)), max_size=8))
        bounds = sorted({0, len(value), *cuts, *range(255, len(value), 255)})
        queues[code] = [value[start:end] for start, end in itertools.pairwise(bounds)]
    owners = draw(st.permutations([code for code, pieces in queues.items() for _ in pieces]))
    field = bytearray()
    expected: dict[int, bytes] = {}
    for code in owners:
        piece = queues[code].pop(0)
        field += bytes((code, len(piece))) + piece
        expected[code] = expected.get(code, b"") + piece
    return bytes(field), expected


@settings(max_examples=200)
@given(split_options())
def test_pieces_of_every_code_are_joined_in_wire_order(
    case: tuple[bytes, dict[int, bytes]],
) -> None:
    field, expected = case
    decoded = decode(captures.bootp_header(xid=1) + captures.COOKIE + field + b"\xff")
    assert decoded.options == expected
    assert list(decoded.options) == list(expected)
    assert decode(encode(decoded)) == decoded


def test_a_64_kib_datagram_of_one_byte_options_decodes_to_one_value() -> None:
    """The attack of issue 13: ~21,750 one-byte pieces of option 43 in one UDP datagram."""
    count = (65507 - 244) // 3
    wire = captures.bootp_header(xid=1) + captures.COOKIE + b"\x35\x01\x01"
    wire += b"\x2b\x01A" * count + b"\xff"
    assert len(wire) <= 65507
    decoded = decode(wire)
    assert decoded.options == {53: b"\x01", 43: b"A" * count}
