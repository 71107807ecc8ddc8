"""ProxyDHCP (PXE spec 2.1 §2.5): boot fields only, beside the site's DHCP server."""

from __future__ import annotations

from ipaddress import IPv4Address

from metalflow.boot.dhcp.codec import MESSAGE_TYPE_NAMES, DhcpPacket, MessageType, OptionCode
from metalflow.boot.dhcp.network import DhcpMode, NetworkConfig
from metalflow.boot.dhcp.options import pxe_vendor_options
from metalflow.boot.dhcp.policy.bootfile import BootSettings, boot_fields, choose_bootfile
from metalflow.boot.dhcp.policy.clients import PXE_CLIENT, ClientInfo, boot_refusal, not_for_us
from metalflow.boot.dhcp.policy.reply import Decision, Ignore, finish, reply_to
from metalflow.index.views import MachineView


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
    refusal = not_for_us(request, network, DhcpMode.PROXY)
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
    refusal = boot_refusal(info, machine, settings.discovery)
    if refusal is not None:
        return refusal
    choice = choose_bootfile(info, settings, server_ip)
    file, boot_options = boot_fields(choice)
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
    return finish(
        request,
        packet,
        kind,
        bootfile=choice.filename,
        note=choice.note,
        source=source if on_port_4011 else None,
    )
