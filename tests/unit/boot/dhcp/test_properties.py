"""Properties: the codec round-trips and only raises MalformedPacket; policies never raise."""

from __future__ import annotations

import contextlib
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
from metalflow.boot.index import MachineView
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
