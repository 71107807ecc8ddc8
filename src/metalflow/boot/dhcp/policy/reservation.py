"""Full DHCP (RFC 2131 §4.3): addresses from the inventory or the pool, with the boot fields."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Literal

from metalflow.boot.dhcp.codec import (
    MESSAGE_TYPE_NAMES,
    ZERO_ADDRESS,
    DhcpPacket,
    MessageType,
    OptionCode,
)
from metalflow.boot.dhcp.network import DhcpMode, NetworkConfig
from metalflow.boot.dhcp.options import ascii_text
from metalflow.boot.dhcp.policy.bootfile import BootSettings, boot_fields, choose_bootfile
from metalflow.boot.dhcp.policy.clients import ClientInfo, boot_refusal, not_for_us
from metalflow.boot.dhcp.policy.reply import (
    INFINITE_LEASE,
    Decision,
    Ignore,
    LeaseCommit,
    Release,
    config_options,
    finish,
    reply_to,
)
from metalflow.index.views import InterfaceView, MachineView

PoolLookup = Literal["candidate", "held"] | None


def own_interface(
    machine: MachineView | None, mac: str, network: NetworkConfig
) -> InterfaceView | None:
    """The machine's interface for `mac` when its address lies in this network."""
    iface = machine.interface(mac) if machine is not None else None
    if iface is None or iface.ip is None or iface.ip not in network.subnet:
        return None
    return iface


def pool_lookup(
    request: DhcpPacket, network: NetworkConfig, machine: MachineView | None
) -> PoolLookup:
    """Which pool address `answer_reservation` needs for this request, for the server to look up.

    "candidate": one to offer a DISCOVER, fresh if need be; "held": the one a REQUEST's client
    holds a lease or a live offer for; None: the pool has no say (no pool, or the machine's
    own address lies in this network).
    """
    if network.pool is None:
        return None
    if machine is not None and own_interface(machine, request.mac, network) is not None:
        return None
    message_type = request.message_type
    if message_type == MessageType.DISCOVER:
        return "candidate"
    if message_type == MessageType.REQUEST:
        return "held"
    return None


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
    return finish(request, nak, "dhcp.nak", note=message.decode())


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
    refusal = not_for_us(request, network, DhcpMode.RESERVATION)
    if refusal is not None:
        return refusal
    message_type = request.message_type
    if message_type == MessageType.RELEASE or message_type == MessageType.DECLINE:
        return _release(request, info, server_ip)
    mac = info.mac
    iface = own_interface(machine, mac, network)
    if message_type == MessageType.INFORM:
        # RFC 2131 §3.4: configuration only; the client already has its address.
        ciaddr = request.ciaddr if request.ciaddr != ZERO_ADDRESS else None
        options = config_options(network, server_ip, machine, iface, mac, ciaddr, None)
        packet = reply_to(request, MessageType.ACK, options=options)
        return finish(request, packet, "dhcp.inform", note="INFORM gets no boot file")
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
    options = config_options(network, server_ip, machine, iface, mac, address, lease_time)
    siaddr = ZERO_ADDRESS
    file = b""
    bootfile = None
    refusal = boot_refusal(info, machine, settings.discovery)
    if refusal is None:
        choice = choose_bootfile(info, settings, server_ip)
        file, boot_options = boot_fields(choice)
        options.extend(boot_options)
        siaddr, bootfile, note = choice.siaddr, choice.filename, choice.note
    else:
        note = refusal.reason
    reply_type = MessageType.OFFER if message_type == MessageType.DISCOVER else MessageType.ACK
    lease = None
    pool = network.pool
    if reply_type == MessageType.ACK and iface is None and pool is not None and address in pool:
        hostname = request.option(OptionCode.HOSTNAME)
        lease = LeaseCommit(
            address, lease_time, hostname.decode("ascii", "replace") if hostname else None
        )
    packet = reply_to(
        request, reply_type, yiaddr=address, siaddr=siaddr, file=file, options=options
    )
    kind = "dhcp.offer" if reply_type == MessageType.OFFER else "dhcp.ack"
    return finish(
        request,
        packet,
        kind,
        address=address,
        bootfile=bootfile,
        lease_time=lease_time,
        note=note,
        lease=lease,
    )
