"""The one tree of boot files that TFTP and `/boot/assets/` both serve."""

from __future__ import annotations

from metalflow.boot.tftp.tree import VirtualTree
from metalflow.config import Settings

IPXE_BINARIES = ("undionly.kpxe", "undionly.kkpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi")
"""What Debian's ipxe package ships in /usr/lib/ipxe and firmware asks for by name."""


def boot_tree(settings: Settings) -> VirtualTree:
    """The iPXE binaries (with the configured boot file names) and `--boot-dir`'s files.

    The configured names (`--bios-file` ...) resolve in the boot dir first, so an operator can
    drop in an own build, then among the iPXE binaries."""
    names = {*IPXE_BINARIES, settings.bios_file, settings.uefi_file, settings.arm64_file}
    files = {
        name: settings.ipxe_dir / name
        for name in sorted(names)
        if (settings.ipxe_dir / name).is_file()
        and not (settings.boot_dir is not None and (settings.boot_dir / name).is_file())
    }
    directories = {"": settings.boot_dir} if settings.boot_dir is not None else {}
    return VirtualTree(files=files, directories=directories)
