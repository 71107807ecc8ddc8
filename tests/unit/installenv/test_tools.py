"""Where each action tool is found in its unpacked package, and how the selftest runs it."""

from __future__ import annotations

from pathlib import PurePosixPath

from metalflow.installenv.tools import TOOLS, Tool, locate, selftest_commands


def test_locate_takes_the_first_directory_that_has_it() -> None:
    tool = Tool("e2fsprogs", "mke2fs")
    present = {PurePosixPath("sbin/mke2fs"), PurePosixPath("usr/bin/mke2fs")}
    assert locate(tool, present.__contains__) == PurePosixPath("sbin/mke2fs")
    assert locate(tool, lambda _path: False) is None


def test_every_tool_the_disk_actions_call_is_there() -> None:
    names = {tool.name for tool in TOOLS} | {alias for tool in TOOLS for alias in tool.aliases}
    assert {"zstd", "sfdisk", "wipefs", "mkfs.ext4", "mkfs.vfat"} <= names
    assert "mke2fs -V" in selftest_commands()
