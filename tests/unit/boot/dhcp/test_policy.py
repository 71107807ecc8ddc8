"""Answer policies as tables of (request, inventory, whole expected decision), smee style."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from metalflow.boot.dhcp.codec import DhcpPacket, MessageType, decode, encode
from metalflow.boot.dhcp.network import NetworkConfig, Route
from metalflow.boot.dhcp.policy import (
    BROADCAST,
    Arch,
    BootChoice,
    BootSettings,
    ClientInfo,
    Decision,
    Ignore,
    Release,
    Reply,
    answer_proxy,
    answer_reservation,
    choose_bootfile,
    classify,
    reply_destination,
    reply_to,
    select_network,
)
from metalflow.index.views import MachineView
from tests.unit.boot.dhcp import captures
from tests.unit.boot.dhcp.captures import COOKIE, QEMU_MAC_TEXT, UUID_BYTES, UUID_TEXT, bootp_header
from tests.unit.boot.dhcp.testbed import (
    DISCOVERY,
    LAN,
    MANY_ROUTES,
    PROXY,
    RACK,
    SERVER,
    SETTINGS,
    machine,
)

IP = IPv4Address
ZERO = IP(0)
PXE_IDENTITY = (
    (93, b"\x00\x00"),
    (94, b"\x01\x02\x01"),
    (60, b"PXEClient:Arch:00000:UNDI:002001"),
)

# What every LAN OFFER/ACK for 192.0.2.10 carries, in order, as bytes on the wire.
LEASE_3600 = (
    (51, bytes.fromhex("00000e10")),
    (58, bytes.fromhex("00000708")),
    (59, bytes.fromhex("00000c4e")),
)
LAN_SETTINGS = (
    (1, bytes.fromhex("ffffff00")),
    (28, bytes.fromhex("c00002ff")),
    (3, bytes.fromhex("c00002fe")),
    (6, bytes.fromhex("c0000235")),
)
SERVER_ID = (54, bytes.fromhex("c0000201"))
DOMAIN_AND_NTP = ((15, b"lab.example"), (42, bytes.fromhex("c000027b")))
NOT_PXE_REASONS = (
    "option 60 (vendor class) is missing",
    "option 93 (client architecture) is missing or malformed",
    "option 94 (client network interface) is missing",
)
NOT_PXE = "not a PXE client: " + "; ".join(NOT_PXE_REASONS)


def request(*options: tuple[int, bytes], **header: Any) -> bytes:
    """A request built from raw options, each (code, value)."""
    body = b"".join(bytes((code, len(value))) + value for code, value in options)
    return bootp_header(xid=0x0000BEEF, **header) + COOKIE + body + b"\xff"


def expected(
    wire: bytes,
    message_type: int,
    *options: tuple[int, bytes],
    yiaddr: str = "0.0.0.0",
    siaddr: str = "0.0.0.0",
    file: bytes = b"",
    ciaddr: str = "0.0.0.0",
    flags: int | None = None,
) -> DhcpPacket:
    """The reply packet spelled out field by field, independent of `reply_to`."""
    asked = decode(wire)
    return DhcpPacket(
        op=2,
        htype=1,
        hlen=6,
        hops=0,
        xid=asked.xid,
        secs=0,
        flags=asked.flags if flags is None else flags,
        ciaddr=IP(ciaddr),
        yiaddr=IP(yiaddr),
        siaddr=IP(siaddr),
        giaddr=asked.giaddr,
        chaddr=asked.chaddr,
        sname=bytes(64),
        file=file.ljust(128, b"\0"),
        options=dict(((53, bytes((message_type,))), *options)),
    )


@dataclass(frozen=True)
class Case:
    wire: bytes
    want: Decision
    machine: MachineView | None = field(default_factory=machine)
    pool: IPv4Address | None = None
    settings: BootSettings = SETTINGS
    network: NetworkConfig = LAN


def offer(wire: bytes, file: bytes, *boot: tuple[int, bytes], note: str = "") -> Reply:
    """A LAN OFFER of 192.0.2.10 to node1 with `file` (b"" for none)."""
    packet = expected(
        wire,
        2,
        SERVER_ID,
        *LEASE_3600,
        *LAN_SETTINGS,
        (12, b"node1"),
        *DOMAIN_AND_NTP,
        *boot,
        yiaddr="192.0.2.10",
        siaddr="192.0.2.1" if file else "0.0.0.0",
        file=file,
    )
    return Reply(
        packet, BROADCAST, "dhcp.offer", IP("192.0.2.10"), file.decode() or None, 3600, note
    )


def nak(wire: bytes, claimed: str, destination: tuple[str, int] = BROADCAST) -> Reply:
    message = f"{claimed} is not this client's address"
    packet = expected(wire, 6, SERVER_ID, (56, message.encode()))
    return Reply(packet, destination, "dhcp.nak", None, None, None, message)


SELECTING = request((53, b"\x03"), SERVER_ID, (50, IP("192.0.2.10").packed), *PXE_IDENTITY)
SELECTING_WRONG = request((53, b"\x03"), SERVER_ID, (50, IP("192.0.2.11").packed), *PXE_IDENTITY)
OTHER_SERVER = request((53, b"\x03"), (54, IP("192.0.2.2").packed), (50, IP("192.0.2.10").packed))
RENEWING = request((53, b"\x03"), *PXE_IDENTITY, ciaddr="192.0.2.10")
RENEWING_WRONG = request((53, b"\x03"), ciaddr="192.0.2.99")
INFORM = request((53, b"\x08"), ciaddr="192.0.2.10")
RELEASE = request((53, b"\x07"), SERVER_ID, ciaddr="192.0.2.10")
DECLINE = request((53, b"\x04"), SERVER_ID, (50, IP("192.0.2.10").packed))
BOOTP_REQUEST = request()
SELECTING_WITHOUT_50 = request((53, b"\x03"), SERVER_ID, *PXE_IDENTITY)
REBINDING = request((53, b"\x03"), ciaddr="192.0.2.100", flags=0x8000)
RELAY_INFO = (82, bytes.fromhex("0106657468302f31"))  # circuit id "eth0/1"
SNOOPED_DISCOVER = request((53, b"\x01"), *PXE_IDENTITY, RELAY_INFO)
INFINITE_LEASE = (51, bytes.fromhex("ffffffff"))
WEB03 = "00:16:3e:5e:6c:00"
RACK_MAC = "52:54:00:ab:cd:ef"

RESERVATION_CASES = [
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            offer(captures.INTEL_PXE_BIOS_DISCOVER, b"undionly.kpxe"),
        ),
        id="bios-rom-gets-undionly",
    ),
    pytest.param(
        Case(captures.EDK2_UEFI_X64_DISCOVER, offer(captures.EDK2_UEFI_X64_DISCOVER, b"ipxe.efi")),
        id="uefi-x64-gets-ipxe-efi",
    ),
    pytest.param(
        Case(captures.EDK2_ARM64_DISCOVER, offer(captures.EDK2_ARM64_DISCOVER, b"snp-arm64.efi")),
        id="uefi-arm64-gets-snp-arm64",
    ),
    pytest.param(
        Case(
            captures.EDK2_HTTP_DISCOVER,
            offer(
                captures.EDK2_HTTP_DISCOVER,
                b"http://192.0.2.1:7080/boot/assets/ipxe.efi",
                (60, b"HTTPClient"),
            ),
        ),
        id="http-client-gets-url-and-option-60",
    ),
    pytest.param(
        Case(
            captures.IPXE_BIOS_DISCOVER,
            offer(
                captures.IPXE_BIOS_DISCOVER,
                b"http://192.0.2.1:7080/boot/52:54:00:12:34:56.ipxe",
                (61, b"\x01" + captures.QEMU_MAC),
            ),
        ),
        id="ipxe-gets-its-script-and-client-id-echoed",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            offer(captures.INTEL_PXE_BIOS_DISCOVER, b"", note="no active workflow"),
            machine=machine(workflow=False),
        ),
        id="known-without-workflow-gets-address-only",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            offer(captures.INTEL_PXE_BIOS_DISCOVER, b"", note="interface does not allow PXE"),
            machine=machine(allow_pxe=False),
        ),
        id="pxe-disabled-gets-address-only",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Reply(
                expected(
                    captures.INTEL_PXE_BIOS_DISCOVER,
                    2,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.100",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                ),
                BROADCAST,
                "dhcp.offer",
                IP("192.0.2.100"),
                "undionly.kpxe",
                3600,
            ),
            machine=None,
            pool=IP("192.0.2.100"),
            settings=DISCOVERY,
        ),
        id="unknown-with-discovery-boots-from-the-pool",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Reply(
                expected(
                    captures.INTEL_PXE_BIOS_DISCOVER,
                    2,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.100",
                ),
                BROADCAST,
                "dhcp.offer",
                IP("192.0.2.100"),
                None,
                3600,
                "unknown machine and discovery is off",
            ),
            machine=None,
            pool=IP("192.0.2.100"),
        ),
        id="unknown-without-discovery-gets-a-pool-address-only",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Ignore("no address for 52:54:00:12:34:56 in 192.0.2.0/24", "no_address"),
            machine=None,
        ),
        id="unknown-without-pool-is-ignored",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Reply(
                expected(
                    captures.INTEL_PXE_BIOS_DISCOVER,
                    2,
                    SERVER_ID,
                    (51, bytes.fromhex("00001c20")),
                    (58, bytes.fromhex("00000e10")),
                    (59, bytes.fromhex("0000189c")),
                    (1, bytes.fromhex("ffffff80")),
                    (28, bytes.fromhex("c000027f")),
                    (3, bytes.fromhex("c000027e")),
                    (6, bytes.fromhex("c0000209")),
                    (12, b"node1"),
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.10",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                ),
                BROADCAST,
                "dhcp.offer",
                IP("192.0.2.10"),
                "undionly.kpxe",
                7200,
            ),
            machine=machine(
                netmask="255.255.255.128",
                gateway="192.0.2.126",
                nameservers=("192.0.2.9",),
                lease_time=7200,
            ),
        ),
        id="interface-settings-win-over-the-network",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Reply(
                expected(
                    captures.INTEL_PXE_BIOS_DISCOVER,
                    2,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    (12, b"node1"),
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.100",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                ),
                BROADCAST,
                "dhcp.offer",
                IP("192.0.2.100"),
                "undionly.kpxe",
                3600,
            ),
            machine=machine(ip="198.51.100.7", netmask="255.255.255.252", lease_time=60),
            pool=IP("192.0.2.100"),
        ),
        id="known-machine-addressed-elsewhere-gets-a-pool-address",
    ),
    pytest.param(
        Case(
            SELECTING,
            Reply(
                expected(
                    SELECTING,
                    5,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    (12, b"node1"),
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.10",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                ),
                BROADCAST,
                "dhcp.ack",
                IP("192.0.2.10"),
                "undionly.kpxe",
                3600,
            ),
        ),
        id="selecting-request-is-acked",
    ),
    pytest.param(
        Case(SELECTING_WRONG, nak(SELECTING_WRONG, "192.0.2.11")), id="selecting-wrong-address-naks"
    ),
    pytest.param(
        Case(OTHER_SERVER, Ignore("client chose server 192.0.2.2", "other_server")),
        id="request-for-another-server-is-ignored",
    ),
    pytest.param(
        Case(
            captures.DHCLIENT_INIT_REBOOT,
            Reply(
                expected(
                    captures.DHCLIENT_INIT_REBOOT,
                    5,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    (12, b"web03"),
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.11",
                ),
                BROADCAST,
                "dhcp.ack",
                IP("192.0.2.11"),
                None,
                3600,
                NOT_PXE,
            ),
            machine=machine(WEB03, ip="192.0.2.11", hostname="web03"),
        ),
        id="init-reboot-matching-is-acked-without-boot-file",
    ),
    pytest.param(
        Case(
            captures.DHCLIENT_INIT_REBOOT,
            nak(captures.DHCLIENT_INIT_REBOOT, "192.0.2.11"),
            machine=machine(WEB03, ip="192.0.2.12"),
        ),
        id="init-reboot-known-elsewhere-naks",
    ),
    pytest.param(
        Case(
            captures.DHCLIENT_INIT_REBOOT,
            Ignore(
                "INIT-REBOOT for 192.0.2.11 from 00:16:3e:5e:6c:00, unknown here", "unknown_client"
            ),
            machine=None,
        ),
        id="init-reboot-unknown-stays-silent",
    ),
    pytest.param(
        Case(
            captures.DHCLIENT_INIT_REBOOT,
            Ignore(
                "INIT-REBOOT for 192.0.2.11 from 00:16:3e:5e:6c:00, unknown here", "unknown_client"
            ),
            machine=machine(WEB03, ip="198.51.100.7"),
        ),
        id="init-reboot-known-only-on-another-network-stays-silent",
    ),
    pytest.param(
        Case(
            captures.DHCLIENT_INIT_REBOOT,
            Reply(
                expected(
                    captures.DHCLIENT_INIT_REBOOT,
                    5,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.11",
                ),
                BROADCAST,
                "dhcp.ack",
                IP("192.0.2.11"),
                None,
                3600,
                NOT_PXE,
            ),
            machine=None,
            pool=IP("192.0.2.11"),
        ),
        id="init-reboot-with-its-pool-lease-is-acked",
    ),
    pytest.param(
        Case(
            captures.DHCLIENT_INIT_REBOOT,
            nak(captures.DHCLIENT_INIT_REBOOT, "192.0.2.11"),
            machine=None,
            pool=IP("192.0.2.150"),
        ),
        id="init-reboot-leased-another-pool-address-naks",
    ),
    pytest.param(
        Case(
            RENEWING,
            Ignore("renewal of 192.0.2.10 from 52:54:00:12:34:56, unknown here", "unknown_client"),
            machine=None,
        ),
        id="renewing-unknown-stays-silent",
    ),
    pytest.param(
        Case(
            REBINDING,
            Ignore("renewal of 192.0.2.100 from 52:54:00:12:34:56, unknown here", "unknown_client"),
            machine=machine(ip=None),
        ),
        id="rebinding-without-a-lease-stays-silent",
    ),
    pytest.param(
        Case(
            REBINDING,
            Reply(
                expected(
                    REBINDING,
                    5,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.100",
                    ciaddr="192.0.2.100",
                ),
                ("192.0.2.100", 68),
                "dhcp.ack",
                IP("192.0.2.100"),
                None,
                3600,
                NOT_PXE,
            ),
            machine=None,
            pool=IP("192.0.2.100"),
        ),
        id="rebinding-with-its-pool-lease-is-acked",
    ),
    pytest.param(
        Case(
            REBINDING,
            nak(REBINDING, "192.0.2.100"),
            machine=None,
            pool=IP("192.0.2.101"),
        ),
        id="rebinding-leased-another-pool-address-naks",
    ),
    pytest.param(
        Case(
            SELECTING_WITHOUT_50,
            Ignore(
                "SELECTING REQUEST without option 50 (requested IP address)",
                "unsupported_message",
            ),
        ),
        id="selecting-without-option-50-is-ignored",
    ),
    pytest.param(
        Case(
            SELECTING,
            Ignore("no address for 52:54:00:12:34:56 in 192.0.2.0/24", "no_address"),
            machine=None,
        ),
        id="selecting-without-an-offer-is-ignored",
    ),
    pytest.param(
        Case(SELECTING, nak(SELECTING, "192.0.2.10"), machine=None, pool=IP("192.0.2.100")),
        id="selecting-other-than-the-offer-naks",
    ),
    pytest.param(
        Case(
            RENEWING,
            Reply(
                expected(
                    RENEWING,
                    5,
                    SERVER_ID,
                    *LEASE_3600,
                    *LAN_SETTINGS,
                    (12, b"node1"),
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.10",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                    ciaddr="192.0.2.10",
                ),
                ("192.0.2.10", 68),
                "dhcp.ack",
                IP("192.0.2.10"),
                "undionly.kpxe",
                3600,
            ),
        ),
        id="renewing-is-acked-by-unicast",
    ),
    pytest.param(
        Case(RENEWING_WRONG, nak(RENEWING_WRONG, "192.0.2.99")), id="renewing-wrong-address-naks"
    ),
    pytest.param(
        Case(
            INFORM,
            Reply(
                expected(
                    INFORM,
                    5,
                    SERVER_ID,
                    *LAN_SETTINGS,
                    (12, b"node1"),
                    *DOMAIN_AND_NTP,
                    ciaddr="192.0.2.10",
                ),
                ("192.0.2.10", 68),
                "dhcp.inform",
                None,
                None,
                None,
                "INFORM gets no boot file",
            ),
        ),
        id="inform-gets-settings-without-address-or-lease",
    ),
    pytest.param(Case(RELEASE, Release(QEMU_MAC_TEXT, IP("192.0.2.10"), False)), id="release"),
    pytest.param(Case(DECLINE, Release(QEMU_MAC_TEXT, IP("192.0.2.10"), True)), id="decline"),
    pytest.param(
        Case(BOOTP_REQUEST, Ignore("message type none (BOOTP)", "unsupported_message")),
        id="plain-bootp-is-ignored",
    ),
    pytest.param(
        Case(request((53, b"\x01"), op=2), Ignore("op 2 is not a BOOTREQUEST", "not_for_us")),
        id="replies-from-other-servers-are-ignored",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Ignore("network 192.0.2.0/24 is in mode proxy", "not_for_us"),
            network=PROXY,
        ),
        id="proxy-network-is-not-for-reservation",
    ),
    pytest.param(
        Case(
            captures.RELAYED_REQUEST,
            Reply(
                expected(
                    captures.RELAYED_REQUEST,
                    5,
                    SERVER_ID,
                    (51, bytes.fromhex("00000258")),
                    (58, bytes.fromhex("0000012c")),
                    (59, bytes.fromhex("0000020d")),
                    (1, bytes.fromhex("ffffff00")),
                    (28, bytes.fromhex("0a1400ff")),
                    (3, bytes.fromhex("0a140001")),
                    (12, b"node1"),
                    (82, bytes.fromhex("0106657468302f3102080000525400abcdef")),
                    yiaddr="10.20.0.5",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                ),
                ("10.20.0.1", 67),
                "dhcp.ack",
                IP("10.20.0.5"),
                "undionly.kpxe",
                600,
            ),
            machine=machine(RACK_MAC, ip="10.20.0.5"),
            network=RACK,
        ),
        id="relayed-request-goes-to-the-relay-with-option-82",
    ),
    pytest.param(
        Case(SNOOPED_DISCOVER, offer(SNOOPED_DISCOVER, b"undionly.kpxe", RELAY_INFO)),
        id="option-82-from-a-snooping-switch-is-echoed-with-giaddr-0",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Reply(
                expected(
                    captures.INTEL_PXE_BIOS_DISCOVER,
                    2,
                    SERVER_ID,
                    INFINITE_LEASE,
                    *LAN_SETTINGS,
                    (12, b"node1"),
                    *DOMAIN_AND_NTP,
                    yiaddr="192.0.2.10",
                    siaddr="192.0.2.1",
                    file=b"undionly.kpxe",
                ),
                BROADCAST,
                "dhcp.offer",
                IP("192.0.2.10"),
                "undionly.kpxe",
                0xFFFFFFFF,
            ),
            machine=machine(lease_time=0xFFFFFFFF),
        ),
        id="infinite-lease-has-no-t1-or-t2",
    ),
]


@pytest.mark.parametrize("case", RESERVATION_CASES)
def test_answer_reservation(case: Case) -> None:
    asked = decode(case.wire)
    decision = answer_reservation(
        asked, classify(asked), case.network, SERVER, case.machine, case.pool, case.settings
    )
    assert decision == case.want
    if isinstance(decision, Reply):
        assert decode(encode(decision.packet)) == decision.packet


PROXY_REQUEST_4011 = request(
    (53, b"\x03"),
    *PXE_IDENTITY,
    (97, b"\x00" + UUID_BYTES),
    ciaddr="192.0.2.50",
)
PROXY_REQUEST_67 = request((53, b"\x03"), SERVER_ID, *PXE_IDENTITY)
SITE_REQUEST_67 = request((53, b"\x03"), (54, IP("192.0.2.254").packed), *PXE_IDENTITY)
PXE_PROXY_OPTIONS = ((60, b"PXEClient"), (43, bytes.fromhex("060108ff")))
UUID_OPTION = (97, b"\x00" + UUID_BYTES)


def proxy_reply(
    wire: bytes,
    message_type: int,
    file: bytes,
    *options: tuple[int, bytes],
    destination: tuple[str, int] = BROADCAST,
    ciaddr: str = "0.0.0.0",
) -> Reply:
    kind = "dhcp.proxy_offer" if message_type == 2 else "dhcp.proxy_ack"
    packet = expected(
        wire, message_type, SERVER_ID, *options, siaddr="192.0.2.1", file=file, ciaddr=ciaddr
    )
    return Reply(packet, destination, kind, None, file.decode(), None)


PROXY_CASES = [
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            proxy_reply(
                captures.INTEL_PXE_BIOS_DISCOVER,
                2,
                b"undionly.kpxe",
                *PXE_PROXY_OPTIONS,
                UUID_OPTION,
            ),
        ),
        False,
        id="pxe-discover-gets-a-proxy-offer",
    ),
    pytest.param(
        Case(
            captures.EDK2_HTTP_DISCOVER,
            proxy_reply(
                captures.EDK2_HTTP_DISCOVER,
                2,
                b"http://192.0.2.1:7080/boot/assets/ipxe.efi",
                (60, b"HTTPClient"),
                UUID_OPTION,
            ),
        ),
        False,
        id="http-discover-gets-url-without-option-43",
    ),
    pytest.param(
        Case(
            captures.IPXE_BIOS_DISCOVER,
            proxy_reply(
                captures.IPXE_BIOS_DISCOVER,
                2,
                b"http://192.0.2.1:7080/boot/52:54:00:12:34:56.ipxe",
                *PXE_PROXY_OPTIONS,
                UUID_OPTION,
                (61, b"\x01" + captures.QEMU_MAC),
            ),
        ),
        False,
        id="ipxe-discover-gets-its-script",
    ),
    pytest.param(
        Case(
            PROXY_REQUEST_4011,
            proxy_reply(
                PROXY_REQUEST_4011,
                5,
                b"undionly.kpxe",
                *PXE_PROXY_OPTIONS,
                UUID_OPTION,
                destination=("192.0.2.50", 68),
                ciaddr="192.0.2.50",
            ),
        ),
        True,
        id="boot-server-request-on-4011-is-answered-where-it-came-from",
    ),
    pytest.param(
        Case(
            PROXY_REQUEST_67,
            proxy_reply(PROXY_REQUEST_67, 5, b"undionly.kpxe", *PXE_PROXY_OPTIONS),
        ),
        False,
        id="request-on-67-addressed-to-us-is-acked",
    ),
    pytest.param(
        Case(
            SITE_REQUEST_67, Ignore("REQUEST on port 67 for the site's DHCP server", "not_for_us")
        ),
        False,
        id="request-on-67-for-the-site-server-is-ignored",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER, Ignore("DISCOVER on port 4011", "unsupported_message")
        ),
        True,
        id="discover-on-4011-is-ignored",
    ),
    pytest.param(
        Case(
            request((53, b"\x01"), (12, b"laptop")),
            Ignore(NOT_PXE, "not_netboot"),
        ),
        False,
        id="non-pxe-client-is-ignored-with-every-reason",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Ignore("unknown machine and discovery is off", "unknown_client"),
            machine=None,
        ),
        False,
        id="unknown-machine-without-discovery-is-ignored",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            Ignore("no active workflow", "no_workflow"),
            machine=machine(workflow=False),
        ),
        False,
        id="machine-without-workflow-is-ignored",
    ),
    pytest.param(
        Case(
            captures.INTEL_PXE_BIOS_DISCOVER,
            proxy_reply(
                captures.INTEL_PXE_BIOS_DISCOVER,
                2,
                b"undionly.kpxe",
                *PXE_PROXY_OPTIONS,
                UUID_OPTION,
            ),
            machine=None,
            settings=DISCOVERY,
        ),
        False,
        id="unknown-machine-with-discovery-boots",
    ),
    pytest.param(
        Case(RELEASE, Ignore("message type RELEASE in proxy mode", "unsupported_message")),
        False,
        id="release-in-proxy-mode-is-ignored",
    ),
]


@pytest.mark.parametrize(("case", "on_port_4011"), PROXY_CASES)
def test_answer_proxy(case: Case, on_port_4011: bool) -> None:
    asked = decode(case.wire)
    source = (str(asked.ciaddr), 68) if on_port_4011 else ("0.0.0.0", 68)
    decision = answer_proxy(
        asked,
        classify(asked),
        PROXY,
        SERVER,
        case.machine,
        case.settings,
        on_port_4011=on_port_4011,
        source=source,
    )
    assert decision == case.want
    if isinstance(decision, Reply):
        assert decision.packet.yiaddr == ZERO


@pytest.mark.parametrize(
    ("wire", "want"),
    [
        pytest.param(
            captures.IPXE_BIOS_DISCOVER,
            ClientInfo(QEMU_MAC_TEXT, Arch.X86_BIOS, "PXEClient", "iPXE", True, UUID_TEXT, ()),
            id="ipxe",
        ),
        pytest.param(
            captures.EDK2_UEFI_X64_DISCOVER,
            ClientInfo(QEMU_MAC_TEXT, Arch.X64_UEFI, "PXEClient", None, False, UUID_TEXT, ()),
            id="edk2-x64",
        ),
        pytest.param(
            captures.EDK2_HTTP_DISCOVER,
            ClientInfo(QEMU_MAC_TEXT, Arch.X64_UEFI_HTTP, "HTTPClient", None, False, UUID_TEXT, ()),
            id="edk2-http",
        ),
        pytest.param(
            captures.DHCLIENT_INIT_REBOOT,
            ClientInfo(WEB03, None, None, None, False, None, NOT_PXE_REASONS),
            id="dhclient",
        ),
        pytest.param(
            request(
                (53, b"\x07"),
                (60, b"MSFT 5.0"),
                (93, b"\x00\x2a"),
                (94, b"\x01\x03\x00"),
                (97, b"\x00" + UUID_BYTES[:8]),
                (175, b""),
            ),
            ClientInfo(
                QEMU_MAC_TEXT,
                42,
                None,
                None,
                True,
                None,
                (
                    "message type RELEASE is not DISCOVER or REQUEST",
                    "option 60 (vendor class) 'MSFT 5.0' is not PXEClient or HTTPClient",
                    "option 97 (client machine id) is 9 bytes, not 17 starting with type 0",
                ),
            ),
            id="every-reason-at-once",
        ),
    ],
)
def test_classify(wire: bytes, want: ClientInfo) -> None:
    assert classify(decode(wire)) == want


def info(
    arch: int | None, *, client_type: str | None = "PXEClient", ipxe: bool = False
) -> ClientInfo:
    return ClientInfo(QEMU_MAC_TEXT, arch, client_type, None, ipxe, None, ())


@pytest.mark.parametrize(
    ("client", "settings", "want"),
    [
        (info(0), SETTINGS, BootChoice("undionly.kpxe", SERVER, None)),
        (info(6), SETTINGS, BootChoice("ipxe-ia32.efi", SERVER, None)),
        (info(7), SETTINGS, BootChoice("ipxe.efi", SERVER, None)),
        (info(9), SETTINGS, BootChoice("ipxe.efi", SERVER, None)),
        (info(11), SETTINGS, BootChoice("snp-arm64.efi", SERVER, None)),
        (
            info(10),
            SETTINGS,
            BootChoice(
                "undionly.kpxe",
                SERVER,
                None,
                "no iPXE binary for architecture 10; sent undionly.kpxe",
            ),
        ),
        (
            info(19, client_type="HTTPClient"),
            BootSettings(http_url="http://boot.example:7080/"),
            BootChoice("http://boot.example:7080/boot/assets/snp-arm64.efi", SERVER, "HTTPClient"),
        ),
        (
            info(7, ipxe=True, client_type="HTTPClient"),
            SETTINGS,
            BootChoice("http://192.0.2.1:7080/boot/52:54:00:12:34:56.ipxe", SERVER, None),
        ),
        (
            info(0),
            BootSettings(http_url="http://192.0.2.1:7080", tftp_server=IP("192.0.2.69")),
            BootChoice("undionly.kpxe", IP("192.0.2.69"), None),
        ),
    ],
)
def test_choose_bootfile(client: ClientInfo, settings: BootSettings, want: BootChoice) -> None:
    assert choose_bootfile(client, settings, SERVER) == want


def test_select_network_by_giaddr_else_the_local_link() -> None:
    relayed = decode(captures.RELAYED_REQUEST)
    local = decode(captures.INTEL_PXE_BIOS_DISCOVER)
    assert select_network([LAN, RACK], relayed, LAN) is RACK
    assert select_network([LAN], relayed, LAN) is None
    assert select_network([LAN, RACK], local, LAN) is LAN
    assert select_network([LAN, RACK], local, None) is None


@pytest.mark.parametrize(
    ("wire", "message_type", "source", "want"),
    [
        (captures.RELAYED_REQUEST, 5, None, ("10.20.0.1", 67)),
        (captures.RELAYED_REQUEST, 6, None, ("10.20.0.1", 67)),
        (RENEWING, 5, None, ("192.0.2.10", 68)),
        (RENEWING, 6, None, BROADCAST),
        (captures.INTEL_PXE_BIOS_DISCOVER, 2, None, BROADCAST),
        (PROXY_REQUEST_4011, 5, ("192.0.2.50", 4011), ("192.0.2.50", 4011)),
        (request((53, b"\x03")), 5, ("192.0.2.77", 68), ("192.0.2.77", 68)),
    ],
)
def test_reply_destination(
    wire: bytes, message_type: int, source: tuple[str, int] | None, want: tuple[str, int]
) -> None:
    asked = decode(wire)
    reply = expected(wire, message_type)
    assert reply_destination(asked, reply, source) == want


def test_relayed_nak_asks_the_relay_to_broadcast() -> None:
    asked = decode(captures.RELAYED_REQUEST)
    assert reply_to(asked, MessageType.NAK).flags == 0x8000
    assert reply_to(asked, MessageType.ACK).flags == 0


@pytest.mark.parametrize(
    ("prl", "kept"),
    [
        # 121 (not requested) goes, then the rest fits, unrequested 15 included.
        pytest.param(
            b"\x01\x03", [53, 54, 51, 58, 59, 1, 28, 3, 12, 15], id="unrequested-go-first"
        ),
        # Every unrequested option goes (12, 28, 59, 58), then requested ones from the end (121).
        pytest.param(b"\x01\x03\x0f\x79", [53, 54, 51, 1, 3, 15], id="then-requested-ones"),
    ],
)
def test_a_reply_is_trimmed_to_the_client_maximum(prl: bytes, kept: list[int]) -> None:
    wire = request((53, b"\x01"), (57, (576).to_bytes(2, "big")), (55, prl))
    asked = decode(wire)
    decision = answer_reservation(
        asked, classify(asked), MANY_ROUTES, SERVER, machine(), None, SETTINGS
    )
    assert isinstance(decision, Reply)
    assert list(decision.packet.options) == kept
    assert len(encode(decision.packet)) <= 576 - 28


def test_a_reply_that_cannot_fit_is_not_sent() -> None:
    wire = request((53, b"\x01"), (61, bytes(255)), (61, bytes(255)))  # one 510-byte client id
    asked = decode(wire)
    decision = answer_reservation(asked, classify(asked), LAN, SERVER, machine(), None, SETTINGS)
    assert decision == Ignore("dhcp.offer does not fit in the client's 548 bytes", "too_large")


def test_a_boot_url_too_long_for_the_file_field_goes_in_option_67() -> None:
    long_url = "http://boot.example:7080/" + "x" * 120
    asked = decode(captures.EDK2_HTTP_DISCOVER)
    decision = answer_proxy(
        asked,
        classify(asked),
        PROXY,
        SERVER,
        machine(),
        BootSettings(http_url=long_url),
        on_port_4011=False,
        source=("0.0.0.0", 68),
    )
    assert isinstance(decision, Reply)
    assert decision.packet.file == bytes(128)
    assert decision.packet.option(67) == f"{long_url}/boot/assets/ipxe.efi".encode()
    assert decision.bootfile == f"{long_url}/boot/assets/ipxe.efi"


def test_routes_carry_the_default_route_too() -> None:
    """RFC 3442: a client given option 121 ignores option 3."""
    network = NetworkConfig(
        subnet=IPv4Network("192.0.2.0/24"),
        gateway=IP("192.0.2.254"),
        routes=(Route(destination=IPv4Network("10.0.0.0/8"), gateway=IP("192.0.2.253")),),
    )
    asked = decode(captures.INTEL_PXE_BIOS_DISCOVER)
    decision = answer_reservation(
        asked, classify(asked), network, SERVER, machine(), None, SETTINGS
    )
    assert isinstance(decision, Reply)
    assert decision.packet.option(121) == bytes.fromhex("080ac00002fd 00c00002fe")


def test_an_oversized_inventory_lease_becomes_infinite() -> None:
    asked = decode(captures.INTEL_PXE_BIOS_DISCOVER)
    node = machine(lease_time=2**33)
    decision = answer_reservation(asked, classify(asked), LAN, SERVER, node, None, SETTINGS)
    assert isinstance(decision, Reply) and decision.lease_time == 0xFFFFFFFF
    assert decision.packet.option(51) == b"\xff\xff\xff\xff"
    assert decision.packet.option(58) is None and decision.packet.option(59) is None
