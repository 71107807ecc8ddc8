"""The ELF reader against synthetic files, random bytes and (when present) a real binary."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.installenv import elf
from tests.prerequisites import needs_tool
from tests.unit.installenv.elfbuild import make_elf

names = st.text(alphabet="abcdefgh_.", min_size=1, max_size=10).filter(lambda n: n != ".shstrtab")
sonames = st.lists(st.text(alphabet="abclibso.0123", min_size=1, max_size=12), max_size=5)


@given(st.dictionaries(names, st.binary(max_size=50), max_size=5))
def test_sections_are_found_by_name(sections: dict[str, bytes]) -> None:
    data = make_elf(sections)
    for name, content in sections.items():
        assert elf.section_data(data, name) == content
    assert elf.section_data(data, ".nothere") is None


@given(sonames)
def test_needed_lists_dt_needed_in_order(needed: list[str]) -> None:
    assert elf.needed(make_elf({}, needed)) == needed


def test_interpreter() -> None:
    data = make_elf({".interp": b"/lib64/ld-linux-x86-64.so.2\0"})
    assert elf.interpreter(data) == "/lib64/ld-linux-x86-64.so.2"
    assert elf.interpreter(make_elf({})) is None


@given(st.binary(max_size=300))
def test_garbage_raises_only_elf_error(data: bytes) -> None:
    with contextlib.suppress(elf.ElfError):
        elf.needed(data)


VALID = make_elf({".modinfo": b"name=x\0"}, ["libc.so.6"])


@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.binary(max_size=8))
def test_cut_or_corrupt_files_raise_only_elf_error(cut: int, junk: bytes) -> None:
    with contextlib.suppress(elf.ElfError):
        elf.needed(VALID[:cut])
    with contextlib.suppress(elf.ElfError):
        elf.needed(VALID[:cut] + junk + VALID[cut + len(junk) :])


def test_32_bit_files_are_refused() -> None:
    with pytest.raises(elf.ElfError, match="64-bit"):
        elf.sections(b"\x7fELF\x01\x01" + b"\0" * 60)


def test_needed_agrees_with_readelf() -> None:
    binary = Path(sys.executable).resolve()
    readelf = needs_tool("readelf", "binutils")
    out = subprocess.run([readelf, "-d", str(binary)], capture_output=True, text=True).stdout
    expected = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert elf.needed(binary.read_bytes()) == expected
