"""The DHCP server's whole per-packet path (decode, network choice, index, pool, policy,
encode, send) fed 100,000 random and mutated packets: every one is answered or dropped and
counted, none raises, and a well-formed DISCOVER is still answered afterwards."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from pathlib import Path

from metalflow.boot.dhcp.codec import DhcpPacket, MessageType, OptionCode, decode, encode
from metalflow.boot.dhcp.leases import LeaseStore
from metalflow.boot.dhcp.network import AddressRange, DhcpMode, NetworkConfig
from metalflow.boot.dhcp.policy import BootSettings
from metalflow.boot.dhcp.server import DhcpServer, InterfaceAddress
from metalflow.boot.index import BootIndex, InterfaceView, MachineView
from metalflow.boot.recorder import BootEventRecorder
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade

IPv4 = ipaddress.IPv4Address
KNOWN_MAC = "52:54:00:00:00:31"


class CapturingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int:
        self.sent.append((data, address))
        return len(data)


def discover(mac: str, *, arch: int | None = 0, giaddr: str = "0.0.0.0") -> DhcpPacket:
    options: list[tuple[int, bytes]] = [(OptionCode.MESSAGE_TYPE, bytes([MessageType.DISCOVER]))]
    if arch is not None:
        options += [
            (OptionCode.CLIENT_ARCH, arch.to_bytes(2, "big")),
            (OptionCode.CLIENT_NDI, b"\x01\x02\x01"),
            (OptionCode.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"),
        ]
    return DhcpPacket(
        op=1,
        htype=1,
        hlen=6,
        hops=0,
        xid=0x1234,
        secs=0,
        flags=0x8000,
        ciaddr=IPv4(0),
        yiaddr=IPv4(0),
        siaddr=IPv4(0),
        giaddr=IPv4(giaddr),
        chaddr=bytes.fromhex(mac.replace(":", "")) + bytes(10),
        sname=bytes(64),
        file=bytes(128),
        options={int(code): value for code, value in options},
    )


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randrange(1, 10)):
        position = rng.randrange(len(data)) if data else 0
        roll = rng.random()
        if roll < 0.5 and data:
            data[position] = rng.randrange(256)
        elif roll < 0.7:
            del data[position : position + rng.randrange(1, 64)]
        else:
            data[position:position] = rng.randbytes(rng.randrange(1, 64))
    return bytes(data)


def build_server(tmp_path: Path) -> DhcpServer:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(db)
    index = BootIndex()
    index.replace_all(
        [
            MachineView(
                id="m1",
                name="m1",
                hostname="m1",
                arch="x86_64",
                uefi=False,
                state="provisioning",
                agent_token_generation=0,
                has_active_workflow=True,
                interfaces=(
                    InterfaceView(
                        mac=KNOWN_MAC,
                        ip=IPv4("192.0.2.31"),
                        netmask=IPv4("255.255.255.0"),
                        gateway=IPv4("192.0.2.1"),
                        nameservers=(IPv4("192.0.2.53"),),
                        hostname=None,
                        lease_time=None,
                        allow_pxe=True,
                        allow_workflow=True,
                    ),
                ),
            )
        ]
    )
    networks = [
        NetworkConfig(
            subnet=ipaddress.IPv4Network("192.0.2.0/24"),
            pool=AddressRange(start=IPv4("192.0.2.100"), end=IPv4("192.0.2.200")),
        ),
        NetworkConfig(subnet=ipaddress.IPv4Network("198.18.0.0/24"), mode=DhcpMode.PROXY),
    ]
    return DhcpServer(
        interface=InterfaceAddress(
            "eth0", IPv4("192.0.2.1"), ipaddress.IPv4Network("192.0.2.0/24")
        ),
        networks=networks,
        boot=BootSettings(http_url="http://192.0.2.1:7080"),
        index=index,
        leases=LeaseStore(db, lambda address: index.by_ip(address) is not None),
        events=BootEventRecorder(db),
    )


def test_100k_random_and_mutated_packets_never_crash_the_server(tmp_path: Path) -> None:
    async def run() -> None:
        server = build_server(tmp_path)
        sender = CapturingSender()
        seeds = [
            encode(discover(KNOWN_MAC)),
            encode(discover("52:54:00:00:00:99", arch=7)),
            encode(discover("52:54:00:00:00:98", giaddr="198.18.0.1")),
            encode(discover("52:54:00:00:00:97", arch=None)),
        ]
        rng = random.Random(3)
        for count in range(100_000):
            data = (
                rng.randbytes(rng.randrange(600))
                if count % 5 == 0
                else mutate(rng, rng.choice(seeds))
            )
            server.handle(data, ("192.0.2.77", 68), sender, on_proxy_port=count % 7 == 0)
        assert server.dropped["malformed"] > 10_000

        sender.sent.clear()
        server.handle(seeds[0], ("0.0.0.0", 68), sender, on_proxy_port=False)
        (reply, destination) = sender.sent[-1]
        offer = decode(reply)
        assert offer.yiaddr == IPv4("192.0.2.31")
        assert offer.file.rstrip(b"\x00") == b"undionly.kpxe"
        assert destination == ("255.255.255.255", 68)

    asyncio.run(run())
