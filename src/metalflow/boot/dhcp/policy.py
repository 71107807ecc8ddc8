"""What metalflow answers to a DHCP request, as a value: Reply, Ignore (with a reason) or Release.

Pure: no sockets, no clock, no database. `server.py` decodes, looks the MAC up in the in-memory
index, allocates pool addresses, then sends whatever these functions return. Two policies share
one shape: `answer_reservation` (full DHCP) and `answer_proxy` (ProxyDHCP, PXE spec 2.1 §2.5).
The values are slotted dataclasses, not frozen ones, for the reason `DhcpPacket` gives.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network

from metalflow.boot.dhcp.codec import (
    BROADCAST_FLAG,
    MESSAGE_TYPE_NAMES,
    ZERO_ADDRESS,
    DhcpPacket,
    MessageType,
    OptionCode,
    encoded_size,
)
from metalflow.boot.dhcp.network import DhcpMode, NetworkConfig
from metalflow.boot.dhcp.options import (
    ascii_text,
    classless_routes,
    ip_list,
    parse_client_machine_id,
    pxe_vendor_options,
    u32,
)
from metalflow.index.views import InterfaceView, MachineView

PXE_CLIENT = "PXEClient"
HTTP_CLIENT = "HTTPClient"
IPXE_USER_CLASS = b"iPXE"
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
_FILE_FIELD_MAX = 127
"""The file field is 128 bytes and NUL-terminated; longer names go in option 67."""
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


class Arch(IntEnum):
    """Option 93 client system architecture (RFC 4578 §2.1, IANA "Processor Architecture Types")."""

    X86_BIOS = 0
    NEC_PC98 = 1
    ITANIUM = 2
    DEC_ALPHA = 3
    ARC_X86 = 4
    INTEL_LEAN_CLIENT = 5
    X86_UEFI = 6
    X64_UEFI = 7
    XSCALE_EFI = 8
    EFI_X86_64 = 9
    """RFC 4578's name; IANA now lists 9 as EBC, but x64 firmware (old iPXE too) sends it."""
    ARM32_UEFI = 10
    ARM64_UEFI = 11
    PPC_OPEN_FIRMWARE = 12
    PPC_EPAPR = 13
    POWER_OPAL = 14
    X86_UEFI_HTTP = 15
    X64_UEFI_HTTP = 16
    EBC_HTTP = 17
    ARM32_UEFI_HTTP = 18
    ARM64_UEFI_HTTP = 19


_ARCHES = {member.value: member for member in Arch}


@dataclass(slots=True)
class ClientInfo:
    """What a request says about the client, and every reason it is not a netboot request."""

    mac: str
    arch: Arch | int | None
    client_type: str | None
    user_class: str | None
    is_ipxe: bool
    uuid: str | None
    not_netboot_reasons: tuple[str, ...]

    @property
    def is_netboot(self) -> bool:
        return not self.not_netboot_reasons


def _not_ethernet(packet: DhcpPacket) -> str:
    return f"hardware type {packet.htype} with a {packet.hlen}-byte address is not Ethernet"


def classify(packet: DhcpPacket) -> ClientInfo:
    """Read who the client is and collect every failed netboot check (smee's IsNetbootClient)."""
    reasons = []
    if not packet.is_ethernet:
        reasons.append(_not_ethernet(packet))
    message_type = packet.message_type
    if message_type is None:
        reasons.append("option 53 (message type) is missing or invalid")
    elif message_type != MessageType.DISCOVER and message_type != MessageType.REQUEST:
        name = MESSAGE_TYPE_NAMES[message_type]
        reasons.append(f"message type {name} is not DISCOVER or REQUEST")
    vendor_class = packet.vendor_class
    client_type = None
    if vendor_class is None:
        reasons.append("option 60 (vendor class) is missing")
    elif vendor_class.startswith(PXE_CLIENT):
        client_type = PXE_CLIENT
    elif vendor_class.startswith(HTTP_CLIENT):
        client_type = HTTP_CLIENT
    else:
        reasons.append(f"option 60 (vendor class) {vendor_class!r} is not PXEClient or HTTPClient")
    arches = packet.client_arches
    if not arches:
        reasons.append("option 93 (client architecture) is missing or malformed")
    if packet.option(OptionCode.CLIENT_NDI) is None:
        reasons.append("option 94 (client network interface) is missing")
    uuid = None
    machine_id = packet.option(OptionCode.CLIENT_MACHINE_ID)
    # A missing option 97 is accepted: real PXE ROMs omit it.
    if machine_id is not None:
        parsed = parse_client_machine_id(machine_id)
        if parsed is None:
            reasons.append(
                f"option 97 (client machine id) is {len(machine_id)} bytes,"
                " not 17 starting with type 0"
            )
        else:
            uuid = str(parsed)
    user_classes = packet.user_classes
    return ClientInfo(
        mac=packet.mac,
        arch=_ARCHES.get(arches[0], arches[0]) if arches else None,
        client_type=client_type,
        user_class=user_classes[0].decode("latin-1") if user_classes else None,
        is_ipxe=IPXE_USER_CLASS in user_classes or packet.ipxe_options is not None,
        uuid=uuid,
        not_netboot_reasons=tuple(reasons),
    )


@dataclass(frozen=True, slots=True)
class BootSettings:
    """Where the boot files are; the same for every network a server answers on."""

    http_url: str
    """metalflow's HTTP boot server, e.g. "http://192.0.2.1:7080"."""
    bios_file: str = "undionly.kpxe"
    uefi_x64_file: str = "ipxe.efi"
    uefi_arm64_file: str = "snp-arm64.efi"
    uefi_ia32_file: str = "ipxe-ia32.efi"
    http_boot_path: str = "/boot/assets"
    """UEFI HTTP clients fetch f"{http_url}{http_boot_path}/{file for their arch}"."""
    discovery: bool = False
    """Machines not in the inventory netboot too (into discovery)."""
    tftp_server: IPv4Address | None = None
    """siaddr for TFTP; default: the server's own address on that network."""


@dataclass(slots=True)
class BootChoice:
    filename: str
    siaddr: IPv4Address
    client_type: str | None
    """Option 60 the reply must carry, if any."""
    note: str = ""


def _binary_for(arch: Arch | int | None, settings: BootSettings) -> tuple[str, str]:
    """The iPXE build for `arch`, and a note when there is none and BIOS is the guess."""
    match arch:
        case Arch.X86_BIOS:
            return settings.bios_file, ""
        case Arch.X64_UEFI | Arch.EFI_X86_64 | Arch.X64_UEFI_HTTP:
            return settings.uefi_x64_file, ""
        case Arch.ARM64_UEFI | Arch.ARM64_UEFI_HTTP:
            return settings.uefi_arm64_file, ""
        case Arch.X86_UEFI | Arch.X86_UEFI_HTTP:
            return settings.uefi_ia32_file, ""
        case _:
            note = f"no iPXE binary for architecture {arch}; sent {settings.bios_file}"
            return settings.bios_file, note


def choose_bootfile(info: ClientInfo, settings: BootSettings, server_ip: IPv4Address) -> BootChoice:
    """The one file this client should load next."""
    siaddr = settings.tftp_server or server_ip
    base_url = settings.http_url.rstrip("/")
    # Order matters: a client already running iPXE gets its script, which breaks the loop of
    # iPXE chainloading iPXE; an HTTPClient can only fetch http:// URLs; everyone else TFTPs.
    if info.is_ipxe:
        return BootChoice(f"{base_url}/boot/{info.mac}.ipxe", siaddr, None)
    binary, note = _binary_for(info.arch, settings)
    if info.client_type == HTTP_CLIENT:
        url = f"{base_url}{settings.http_boot_path}/{binary}"
        return BootChoice(url, siaddr, HTTP_CLIENT, note)
    return BootChoice(binary, siaddr, None, note)


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


@dataclass(slots=True)
class Ignore:
    """Send nothing; `counter` is a short metric label, `reason` says why for the log."""

    reason: str
    counter: str


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


def _finish(
    request: DhcpPacket,
    packet: DhcpPacket,
    kind: str,
    *,
    address: IPv4Address | None = None,
    bootfile: str | None = None,
    lease_time: int | None = None,
    note: str = "",
    source: tuple[str, int] | None = None,
) -> Decision:
    limit = max(request.max_message_size or 0, MIN_MESSAGE_SIZE) - IP_UDP_HEADERS
    if encoded_size(packet.options) > limit:
        fitted = _fit(request, packet, limit)
        if fitted is None:
            return Ignore(f"{kind} does not fit in the client's {limit} bytes", "too_large")
        packet = fitted
    destination = reply_destination(request, packet, source)
    return Reply(packet, destination, kind, address, bootfile, lease_time, note)


def _not_for_us(request: DhcpPacket, network: NetworkConfig, mode: DhcpMode) -> Ignore | None:
    if request.op != 1:
        return Ignore(f"op {request.op} is not a BOOTREQUEST", "not_for_us")
    if network.mode is not mode:
        return Ignore(f"network {network.subnet} is in mode {network.mode}", "not_for_us")
    if not request.is_ethernet:
        return Ignore(_not_ethernet(request), "unsupported_hardware")
    return None


def _boot_refusal(
    info: ClientInfo, machine: MachineView | None, settings: BootSettings
) -> Ignore | None:
    """Why this client must not netboot now (the reason, and its metric label), or None."""
    if not info.is_netboot:
        return Ignore("not a PXE client: " + "; ".join(info.not_netboot_reasons), "not_netboot")
    if machine is None:
        if settings.discovery:
            return None
        return Ignore("unknown machine and discovery is off", "unknown_client")
    if machine.wants_netboot(info.mac):
        return None
    iface = machine.interface(info.mac)
    if iface is None or not iface.allow_pxe:
        return Ignore("interface does not allow PXE", "pxe_disabled")
    return Ignore("no active workflow", "no_workflow")


def _boot_fields(choice: BootChoice) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The file field, or option 67 when the name does not fit it (RFC 2132 §9.5)."""
    encoded = choice.filename.encode()
    options: list[tuple[int, bytes]] = []
    if choice.client_type is not None:
        options.append((OptionCode.VENDOR_CLASS, choice.client_type.encode()))
    if len(encoded) <= _FILE_FIELD_MAX:
        return encoded, options
    options.append((OptionCode.BOOTFILE_NAME, encoded))
    return b"", options


def _own_interface(
    machine: MachineView | None, mac: str, network: NetworkConfig
) -> InterfaceView | None:
    """The machine's interface for `mac` when its address lies in this network."""
    iface = machine.interface(mac) if machine is not None else None
    if iface is None or iface.ip is None or iface.ip not in network.subnet:
        return None
    return iface


def _config_options(
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


def _release(request: DhcpPacket, info: ClientInfo, server_ip: IPv4Address) -> Decision:
    server_id = request.server_id
    if server_id is not None and server_id != server_ip:
        return Ignore(f"addressed to server {server_id}", "other_server")
    declined = request.message_type == MessageType.DECLINE
    address = request.requested_ip if declined else request.ciaddr
    if address is None or address == ZERO_ADDRESS:
        field = "option 50" if declined else "ciaddr"
        return Ignore(
            f"{'DECLINE' if declined else 'RELEASE'} without {field}", "unsupported_message"
        )
    return Release(info.mac, address, declined)


def _check_request(
    request: DhcpPacket, server_ip: IPv4Address, mac: str, address: IPv4Address | None
) -> Decision | None:
    """A NAK or Ignore for a REQUEST that must not be ACKed, or None (RFC 2131 §4.3.2).

    The client's state decides where it names the address. `address` is the one known for
    it here, or None; a client we know nothing about gets silence, never a NAK, except when
    SELECTING, which the caller reports as "no_address".
    """
    if request.server_id is not None:  # SELECTING
        claimed = request.requested_ip
        if claimed is None:
            return Ignore(
                "SELECTING REQUEST without option 50 (requested IP address)",
                "unsupported_message",
            )
        if address is None:
            return None
    elif request.ciaddr == ZERO_ADDRESS:  # INIT-REBOOT
        claimed = request.requested_ip
        if claimed is None:
            return Ignore("REQUEST without option 54, 50 or ciaddr", "unsupported_message")
        if address is None:
            return Ignore(f"INIT-REBOOT for {claimed} from {mac}, unknown here", "unknown_client")
    else:  # RENEWING or REBINDING
        claimed = request.ciaddr
        if address is None:
            return Ignore(f"renewal of {claimed} from {mac}, unknown here", "unknown_client")
    if claimed == address:
        return None
    message = ascii_text(f"{claimed} is not this client's address") or b""
    nak_options = [(OptionCode.SERVER_ID, server_ip.packed), (OptionCode.MESSAGE, message)]
    nak = reply_to(request, MessageType.NAK, options=nak_options)
    return _finish(request, nak, "dhcp.nak", note=message.decode())


def answer_reservation(
    request: DhcpPacket,
    info: ClientInfo,
    network: NetworkConfig,
    server_ip: IPv4Address,
    machine: MachineView | None,
    pool_address: IPv4Address | None,
    settings: BootSettings,
) -> Decision:
    """Full DHCP (RFC 2131 §4.3): the machine's address on this network, else `pool_address`.

    `pool_address` matters only for clients without an inventory address here. For a
    DISCOVER the caller passes a candidate to offer, freshly allocated from the pool if need
    be; for a REQUEST only the address the client holds a lease or a live offer for, never a
    fresh one. A REQUEST from a client with no address known here is ignored, not NAKed
    (RFC 2131 §4.3.2), so servers that do not share state can coexist on one link. An Ignore
    with counter "other_server" means the client chose another server, so an address offered
    to it can be freed.
    """
    refusal = _not_for_us(request, network, DhcpMode.RESERVATION)
    if refusal is not None:
        return refusal
    message_type = request.message_type
    if message_type == MessageType.RELEASE or message_type == MessageType.DECLINE:
        return _release(request, info, server_ip)
    mac = info.mac
    iface = _own_interface(machine, mac, network)
    if message_type == MessageType.INFORM:
        # RFC 2131 §3.4: configuration only; the client already has its address.
        ciaddr = request.ciaddr if request.ciaddr != ZERO_ADDRESS else None
        options = _config_options(network, server_ip, machine, iface, mac, ciaddr, None)
        packet = reply_to(request, MessageType.ACK, options=options)
        return _finish(request, packet, "dhcp.inform", note="INFORM gets no boot file")
    if message_type != MessageType.DISCOVER and message_type != MessageType.REQUEST:
        name = MESSAGE_TYPE_NAMES[message_type] if message_type is not None else "none (BOOTP)"
        return Ignore(f"message type {name}", "unsupported_message")
    server_id = request.server_id
    if message_type == MessageType.REQUEST and server_id is not None and server_id != server_ip:
        return Ignore(f"client chose server {server_id}", "other_server")
    address = iface.ip if iface is not None else pool_address
    if message_type == MessageType.REQUEST:
        checked = _check_request(request, server_ip, mac, address)
        if checked is not None:
            return checked
    if address is None:
        return Ignore(f"no address for {mac} in {network.subnet}", "no_address")
    # The inventory and NetworkConfig cap lease_time at 2**32-1; min() keeps any larger value
    # from older data encodable. 0xFFFFFFFF means infinite (RFC 2132 §9.2).
    lease_time = min((iface.lease_time if iface else None) or network.lease_time, INFINITE_LEASE)
    options = _config_options(network, server_ip, machine, iface, mac, address, lease_time)
    siaddr = ZERO_ADDRESS
    file = b""
    bootfile = None
    refusal = _boot_refusal(info, machine, settings)
    if refusal is None:
        choice = choose_bootfile(info, settings, server_ip)
        file, boot_options = _boot_fields(choice)
        options.extend(boot_options)
        siaddr, bootfile, note = choice.siaddr, choice.filename, choice.note
    else:
        note = refusal.reason
    reply_type = MessageType.OFFER if message_type == MessageType.DISCOVER else MessageType.ACK
    packet = reply_to(
        request, reply_type, yiaddr=address, siaddr=siaddr, file=file, options=options
    )
    kind = "dhcp.offer" if reply_type == MessageType.OFFER else "dhcp.ack"
    return _finish(
        request,
        packet,
        kind,
        address=address,
        bootfile=bootfile,
        lease_time=lease_time,
        note=note,
    )


def answer_proxy(
    request: DhcpPacket,
    info: ClientInfo,
    network: NetworkConfig,
    server_ip: IPv4Address,
    machine: MachineView | None,
    settings: BootSettings,
    *,
    on_port_4011: bool,
    source: tuple[str, int],
) -> Decision:
    """ProxyDHCP (PXE spec 2.1 §2.5): boot fields only, beside the site's DHCP server.

    A DISCOVER on port 67 gets a proxy OFFER; the boot server REQUEST that follows on port
    4011 gets a proxy ACK sent back to where it came from. Never an address.
    """
    refusal = _not_for_us(request, network, DhcpMode.PROXY)
    if refusal is not None:
        return refusal
    message_type = request.message_type
    if message_type == MessageType.DISCOVER and on_port_4011:
        return Ignore("DISCOVER on port 4011", "unsupported_message")
    if message_type != MessageType.DISCOVER and message_type != MessageType.REQUEST:
        name = MESSAGE_TYPE_NAMES[message_type] if message_type is not None else "none (BOOTP)"
        return Ignore(f"message type {name} in proxy mode", "unsupported_message")
    if message_type == MessageType.REQUEST and not on_port_4011 and request.server_id != server_ip:
        return Ignore("REQUEST on port 67 for the site's DHCP server", "not_for_us")
    refusal = _boot_refusal(info, machine, settings)
    if refusal is not None:
        return refusal
    choice = choose_bootfile(info, settings, server_ip)
    file, boot_options = _boot_fields(choice)
    options: list[tuple[int, bytes]] = [(OptionCode.SERVER_ID, server_ip.packed)]
    if choice.client_type is None and info.client_type is not None:
        options.append((OptionCode.VENDOR_CLASS, info.client_type.encode()))
    options.extend(boot_options)
    if info.client_type == PXE_CLIENT:
        options.append((OptionCode.VENDOR_SPECIFIC, pxe_vendor_options()))
    machine_id = request.option(OptionCode.CLIENT_MACHINE_ID)
    if machine_id is not None:
        options.append((OptionCode.CLIENT_MACHINE_ID, machine_id))
    if message_type == MessageType.DISCOVER:
        reply_type, kind = MessageType.OFFER, "dhcp.proxy_offer"
    else:
        reply_type, kind = MessageType.ACK, "dhcp.proxy_ack"
    packet = reply_to(request, reply_type, siaddr=choice.siaddr, file=file, options=options)
    return _finish(
        request,
        packet,
        kind,
        bootfile=choice.filename,
        note=choice.note,
        source=source if on_port_4011 else None,
    )
