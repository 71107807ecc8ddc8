"""Reads the two things the builder needs from ELF files: a section's bytes and DT_NEEDED.

Looked at: `pyelftools` 0.33 (PyPI, pure Python, a 200 KB wheel) reads both, but it would be a new
dependency of the server for about 60 lines of `struct` here; `readelf` (binutils) is not on
every build host. Only 64-bit
little-endian files are read: x86_64 and arm64, the architectures metalflow boots.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
SHT_DYNAMIC = 6
DT_NULL = 0
ELF_HEADER_SIZE = 64
DT_NEEDED = 1


class ElfError(ValueError):
    """Not an ELF file this reader understands (or a truncated one)."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


def sections(data: bytes) -> list[Section]:
    if len(data) < ELF_HEADER_SIZE or data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file")
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise ElfError("only 64-bit little-endian ELF files are supported")
    try:
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [
            struct.unpack_from("<IIQQQQIIQQ", data, shoff + index * shentsize)
            for index in range(shnum)
        ]
        if not raw:
            return []
        names_offset = raw[shstrndx][4]
        result = []
        for name, type_, _flags, _addr, offset, size, link, *_ in raw:
            start = names_offset + name
            label = data[start : data.index(b"\0", start)].decode("ascii", "replace")
            result.append(Section(label, type_, offset, size, link))
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise ElfError(f"truncated or corrupt ELF section table: {exc}") from None
    return result


def section_data(data: bytes, name: str) -> bytes | None:
    """The bytes of the named section, or None if the file has none."""
    for section in sections(data):
        if section.name == name:
            return data[section.offset : section.offset + section.size]
    return None


def needed(data: bytes) -> list[str]:
    """The sonames the dynamic linker loads for this file (DT_NEEDED), in file order."""
    table = sections(data)
    result: list[str] = []
    try:
        for section in table:
            if section.type != SHT_DYNAMIC:
                continue
            strtab = table[section.link]
            for index in range(section.size // 16):
                tag, value = struct.unpack_from("<qQ", data, section.offset + index * 16)
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    start = strtab.offset + value
                    result.append(data[start : data.index(b"\0", start)].decode())
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise ElfError(f"truncated or corrupt ELF dynamic section: {exc}") from None
    return result


def interpreter(data: bytes) -> str | None:
    """The program interpreter (PT_INTERP) of an executable, e.g. /lib64/ld-linux-x86-64.so.2."""
    raw = section_data(data, ".interp")
    return raw.rstrip(b"\0").decode() if raw else None
