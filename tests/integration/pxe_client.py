"""A hand-crafted PXE / relay DHCP client, run inside a lab namespace by the tests.

Packets are built and parsed with scapy (independently of metalflow's own codec) and sent over
a plain UDP socket bound to the interface. Prints one JSON object per reply received.

    python pxe_client.py discover --arch 7 [--vendor PXEClient:...] [--user-class iPXE]
    python pxe_client.py request --server 192.0.2.1 --port 4011 --arch 0
    python pxe_client.py relay --giaddr 192.0.2.9 --server 192.0.2.1
    python pxe_client.py fuzz --server 192.0.2.1 --count 20000
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import time
from typing import Any

from scapy.layers.dhcp import BOOTP, DHCP

MAGIC = b"c\x82Sc"


def mac_bytes(interface: str) -> bytes:
    with open(f"/sys/class/net/{interface}/address") as handle:
        return bytes.fromhex(handle.read().strip().replace(":", ""))


def build(args: argparse.Namespace, message: str, chaddr: bytes, **fields: Any) -> bytes:
    options: list[Any] = [("message-type", message)]
    if args.arch is not None:
        options.append((93, args.arch.to_bytes(2, "big")))
        options.append((94, b"\x01\x02\x01"))
        options.append((97, b"\x00" + bytes(range(16))))
    vendor = args.vendor
    if vendor is None and args.arch is not None:
        vendor = f"PXEClient:Arch:{args.arch:05d}:UNDI:002001"
    if vendor:
        options.append(("vendor_class_id", vendor.encode()))
    if args.user_class:
        options.append((77, args.user_class.encode()))
    if message == "request" and args.server_id:
        options.append(("server_id", args.server_id))
    if args.requested:
        options.append(("requested_addr", args.requested))
    options.append("end")
    packet = BOOTP(chaddr=chaddr + b"\x00" * 10, xid=args.xid, flags=0x8000, **fields) / DHCP(
        options=options
    )
    return bytes(packet)


def describe(data: bytes, source: tuple[str, int]) -> dict[str, Any]:
    reply = BOOTP(data)
    options: dict[str, Any] = {}
    for option in reply[DHCP].options if DHCP in reply else []:
        if isinstance(option, tuple):
            key, *values = option
            value = values[0] if len(values) == 1 else values
            if isinstance(value, bytes):
                text = value.decode("latin-1")
                value = text if text.isascii() and text.isprintable() else value.hex()
            options[str(key)] = value
    return {
        "source": list(source),
        "xid": reply.xid,
        "yiaddr": reply.yiaddr,
        "siaddr": reply.siaddr,
        "giaddr": reply.giaddr,
        "file": reply.file.rstrip(b"\x00").decode(errors="replace"),
        "options": options,
    }


def open_socket(interface: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", port))
    return sock


def collect(sock: socket.socket, xid: int, wait: float) -> list[dict[str, Any]]:
    replies = []
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data, source = sock.recvfrom(4096)
        except TimeoutError:
            break
        if len(data) > 240 and data[236:240] == MAGIC and int.from_bytes(data[4:8]) == xid:
            replies.append(describe(data, source))
    return replies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["discover", "request", "relay", "fuzz"])
    parser.add_argument("--interface", default="eth0")
    parser.add_argument("--arch", type=int)
    parser.add_argument("--vendor")
    parser.add_argument("--user-class")
    parser.add_argument("--server", default="255.255.255.255")
    parser.add_argument("--server-id")
    parser.add_argument("--requested")
    parser.add_argument("--port", type=int, default=67)
    parser.add_argument("--giaddr")
    parser.add_argument("--ciaddr")
    parser.add_argument("--xid", type=lambda text: int(text, 0), default=0x4D460001)
    parser.add_argument("--wait", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--mac")
    args = parser.parse_args()
    chaddr = bytes.fromhex(args.mac.replace(":", "")) if args.mac else mac_bytes(args.interface)
    if args.mode == "fuzz":
        fuzz(args, chaddr)
        return
    local_port = 67 if args.mode == "relay" else 68
    sock = open_socket(args.interface, local_port)
    fields: dict[str, Any] = {}
    if args.giaddr:
        fields["giaddr"] = args.giaddr
    if args.ciaddr:
        fields["ciaddr"] = args.ciaddr
    message = "request" if args.mode == "request" else "discover"
    sock.sendto(build(args, message, chaddr, **fields), (args.server, args.port))
    for reply in collect(sock, args.xid, args.wait):
        print(json.dumps(reply), flush=True)


def fuzz(args: argparse.Namespace, chaddr: bytes) -> None:
    """Random and mutated packets at the server, as fast as the socket takes them."""
    rng = random.Random(20261201)
    seeds = [
        build(args, "discover", chaddr),
        build(args, "request", chaddr),
        bytes(BOOTP(chaddr=chaddr) / DHCP(options=[("message-type", "inform"), "end"])),
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for index in range(args.count):
        if index % 4 == 0:
            data = rng.randbytes(rng.randrange(0, 600))
        else:
            mutable = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 8)):
                choice = rng.random()
                position = rng.randrange(len(mutable)) if mutable else 0
                if choice < 0.5 and mutable:
                    mutable[position] = rng.randrange(256)
                elif choice < 0.75:
                    del mutable[position:]
                else:
                    mutable[position:position] = rng.randbytes(rng.randrange(1, 40))
            data = bytes(mutable)
        try:
            sock.sendto(data, (args.server, args.port))
            sent += 1
        except OSError:
            time.sleep(0.001)
        if index % 500 == 0:
            time.sleep(0.002)
    print(json.dumps({"sent": sent}))


if __name__ == "__main__":
    main()
