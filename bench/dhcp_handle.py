#!/usr/bin/env python3
"""DhcpServer.handle in-process: CPU microseconds per DORA for pool clients, no sockets.

What `bench/dhcp.py` measures end to end is dominated on a shared machine by its neighbours;
this isolates the server's decode-decide-encode path (the lease writer is not run: commits only
queue). Relayed DISCOVER then REQUEST from `--clients` distinct MACs against an empty SQLite
lease store, best of `--repeat` runs, each on a fresh server. Run it with PYTHONPATH pointing at
another checkout's src/ to compare two versions of the code on the same interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import tempfile
import time
from pathlib import Path

from metalflow.boot.dhcp.codec import DhcpPacket, MessageType, OptionCode, decode, encode
from metalflow.boot.dhcp.leases import LeaseStore
from metalflow.boot.dhcp.network import AddressRange, NetworkConfig
from metalflow.boot.dhcp.policy import BootSettings
from metalflow.boot.dhcp.server import DhcpServer, InterfaceAddress
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.index.views import MachineIndex
from metalflow.recorder import BootEventRecorder

IPv4 = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network
RELAY = IPv4("198.18.0.2")


class NullSender:
    def __init__(self) -> None:
        self.last = b""

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int:
        self.last = data
        return len(data)


def packet(mac: int, message_type: int, *options: tuple[int, bytes]) -> bytes:
    return encode(
        DhcpPacket(
            op=1,
            htype=1,
            hlen=6,
            hops=1,
            xid=mac & 0xFFFFFFFF,
            secs=0,
            flags=0,
            ciaddr=IPv4(0),
            yiaddr=IPv4(0),
            siaddr=IPv4(0),
            giaddr=RELAY,
            chaddr=mac.to_bytes(6, "big") + bytes(10),
            sname=bytes(64),
            file=bytes(128),
            options={OptionCode.MESSAGE_TYPE: bytes((message_type,)), **dict(options)},
        )
    )


def one_run(clients: int, work: Path) -> float:
    db = Database(f"sqlite:///{work / 'db.sqlite'}")
    upgrade(db)
    network = NetworkConfig(
        subnet=ipaddress.IPv4Network("198.18.0.0/15"),
        server_ip=IPv4("198.18.0.1"),
        gateway=RELAY,
        pool=AddressRange(start=IPv4("198.18.1.0"), end=IPv4("198.19.255.250")),
    )
    index = MachineIndex()
    server = DhcpServer(
        interface=InterfaceAddress(
            "bench0", IPv4("192.0.2.1"), ipaddress.IPv4Network("192.0.2.0/24")
        ),
        networks=[network],
        boot=BootSettings(http_url="http://192.0.2.1:7080"),
        index=index,
        leases=LeaseStore(db, lambda address: index.by_ip(address) is not None),
        events=BootEventRecorder(db),
    )
    sender = NullSender()
    source = (str(RELAY), 67)
    discovers = [packet(0x525400000000 + n, MessageType.DISCOVER) for n in range(clients)]
    started = time.process_time()
    for n, data in enumerate(discovers):
        server.handle(data, source, sender, False)
        offer = decode(sender.last)
        request = packet(
            0x525400000000 + n,
            MessageType.REQUEST,
            (OptionCode.SERVER_ID, IPv4("198.18.0.1").packed),
            (OptionCode.REQUESTED_IP, offer.yiaddr.packed),
        )
        server.handle(request, source, sender, False)
    elapsed = time.process_time() - started
    assert server.replies["dhcp.offer"] == clients, server.dropped
    db.engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    async def run() -> list[float]:
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as work:
                times.append(one_run(args.clients, Path(work)))
        return times

    times = asyncio.run(run())
    best = min(times)
    print(
        f"{args.clients} DORAs: best {best * 1e6 / args.clients:.1f} µs CPU per DORA"
        f" (runs: {', '.join(f'{t * 1e6 / args.clients:.1f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
