"""A small newc reader for tests, independent of the writer: checks magic, padding, trailer."""

from __future__ import annotations

from typing import NamedTuple


class Member(NamedTuple):
    ino: int
    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    data: bytes
    rdev: tuple[int, int]


def read_newc(data: bytes) -> list[Member]:
    """Parse a newc archive into members (up to the trailer)."""
    members: list[Member] = []
    offset = 0
    while True:
        assert offset % 4 == 0
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + i * 8 : offset + 14 + i * 8], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, check = fields
        assert check == 0
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        assert data[name_start + namesize - 1] == 0
        body = name_start + namesize + (-(110 + namesize) % 4)
        content = data[body : body + size]
        offset = body + size + (-size % 4)
        if name == "TRAILER!!!":
            assert offset == len(data)
            return members
        members.append(Member(ino, name, mode, uid, gid, nlink, mtime, content, (rmaj, rmin)))
