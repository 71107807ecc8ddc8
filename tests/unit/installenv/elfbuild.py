"""A minimal ELF64 little-endian writer for tests: named sections and a dynamic section."""

from __future__ import annotations

import struct

SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_DYNAMIC = 6


def make_elf(sections: dict[str, bytes], needed: list[str] | None = None) -> bytes:
    """An ELF file holding `sections`, plus .dynamic/.dynstr listing `needed` when given."""
    named: list[tuple[str, int, bytes, int]] = [
        (name, SHT_PROGBITS, data, 0) for name, data in sections.items()
    ]
    if needed is not None:
        dynstr = b"\0"
        entries = b""
        for soname in needed:
            entries += struct.pack("<qQ", 1, len(dynstr))
            dynstr += soname.encode() + b"\0"
        entries += struct.pack("<qQ", 0, 0)
        named.append((".dynstr", SHT_STRTAB, dynstr, 0))
        named.append((".dynamic", SHT_DYNAMIC, entries, len(named) - 1))  # link: .dynstr
    names = b"\0"
    name_offsets = []
    for name, *_ in named:
        name_offsets.append(len(names))
        names += name.encode() + b"\0"
    name_offsets.append(len(names))
    names += b".shstrtab\0"
    named.append((".shstrtab", SHT_STRTAB, names, 0))

    body = b""
    offsets = []
    for _, _, data, _ in named:
        offsets.append(64 + len(body))
        body += data
    shoff = 64 + len(body)
    # Section 0 is the null section, so indices shift by one.
    table = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    for index, (_, type_, data, link) in enumerate(named):
        link_index = link + 1 if type_ == SHT_DYNAMIC else 0
        table += struct.pack(
            "<IIQQQQIIQQ",
            name_offsets[index],
            type_,
            0,
            0,
            offsets[index],
            len(data),
            link_index,
            0,
            1,
            0,
        )
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(named) + 1, len(named)
    )
    return header + body + table
