"""Who a DHCP client is, and every reason it is not answered or not given a boot file."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from metalflow.boot.dhcp.codec import MESSAGE_TYPE_NAMES, DhcpPacket, MessageType, OptionCode
from metalflow.boot.dhcp.network import DhcpMode, NetworkConfig
from metalflow.boot.dhcp.options import parse_client_machine_id
from metalflow.boot.dhcp.policy.reply import Ignore
from metalflow.boot.netboot import Netboot, eligibility
from metalflow.index.views import MachineView

PXE_CLIENT = "PXEClient"
HTTP_CLIENT = "HTTPClient"
IPXE_USER_CLASS = b"iPXE"


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


def not_ethernet(packet: DhcpPacket) -> str:
    return f"hardware type {packet.htype} with a {packet.hlen}-byte address is not Ethernet"


def classify(packet: DhcpPacket) -> ClientInfo:
    """Read who the client is and collect every failed netboot check (smee's IsNetbootClient)."""
    reasons = []
    if not packet.is_ethernet:
        reasons.append(not_ethernet(packet))
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


def not_for_us(request: DhcpPacket, network: NetworkConfig, mode: DhcpMode) -> Ignore | None:
    if request.op != 1:
        return Ignore(f"op {request.op} is not a BOOTREQUEST", "not_for_us")
    if network.mode is not mode:
        return Ignore(f"network {network.subnet} is in mode {network.mode}", "not_for_us")
    if not request.is_ethernet:
        return Ignore(not_ethernet(request), "unsupported_hardware")
    return None


BOOT_REFUSALS = {
    Netboot.UNKNOWN: "unknown machine and discovery is off",
    Netboot.PXE_DISABLED: "interface does not allow PXE",
    Netboot.NO_WORKFLOW: "no active workflow",
    Netboot.WORKFLOW_DISABLED: "workflows disabled for this interface (allowWorkflow: false)",
}
"""The note (or Ignore reason) for each refusal of `netboot.eligibility`."""


def boot_refusal(info: ClientInfo, machine: MachineView | None, discovery: bool) -> Ignore | None:
    """Why this client must not netboot now (the reason, and its metric label), or None."""
    if not info.is_netboot:
        return Ignore("not a PXE client: " + "; ".join(info.not_netboot_reasons), "not_netboot")
    netboot = eligibility(machine, info.mac, discovery)
    if netboot.boots:
        return None
    return Ignore(BOOT_REFUSALS[netboot], netboot.value)
