"""VirtualTree: names that stay inside the tree resolve; every way out is refused with its code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metalflow.boot.tftp.session import ErrorCode
from metalflow.boot.tftp.tree import (
    AccessViolation,
    FileNotFound,
    TreeError,
    VirtualTree,
    split_name,
)
from tests.unit.boot.tftp import require_ipxe


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "srv"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"pxe")
    (root / "pxelinux.cfg" / "default").write_bytes(b"menu")
    (root / "subdir").mkdir()
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    (root / "escape").symlink_to(outside)
    (root / "escape-dir").symlink_to(tmp_path)
    (root / "alias").symlink_to(root / "pxelinux.0")
    (root / "dangling").symlink_to(root / "gone")
    (root / "loop").symlink_to(root / "loop")
    os.mkfifo(root / "fifo")
    images = tmp_path / "images"
    images.mkdir()
    (images / "kernel").write_bytes(b"vmlinuz")
    ipxe = tmp_path / "ipxe.efi"
    ipxe.write_bytes(b"MZ")
    return {"root": root, "images": images, "ipxe": ipxe, "tmp": tmp_path}


@pytest.fixture
def tree(layout: dict[str, Path]) -> VirtualTree:
    return VirtualTree(
        files={
            "ipxe.efi": layout["ipxe"],
            "boot/undionly.kpxe": layout["ipxe"],
            "missing.efi": layout["tmp"] / "nowhere",
            "null": Path("/dev/null"),
            "a-directory": layout["tmp"],
        },
        directories={"": layout["root"], "images": layout["images"]},
    )


@pytest.mark.parametrize(
    ("name", "served"),
    [
        ("pxelinux.0", "root/pxelinux.0"),
        ("/pxelinux.0", "root/pxelinux.0"),
        ("//pxelinux.0", "root/pxelinux.0"),
        ("./pxelinux.0", "root/pxelinux.0"),
        ("pxelinux.cfg/default", "root/pxelinux.cfg/default"),
        ("pxelinux.cfg\\default", "root/pxelinux.cfg/default"),
        ("\\pxelinux.cfg\\default", "root/pxelinux.cfg/default"),
        ("alias", "root/pxelinux.0"),
        ("ipxe.efi", "ipxe"),
        ("/ipxe.efi", "ipxe"),
        ("boot\\undionly.kpxe", "ipxe"),
        ("images/kernel", "images/kernel"),
        ("/images/kernel", "images/kernel"),
    ],
)
def test_names_inside_the_tree_resolve(
    tree: VirtualTree, layout: dict[str, Path], name: str, served: str
) -> None:
    top, _, rest = served.partition("/")
    expected = layout[top] / rest if rest else layout[top]
    assert tree.resolve(name) == expected.resolve()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("../etc/passwd", AccessViolation),
        ("/../etc/passwd", AccessViolation),
        ("a/../../x", AccessViolation),
        ("pxelinux.cfg/../pxelinux.0", AccessViolation),
        ("..\\x", AccessViolation),
        ("images/../escape", AccessViolation),
        ("..", AccessViolation),
        ("escape", AccessViolation),
        ("escape-dir/secret", AccessViolation),
        ("pxe\0linux.0", AccessViolation),
        ("pxelinux.cfg", AccessViolation),
        ("subdir", AccessViolation),
        ("/", AccessViolation),
        ("fifo", AccessViolation),
        ("loop", AccessViolation),
        ("null", AccessViolation),
        ("a-directory", AccessViolation),
        ("/etc/passwd", FileNotFound),
        ("etc/passwd", FileNotFound),
        ("missing", FileNotFound),
        ("dangling", FileNotFound),
        ("pxelinux.0/x", FileNotFound),
        ("missing.efi", FileNotFound),
        ("images/none", FileNotFound),
    ],
)
def test_names_outside_or_unservable_are_refused(
    tree: VirtualTree, name: str, error: type[TreeError]
) -> None:
    with pytest.raises(error) as raised:
        tree.resolve(name)
    assert type(raised.value) is error


def test_error_codes_are_tftps() -> None:
    assert FileNotFound.code is ErrorCode.FILE_NOT_FOUND
    assert AccessViolation.code is ErrorCode.ACCESS_VIOLATION


def test_a_file_name_wins_over_a_directory_and_longer_prefixes_first(tmp_path: Path) -> None:
    top, nested = tmp_path / "top", tmp_path / "nested"
    (top / "images").mkdir(parents=True)
    nested.mkdir()
    (top / "images" / "kernel").write_bytes(b"top")
    (top / "images" / "initrd").write_bytes(b"top")
    (nested / "kernel").write_bytes(b"nested")
    (tmp_path / "override").write_bytes(b"override")
    tree = VirtualTree(
        files={"images/initrd": tmp_path / "override"},
        directories={"": top, "images": nested},
    )
    assert tree.resolve("images/kernel") == (nested / "kernel").resolve()
    assert tree.resolve("images/initrd") == (tmp_path / "override").resolve()


def test_split_name_drops_leading_slashes_and_refuses_dot_dot() -> None:
    assert split_name("/a\\b/./c//") == ("a", "b", "c")
    with pytest.raises(AccessViolation):
        split_name("a/../b")


@pytest.mark.parametrize(
    ("files", "directories", "error"),
    [
        ({"": Path("/x")}, {}, ValueError),
        ({"../x": Path("/x")}, {}, ValueError),
        ({}, {"..": Path("/")}, ValueError),
        ({}, {"": Path("/nonexistent/tftp-root")}, FileNotFoundError),
        ({}, {"": Path("/dev/null")}, ValueError),
    ],
)
def test_invalid_configuration_is_refused(
    files: dict[str, Path], directories: dict[str, Path], error: type[Exception]
) -> None:
    with pytest.raises(error):
        VirtualTree(files=files, directories=directories)


def test_the_distribution_ipxe_binaries(tmp_path: Path) -> None:
    ipxe = require_ipxe()
    tree = VirtualTree(
        files={name: ipxe / name for name in ("undionly.kpxe", "ipxe.efi", "snponly.efi")},
        directories={"": tmp_path},
    )
    for name in ("undionly.kpxe", "/ipxe.efi", "snponly.efi"):
        assert tree.resolve(name).is_file()
