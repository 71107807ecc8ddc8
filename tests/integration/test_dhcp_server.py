"""The DHCP server's whole per-packet path (decode, network choice, index, pool, policy,
encode, send) fed 100,000 random and mutated packets: every one is answered or dropped and
counted, none raises, and a well-formed DISCOVER is still answered afterwards. Datagrams longer
than the link allows are dropped before decoding, by a running server too."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import subprocess
import sys
from pathlib import Path

import pytest

from metalflow.boot.dhcp.codec import DhcpPacket, MessageType, OptionCode, decode, encode
from metalflow.boot.dhcp.leases import LeaseStore
from metalflow.boot.dhcp.network import AddressRange, DhcpMode, NetworkConfig
from metalflow.boot.dhcp.policy import BootSettings
from metalflow.boot.dhcp.server import DhcpServer, InterfaceAddress, datagram_limit
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.index.views import MachineIndex
from metalflow.recorder import BootEventRecorder
from tests.factories import interface_view, machine_view
from tests.integration.bootlab import SERVER_IP, BootLab, wait_for
from tests.integration.test_dhcp import apply, machine, pxe

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
    index = MachineIndex()
    index.replace_all(
        [
            machine_view(
                id="m1",
                hostname="m1",
                interfaces=(
                    interface_view(
                        KNOWN_MAC,
                        ip="192.0.2.31",
                        netmask="255.255.255.0",
                        gateway="192.0.2.1",
                        nameservers=("192.0.2.53",),
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


def adversarial_discover(mac: str, size: int) -> bytes:
    """A DISCOVER grown to `size` bytes with one-byte pieces of option 43 (RFC 3396)."""
    head = encode(discover(mac), min_size=0)[:-1]
    pieces, odd = divmod(size - len(head) - 1, 3)
    return head + b"\x2b\x01A" * pieces + b"\x00" * odd + b"\xff"


@pytest.mark.parametrize(("mtu", "limit"), [(1500, 1472), (576, 1472), (9000, 8972), (65536, 8972)])
def test_the_datagram_limit_follows_the_link(mtu: int, limit: int) -> None:
    assert datagram_limit(mtu) == limit


def test_a_datagram_longer_than_the_link_allows_is_dropped_before_decoding(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        server = build_server(tmp_path)
        sender = CapturingSender()
        assert server.max_datagram == 1472
        server.handle(adversarial_discover(KNOWN_MAC, 65507), ("192.0.2.77", 68), sender, False)
        server.handle(adversarial_discover(KNOWN_MAC, 1473), ("192.0.2.77", 68), sender, False)
        assert server.dropped == {"oversized": 2}
        assert sender.sent == []

        server.handle(adversarial_discover(KNOWN_MAC, 1472), ("0.0.0.0", 68), sender, False)
        ((reply, _),) = sender.sent
        assert decode(reply).yiaddr == IPv4("192.0.2.31")

    asyncio.run(run())


def test_a_64_kib_datagram_to_a_running_server_is_dropped_and_counted(lab: BootLab) -> None:
    metalflow = lab.metalflow()
    client = lab.host("52:54:00:99:00:21")
    apply(metalflow, machine("steady", client.mac))
    attacker = lab.host("52:54:00:99:00:22")
    attacker.set_address("192.0.2.99/24")
    datagram = adversarial_discover(attacker.mac, 65507)
    send = (
        "import socket, sys\n"
        "sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "data = sys.stdin.buffer.read()\n"
        f"print(sock.sendto(data, ({SERVER_IP!r}, 67)))\n"
    )
    sent = subprocess.run(
        ["ip", "netns", "exec", attacker.namespace, sys.executable, "-c", send],
        input=datagram,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert int(sent.stdout) == 65507

    def oversized_counted() -> bool:
        with metalflow.api() as api:
            metrics = api.get("/metrics").text
        return any(
            line.startswith("metalflow_dhcp_dropped") and 'reason="oversized"' in line
            for line in metrics.splitlines()
        )

    wait_for(oversized_counted, timeout=30)
    (offer,) = pxe(client, "discover", "--arch", "0")
    assert offer["yiaddr"] == "192.0.2.31"
    assert metalflow.process.poll() is None
