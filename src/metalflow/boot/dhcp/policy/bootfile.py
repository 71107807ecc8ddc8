"""Which file a netbooting client loads next, and where in the reply its name goes."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from metalflow.boot.dhcp.codec import OptionCode
from metalflow.boot.dhcp.policy.clients import HTTP_CLIENT, Arch, ClientInfo

_FILE_FIELD_MAX = 127
"""The file field is 128 bytes and NUL-terminated; longer names go in option 67."""


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


def boot_fields(choice: BootChoice) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The file field, or option 67 when the name does not fit it (RFC 2132 §9.5)."""
    encoded = choice.filename.encode()
    options: list[tuple[int, bytes]] = []
    if choice.client_type is not None:
        options.append((OptionCode.VENDOR_CLASS, choice.client_type.encode()))
    if len(encoded) <= _FILE_FIELD_MAX:
        return encoded, options
    options.append((OptionCode.BOOTFILE_NAME, encoded))
    return b"", options
