"""Reply values and how they are built: header fields, options, size limit and destination."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from metalflow.boot.dhcp.codec import (
    BROADCAST_FLAG,
    ZERO_ADDRESS,
    DhcpPacket,
    MessageType,
    OptionCode,
    encoded_size,
)
from metalflow.boot.dhcp.network import NetworkConfig
from metalflow.boot.dhcp.options import ascii_text, classless_routes, ip_list, u32
from metalflow.index.views import InterfaceView, MachineView

SERVER_PORT = 67
CLIENT_PORT = 68
BROADCAST = ("255.255.255.255", CLIENT_PORT)
MIN_MESSAGE_SIZE = 576
"""Every client accepts a 576-byte IP datagram (RFC 2131 §2, RFC 2132 §9.10)."""
IP_UDP_HEADERS = 28
"""Taken off option 57 as well: clients disagree on whether it counts IP and UDP headers."""
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
INFINITE_LEASE = 0xFFFFFFFF
_EMPTY_SNAME = bytes(64)
_MUST_KEEP = frozenset(
    (
        OptionCode.MESSAGE_TYPE,
        OptionCode.SERVER_ID,
        OptionCode.LEASE_TIME,
        OptionCode.MESSAGE,
        OptionCode.VENDOR_CLASS,
        OptionCode.VENDOR_SPECIFIC,
        OptionCode.CLIENT_MACHINE_ID,
        OptionCode.BOOTFILE_NAME,
        OptionCode.CLIENT_ID,
        OptionCode.RELAY_AGENT_INFO,
    )
)
"""Options never dropped to fit the client's maximum size: without them the reply is useless."""


@dataclass(slots=True)
class LeaseCommit:
    """A pool address the lease store must hold durably before the ACK goes out."""

    address: IPv4Address
    lease_time: int
    hostname: str | None


@dataclass(slots=True)
class Reply:
    """Send `packet` to `destination`; the other fields say what it is, for events and metrics."""

    packet: DhcpPacket
    destination: tuple[str, int]
    kind: str
    address: IPv4Address | None
    bootfile: str | None
    lease_time: int | None
    note: str = ""
    """Why there is no boot file, or what was unusual about the one sent."""
    lease: LeaseCommit | None = field(default=None, compare=False)
    """Set for an ACK of a pool address: commit it, then send."""


@dataclass(slots=True)
class Ignore:
    """Send nothing; `counter` is a short metric label, `reason` says why for the log."""

    reason: str
    counter: str

    @property
    def frees_offer(self) -> bool:
        """The client chose another server: an address offered to it can be freed."""
        return self.counter == "other_server"


@dataclass(slots=True)
class Release:
    """The client gave the address back (RELEASE) or found it in use (DECLINE)."""

    mac: str
    address: IPv4Address
    declined: bool


Decision = Reply | Ignore | Release


def select_network(
    networks: Sequence[NetworkConfig], packet: DhcpPacket, local_network: NetworkConfig | None
) -> NetworkConfig | None:
    """A relayed request belongs to the network holding its giaddr; others to the local link."""
    if packet.giaddr == ZERO_ADDRESS:
        return local_network
    giaddr = packet.giaddr
    return next((network for network in networks if giaddr in network.subnet), None)


def reply_destination(
    request: DhcpPacket, reply: DhcpPacket, source: tuple[str, int] | None = None
) -> tuple[str, int]:
    """Where a reply goes (RFC 2131 §4.1).

    `source` is given only for a PXE boot server request on port 4011: that client has an
    address and waits where it sent from. An unconfigured client gets a broadcast; the server
    sends from a broadcast-capable socket, never a raw unicast to an address nobody holds yet.
    """
    if request.giaddr != ZERO_ADDRESS:
        return (_dotted(request.giaddr), SERVER_PORT)
    if source is not None:
        host = _dotted(request.ciaddr) if request.ciaddr != ZERO_ADDRESS else source[0]
        return (host, source[1])
    if request.ciaddr != ZERO_ADDRESS and reply.message_type != MessageType.NAK:
        return (_dotted(request.ciaddr), CLIENT_PORT)
    return BROADCAST


@functools.lru_cache(maxsize=4096)
def _dotted(address: IPv4Address) -> str:
    """str(address), remembered: a server sends to a few relays and many renewing clients, and
    formatting an address costs more than the rest of choosing the destination."""
    return str(address)


def reply_to(
    request: DhcpPacket,
    message_type: int,
    *,
    yiaddr: IPv4Address = ZERO_ADDRESS,
    siaddr: IPv4Address = ZERO_ADDRESS,
    file: bytes = b"",
    options: Iterable[tuple[int, bytes]] = (),
) -> DhcpPacket:
    """A reply to `request`: its xid, chaddr, flags and giaddr, option 53 first, 61 and 82 echoed.

    RFC 6842 §3 wants the client identifier back; RFC 3046 §2.2 the relay agent information,
    with giaddr 0 too: a snooping switch adds option 82 without relaying, and strips it again.
    """
    reply_options = {OptionCode.MESSAGE_TYPE: bytes((message_type,))}
    reply_options.update(options)
    client_id = request.options.get(OptionCode.CLIENT_ID)
    if client_id is not None:
        reply_options[OptionCode.CLIENT_ID] = client_id
    relay_info = request.options.get(OptionCode.RELAY_AGENT_INFO)
    if relay_info is not None:
        reply_options[OptionCode.RELAY_AGENT_INFO] = relay_info
    flags = request.flags
    if message_type == MessageType.NAK and request.giaddr != ZERO_ADDRESS:
        flags |= BROADCAST_FLAG  # RFC 2131 §4.3.2: the relay broadcasts a NAK
    return DhcpPacket(
        op=2,
        htype=request.htype,
        hlen=request.hlen,
        hops=0,
        xid=request.xid,
        secs=0,
        flags=flags,
        ciaddr=request.ciaddr if message_type == MessageType.ACK else ZERO_ADDRESS,
        yiaddr=yiaddr,
        siaddr=siaddr,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        sname=_EMPTY_SNAME,
        file=file.ljust(128, b"\0"),
        options=reply_options,
    )


def _fit(request: DhcpPacket, packet: DhcpPacket, limit: int) -> DhcpPacket | None:
    """Drop options until the reply fits in `limit` bytes; unrequested ones go first."""
    options = dict(packet.options)
    requested = set(request.parameter_request_list)
    for spare_requested in (True, False):
        for code in reversed(list(options)):
            if code in _MUST_KEEP or (spare_requested and code in requested):
                continue
            del options[code]
            if encoded_size(options) <= limit:
                return dataclasses.replace(packet, options=options)
    return None


def finish(
    request: DhcpPacket,
    packet: DhcpPacket,
    kind: str,
    *,
    address: IPv4Address | None = None,
    bootfile: str | None = None,
    lease_time: int | None = None,
    note: str = "",
    source: tuple[str, int] | None = None,
    lease: LeaseCommit | None = None,
) -> Decision:
    limit = max(request.max_message_size or 0, MIN_MESSAGE_SIZE) - IP_UDP_HEADERS
    if encoded_size(packet.options) > limit:
        fitted = _fit(request, packet, limit)
        if fitted is None:
            return Ignore(f"{kind} does not fit in the client's {limit} bytes", "too_large")
        packet = fitted
    destination = reply_destination(request, packet, source)
    return Reply(packet, destination, kind, address, bootfile, lease_time, note, lease)


def config_options(
    network: NetworkConfig,
    server_ip: IPv4Address,
    machine: MachineView | None,
    iface: InterfaceView | None,
    mac: str,
    address: IPv4Address | None,
    lease_time: int | None,
) -> list[tuple[int, bytes]]:
    """Option 54, the lease, then the network settings, each only when set.

    The interface's own settings win when the address given is the interface's. An infinite
    lease has no T1 or T2: the client never renews it (RFC 2131 §4.4.5).
    """
    options: list[tuple[int, bytes]] = [(OptionCode.SERVER_ID, server_ip.packed)]
    if lease_time is not None:
        options.extend(_lease_options(lease_time))
    netmask = (iface.netmask if iface else None) or network.netmask
    options.append((OptionCode.SUBNET_MASK, netmask.packed))
    if address is not None:
        broadcast = int(address) | (~int(netmask) & 0xFFFFFFFF)
        options.append((OptionCode.BROADCAST_ADDRESS, broadcast.to_bytes(4, "big")))
    if machine is None and iface is None:
        cached = _NETWORK_OPTIONS.get(id(network))
        if cached is None or cached[0] is not network:
            if len(_NETWORK_OPTIONS) >= MAX_NETWORKS_CACHED:
                _NETWORK_OPTIONS.clear()
            cached = (network, tuple(_settings_options(network, None, None)))
            _NETWORK_OPTIONS[id(network)] = cached
        options.extend(cached[1])
    else:
        hostname = machine.host_name(mac) if machine is not None else None
        options.extend(_settings_options(network, iface, hostname))
    return options


@functools.lru_cache(maxsize=256)
def _lease_options(lease_time: int) -> tuple[tuple[int, bytes], ...]:
    """Options 51, 58 and 59: a handful of lease times serve a whole site."""
    if lease_time == INFINITE_LEASE:
        return ((OptionCode.LEASE_TIME, u32(lease_time)),)
    return (
        (OptionCode.LEASE_TIME, u32(lease_time)),
        (OptionCode.RENEWAL_TIME, u32(lease_time // 2)),
        (OptionCode.REBINDING_TIME, u32(lease_time * 7 // 8)),
    )


_NETWORK_OPTIONS: dict[int, tuple[NetworkConfig, tuple[tuple[int, bytes], ...]]] = {}
"""The settings options of a network for clients it knows nothing else about (pool clients),
encoded once: networks are immutable, and this is most of a pool reply's options. Keyed by
identity (hashing a NetworkConfig hashes every field), the entry holding the network itself."""
MAX_NETWORKS_CACHED = 1024


def _settings_options(
    network: NetworkConfig, iface: InterfaceView | None, hostname: str | None
) -> list[tuple[int, bytes]]:
    """Router, DNS, hostname, domain, NTP and routes, each only when set."""
    options: list[tuple[int, bytes]] = []
    router = (iface.gateway if iface else None) or network.gateway
    if router is not None:
        options.append((OptionCode.ROUTER, router.packed))
    nameservers = (iface.nameservers if iface else ()) or network.nameservers
    if nameservers:
        options.append((OptionCode.DNS_SERVERS, ip_list(nameservers)))
    encoded_hostname = ascii_text(hostname) if hostname else None
    if encoded_hostname:
        options.append((OptionCode.HOSTNAME, encoded_hostname))
    domain = ascii_text(network.domain) if network.domain else None
    if domain:
        options.append((OptionCode.DOMAIN_NAME, domain))
    if network.ntp_servers:
        options.append((OptionCode.NTP_SERVERS, ip_list(network.ntp_servers)))
    if network.routes:
        routes = [(route.destination, route.gateway) for route in network.routes]
        # RFC 3442: a client given option 121 ignores option 3, so the default goes in too.
        if router is not None and all(route.destination.prefixlen for route in network.routes):
            routes.append((DEFAULT_ROUTE, router))
        options.append((OptionCode.CLASSLESS_ROUTES, classless_routes(routes)))
    return options
