"""The DHCPv4 server: sockets, the lease store and events around the pure codec and policy.

One UDP socket on port 67 bound to the boot interface (SO_BINDTODEVICE, so broadcasts from that
link and unicasts from relays arrive, and broadcast replies leave by it), plus port 4011 in proxy
mode. Each datagram is answered synchronously from memory; only an ACK of a pool address waits,
for its lease's group commit. What to answer, and which pool address to look up for it, the
policy decides; the server only applies it.

The sockets are read with `loop.add_reader` rather than asyncio's datagram transport: the
transport reads one datagram per wakeup of the loop and queues what it cannot send at once,
while a burst of DHCP requests is best read in a batch and a reply the kernel cannot take is
best dropped (the client retransmits) than delivered late.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from metalflow.boot.dhcp.codec import (
    DhcpPacket,
    MalformedPacket,
    decode,
    encode,
)
from metalflow.boot.dhcp.leases import LeaseStore
from metalflow.boot.dhcp.network import DhcpMode, NetworkConfig
from metalflow.boot.dhcp.policy import (
    IP_UDP_HEADERS,
    BootSettings,
    Ignore,
    Release,
    Reply,
    answer_proxy,
    answer_reservation,
    classify,
    pool_lookup,
    select_network,
)
from metalflow.index.views import MachineIndex, MachineView
from metalflow.recorder import BootEventRecorder, RepeatFold

log = logging.getLogger("metalflow.boot.dhcp")
IPv4 = ipaddress.IPv4Address
PROXY_PORT = 4011
MAX_RELAYS_REMEMBERED = 4096
RECEIVE_BUFFER = 512 * 1024
"""Room for a burst (a rack powering on) but not for seconds of backlog: past capacity a
request that waited that long is one its client has already given up on."""
READ_BURST = 64
"""Datagrams answered per wakeup before the loop runs its other work (HTTP, TFTP, timers)."""
ETHERNET_MTU = 1500
JUMBO_MTU = 9000
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_SIOCGIFMTU = 0x8921


def datagram_limit(mtu: int) -> int:
    """The largest DHCP message accepted on a link of `mtu` bytes; a longer one is dropped.

    Clients and relays send requests that fit one frame of their link (option 57 only says how
    large a reply the client takes, RFC 2132 §9.10). Decoding costs time in proportion to the
    size: a 64 KiB datagram of one-byte options is ~20,000 turns of the option loop, tens of
    milliseconds of the event loop for anyone on the network to buy. Links below Ethernet's MTU
    still get Ethernet's bound (relayed messages cross other links), loopback's 64 KiB MTU a
    jumbo frame's.
    """
    return max(ETHERNET_MTU, min(mtu, JUMBO_MTU)) - IP_UDP_HEADERS


@dataclass(frozen=True)
class InterfaceAddress:
    name: str
    address: IPv4
    network: ipaddress.IPv4Network
    mtu: int = ETHERNET_MTU


def interface_address(name: str) -> InterfaceAddress:
    """The interface's primary IPv4 address, subnet and MTU (the ioctls `ifconfig` uses)."""
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)[20:24]
            netmask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)[20:24]
        except OSError as exc:
            raise OSError(f"interface {name!r} has no IPv4 address ({exc.strerror})") from exc
        (mtu,) = struct.unpack_from("i", fcntl.ioctl(sock.fileno(), _SIOCGIFMTU, request), 16)
    ip = IPv4(address)
    network = ipaddress.IPv4Network(f"{ip}/{IPv4(netmask)}", strict=False)
    return InterfaceAddress(name, ip, network, mtu)


class Sender(Protocol):
    """Where replies go out: the server's socket, or a test's stand-in."""

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int: ...


def open_socket(interface: str, host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class DhcpServer:
    """Answers on one interface for the networks it serves (its own, and relayed ones)."""

    def __init__(
        self,
        *,
        interface: InterfaceAddress,
        networks: Sequence[NetworkConfig],
        boot: BootSettings,
        index: MachineIndex,
        leases: LeaseStore,
        events: BootEventRecorder,
        port: int = 67,
    ) -> None:
        self.interface = interface
        self.networks = [
            net if net.server_ip else net.model_copy(update={"server_ip": interface.address})
            for net in networks
        ]
        self.boot = boot
        self.index = index
        self.leases = leases
        self.events = events
        self.port = port
        self.local_network = next(
            (net for net in self.networks if interface.address in net.subnet), None
        )
        self.max_datagram = datagram_limit(interface.mtu)
        self.dropped: collections.Counter[str] = collections.Counter()
        self.replies: collections.Counter[str] = collections.Counter()
        self._sockets: list[socket.socket] = []
        self._log_fold = RepeatFold()
        self._network_by_relay: dict[IPv4, NetworkConfig | None] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ports = [self.port]
        if any(net.mode is DhcpMode.PROXY for net in self.networks):
            ports.append(PROXY_PORT)
        for port in ports:
            sock = open_socket(self.interface.name, "0.0.0.0", port)
            self._sockets.append(sock)
            loop.add_reader(sock.fileno(), self._read_ready, sock, port == PROXY_PORT)
        log.info(
            "event=dhcp.listening interface=%s address=%s ports=%s networks=%s",
            self.interface.name,
            self.interface.address,
            ",".join(map(str, ports)),
            ",".join(f"{net.subnet}:{net.mode}" for net in self.networks),
        )

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def _read_ready(self, sock: socket.socket, on_proxy_port: bool) -> None:
        for _ in range(READ_BURST):
            try:
                # One byte more than accepted: a longer datagram arrives cut short (the kernel
                # drops the rest) but still too long, so handle() counts it without a 64 KiB copy.
                data, address = sock.recvfrom(self.max_datagram + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error for an earlier reply, reported on this socket
                log.debug("event=dhcp.socket_error error=%s", exc)
                continue
            try:
                self.handle(data, address, sock, on_proxy_port)
            except Exception:
                self.dropped["error"] += 1
                log.exception("event=dhcp.error source=%s", address)

    def _ignore(self, packet: DhcpPacket, counter: str, reason: str, now: float) -> None:
        self.dropped[counter] += 1
        repeated = self._log_fold.check((packet.mac, counter), now)
        if repeated is not None:
            log.info(
                "event=dhcp.ignored mac=%s xid=%#010x counter=%s reason=%s repeated=%d",
                packet.mac,
                packet.xid,
                counter,
                reason,
                repeated,
            )

    def _network_of(self, packet: DhcpPacket) -> NetworkConfig | None:
        """select_network, remembered per relay address (a handful in any site)."""
        giaddr = packet.giaddr
        if not int(giaddr):
            return self.local_network
        try:
            return self._network_by_relay[giaddr]
        except KeyError:
            pass
        if len(self._network_by_relay) >= MAX_RELAYS_REMEMBERED:
            self._network_by_relay.clear()
        network = select_network(self.networks, packet, self.local_network)
        self._network_by_relay[giaddr] = network
        return network

    def handle(
        self,
        data: bytes,
        source: tuple[str, int],
        sender: Sender,
        on_proxy_port: bool,
    ) -> None:
        """Answer one datagram, or drop it and count why; never raises for what a client sent."""
        if len(data) > self.max_datagram:
            self.dropped["oversized"] += 1
            log.debug(
                "event=dhcp.oversized source=%s:%d size=%d limit=%d",
                *source,
                len(data),
                self.max_datagram,
            )
            return
        try:
            packet = decode(data)
        except MalformedPacket as exc:
            self.dropped["malformed"] += 1
            log.debug("event=dhcp.malformed source=%s:%d reason=%s", *source, exc)
            return
        if packet.op != 1:
            self.dropped["not_request"] += 1
            return
        now = time.time()
        network = self._network_of(packet)
        if network is None:
            reason = f"no network configured for giaddr {packet.giaddr}"
            self._ignore(packet, "no_network", reason, now)
            return
        server_ip = network.server_ip or self.interface.address
        info = classify(packet)
        mac = info.mac
        machine = self.index.by_mac(mac)
        if network.mode is DhcpMode.PROXY:
            decision = answer_proxy(
                packet,
                info,
                network,
                server_ip,
                machine,
                self.boot,
                on_port_4011=on_proxy_port,
                source=source,
            )
        else:
            lookup = pool_lookup(packet, network, machine)
            if lookup == "candidate":
                pool_address = self.leases.candidate(network, mac, packet.requested_ip, now)
            elif lookup == "held":
                pool_address = self.leases.held_address(network, mac, now)
            else:
                pool_address = None
            decision = answer_reservation(
                packet, info, network, server_ip, machine, pool_address, self.boot
            )
        if isinstance(decision, Ignore):
            if decision.frees_offer:
                self.leases.forget_offer(mac)
            self._ignore(packet, decision.counter, decision.reason, now)
            if machine is not None:
                self.events.record("dhcp.ignored", machine, mac, mac=mac, reason=decision.reason)
            return
        if isinstance(decision, Release):
            if decision.declined:
                if self.leases.decline(decision.mac, decision.address, now):
                    self.replies["decline"] += 1
                    log.warning(
                        "event=dhcp.declined mac=%s address=%s reason=the client found the"
                        " address in use; it stays out of the pool for a while",
                        decision.mac,
                        decision.address,
                    )
            elif self.leases.release(decision.mac, decision.address):
                self.replies["release"] += 1
            return
        self._send(mac, decision, sender, machine, network, now)

    def _send(
        self,
        mac: str,
        reply: Reply,
        sender: Sender,
        machine: MachineView | None,
        network: NetworkConfig,
        now: float,
    ) -> None:
        wire = encode(reply.packet)
        if machine is not None:
            self.events.record(
                reply.kind,
                machine,
                mac,
                mac=mac,
                address=str(reply.address) if reply.address else None,
                bootfile=reply.bootfile,
                note=reply.note or None,
            )

        def send() -> None:
            try:
                sender.sendto(wire, reply.destination)
            except OSError as exc:  # the send buffer is full (BlockingIOError), or no route
                self.dropped["send_failed"] += 1
                repeated = self._log_fold.check((mac, "send_failed"), time.time())
                if repeated is not None:
                    log.info(
                        "event=dhcp.send_failed mac=%s to=%s error=%s repeated=%d",
                        mac,
                        reply.destination,
                        exc,
                        repeated,
                    )
                return
            self.replies[reply.kind] += 1

        lease = reply.lease
        if lease is not None:
            self.leases.commit(
                network, mac, lease.address, lease.lease_time, now, lease.hostname, send
            )
        else:
            send()
