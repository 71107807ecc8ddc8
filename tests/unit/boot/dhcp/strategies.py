"""Hypothesis strategies: arbitrary packets, and requests shaped like the ones clients send."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import strategies as st

from metalflow.boot.dhcp.codec import DhcpPacket
from metalflow.boot.dhcp.network import DhcpMode, NetworkConfig
from metalflow.boot.dhcp.policy import BootSettings
from metalflow.index.views import MachineView
from tests.unit.boot.dhcp.testbed import DISCOVERY, LAN, MANY_ROUTES, PROXY, RACK, SETTINGS, machine

MACS = ("52:54:00:12:34:56", "52:54:00:ab:cd:ef")
ADDRESSES = tuple(
    map(
        IPv4Address,
        (
            "0.0.0.0",
            "192.0.2.1",
            "192.0.2.10",
            "192.0.2.100",
            "10.20.0.1",
            "10.20.0.5",
            "198.51.100.7",
        ),
    )
)
NETWORKS = (
    LAN,
    RACK,
    PROXY,
    MANY_ROUTES,
    NetworkConfig(subnet=IPv4Network("10.20.0.0/24"), mode=DhcpMode.PROXY),
    NetworkConfig(subnet=IPv4Network("198.51.100.0/30"), lease_time=60),
)
SETTINGS_CHOICES = (
    SETTINGS,
    DISCOVERY,
    BootSettings(http_url="http://boot.example:7080/" + "long/" * 30, discovery=True),
    BootSettings(http_url="http://192.0.2.1", tftp_server=IPv4Address("192.0.2.69")),
)

option_codes = st.integers(1, 254).filter(lambda code: code != 52)


def unique_options(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[dict[int, bytes]]:
    return st.dictionaries(option_codes, values, max_size=12)


packets = st.builds(
    DhcpPacket,
    op=st.integers(0, 255),
    htype=st.integers(0, 255),
    hlen=st.integers(0, 16),
    hops=st.integers(0, 255),
    xid=st.integers(0, 2**32 - 1),
    secs=st.integers(0, 2**16 - 1),
    flags=st.integers(0, 2**16 - 1),
    ciaddr=st.ip_addresses(v=4),
    yiaddr=st.ip_addresses(v=4),
    siaddr=st.ip_addresses(v=4),
    giaddr=st.ip_addresses(v=4),
    chaddr=st.binary(min_size=16, max_size=16),
    sname=st.binary(min_size=64, max_size=64),
    file=st.binary(min_size=128, max_size=128),
    options=unique_options(st.binary(max_size=600)),
)

addresses = st.sampled_from(ADDRESSES)
address_bytes = addresses.map(lambda address: address.packed) | st.binary(max_size=6)


def mostly(usual: Any, unusual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` (a value or a strategy) nine times in ten, else something from `unusual`."""
    common = usual if isinstance(usual, st.SearchStrategy) else st.just(usual)
    return st.integers(0, 9).flatmap(lambda roll: unusual if roll == 9 else common)


PXE_IDENTITY: dict[int, st.SearchStrategy[bytes]] = {
    93: st.sampled_from(
        [b"\x00\x00", b"\x00\x06", b"\x00\x07", b"\x00\x0b", b"\x00\x10", b"\x00\x13"]
    ),
    94: st.sampled_from([b"\x01\x02\x01", b"\x01\x03\x10"]),
    60: st.sampled_from(
        [b"PXEClient:Arch:00000:UNDI:002001", b"HTTPClient:Arch:00016:UNDI:003016"]
    ),
    97: st.binary(min_size=16, max_size=16).map(lambda guid: b"\x00" + guid),
}
ODD_VALUES: dict[int, st.SearchStrategy[bytes]] = {
    53: st.sampled_from([b"\x02", b"\x04", b"\x07", b"\x08", b"\x0a", b"", b"\x01\x01"]),
    93: st.binary(max_size=5),
    60: st.sampled_from([b"MSFT 5.0", b""]) | st.binary(max_size=40),
    97: st.binary(max_size=20),
}
OTHER_OPTIONS: dict[int, st.SearchStrategy[bytes]] = {
    77: st.sampled_from([b"iPXE", b"\x04iPXE", b"\x00", b"Tinkerbell"]),
    175: st.binary(max_size=20),
    54: mostly(IPv4Address("192.0.2.1").packed, address_bytes),
    50: mostly(IPv4Address("192.0.2.10").packed, address_bytes),
    57: mostly(st.sampled_from([576, 600, 1472]), st.integers(0, 2**16 - 1)).map(
        lambda size: size.to_bytes(2, "big")
    )
    | st.binary(max_size=3),
    55: st.binary(max_size=40),
    61: st.binary(max_size=300),
    82: st.binary(max_size=300),
    12: st.text(max_size=20).map(lambda text: text.encode()),
}


@st.composite
def requests(draw: st.DrawFn) -> DhcpPacket:
    """Mostly PXE-shaped DISCOVERs and REQUESTs; each option sometimes odd or absent."""
    options = [(53, draw(mostly(st.sampled_from([b"\x01", b"\x03"]), ODD_VALUES[53])))]
    for code, usual in PXE_IDENTITY.items():
        roll = draw(st.integers(0, 9))
        if roll == 9:
            continue
        odd = ODD_VALUES.get(code)
        options.append((code, draw(odd if roll == 8 and odd is not None else usual)))
    options.extend(
        (code, draw(values)) for code, values in OTHER_OPTIONS.items() if draw(st.booleans())
    )
    options.extend(draw(unique_options(st.binary(max_size=300))).items())
    unique = {code: value for code, value in reversed(options)}
    mac = bytes.fromhex(draw(st.sampled_from(MACS)).replace(":", ""))
    return DhcpPacket(
        op=draw(mostly(1, st.just(2))),
        htype=draw(mostly(1, st.integers(0, 255))),
        hlen=draw(mostly(6, st.integers(0, 16))),
        hops=0,
        xid=draw(st.integers(0, 2**32 - 1)),
        secs=0,
        flags=draw(st.sampled_from([0, 0x8000])),
        ciaddr=draw(mostly(IPv4Address(0), addresses)),
        yiaddr=IPv4Address(0),
        siaddr=IPv4Address(0),
        giaddr=draw(mostly(IPv4Address(0), addresses)),
        chaddr=mac.ljust(16, b"\0"),
        sname=bytes(64),
        file=bytes(128),
        options=unique,
    )


@st.composite
def machines(draw: st.DrawFn) -> MachineView | None:
    if draw(st.booleans()):
        return None
    return machine(
        draw(st.sampled_from(MACS)),
        ip=draw(mostly("192.0.2.10", st.sampled_from([None, "10.20.0.5", "198.51.100.2"]))),
        workflow=draw(mostly(True, st.just(False))),
        allow_pxe=draw(mostly(True, st.just(False))),
        hostname=draw(st.none() | st.text(max_size=300)),
        netmask=draw(st.sampled_from([None, "255.255.255.0", "255.255.255.252", "0.0.0.0"])),
        gateway=draw(st.sampled_from([None, "192.0.2.254", "10.20.0.1"])),
        nameservers=tuple(draw(st.lists(st.sampled_from(["192.0.2.53", "9.9.9.9"]), max_size=70))),
        lease_time=draw(st.none() | st.integers(60, 2**40)),
    )


reservation_networks = mostly(st.sampled_from([LAN, MANY_ROUTES]), st.sampled_from(NETWORKS))
proxy_networks = mostly(PROXY, st.sampled_from(NETWORKS))
boot_settings = st.sampled_from(SETTINGS_CHOICES)
