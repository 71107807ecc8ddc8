"""VirtualTree: names that stay inside the tree resolve; every way out is refused with its code."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalflow.boot.tftp.session import ErrorCode
from metalflow.boot.tftp.tree import (
    RESOLVE_BENEATH,
    RESOLVE_NO_SYMLINKS,
    AccessViolation,
    FileNotFound,
    OpenAt2,
    TreeError,
    VirtualTree,
    open_beneath,
    openat2,
    split_name,
)
from tests.prerequisites import unavailable
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


SERVED = [
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
]


@pytest.mark.parametrize(("name", "served"), SERVED)
def test_names_inside_the_tree_resolve(
    tree: VirtualTree, layout: dict[str, Path], name: str, served: str
) -> None:
    top, _, rest = served.partition("/")
    expected = layout[top] / rest if rest else layout[top]
    assert tree.resolve(name) == expected.resolve()


REFUSED = [
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
]


@pytest.mark.parametrize(("name", "error"), REFUSED)
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


def walk_only(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """A kernel without openat2 (before Linux 5.6, or a seccomp filter that refuses it)."""
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


@pytest.fixture(params=["openat2", "walk", "no-openat2"])
def beneath(request: pytest.FixtureRequest) -> Iterator[OpenAt2 | None]:
    """Both ways of opening below a root: openat2, and the walk (asked for, or fallen back to)."""
    if request.param == "openat2":
        probe = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.close(openat2(probe, "etc", os.O_RDONLY, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS))
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                unavailable("this kernel has no openat2 (Linux 5.6 or later has it)")
        finally:
            os.close(probe)
        yield openat2
    else:
        yield None if request.param == "walk" else walk_only


def read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as file:
        return file.read()


@pytest.mark.parametrize(("name", "served"), SERVED)
def test_open_serves_what_resolve_names(
    tree: VirtualTree,
    layout: dict[str, Path],
    beneath: OpenAt2 | None,
    name: str,
    served: str,
) -> None:
    top, _, rest = served.partition("/")
    expected = layout[top] / rest if rest else layout[top]
    assert read_fd(tree.open(name, beneath=beneath)) == expected.read_bytes()


@pytest.mark.parametrize(("name", "error"), REFUSED)
def test_open_refuses_what_resolve_refuses(
    tree: VirtualTree, beneath: OpenAt2 | None, name: str, error: type[TreeError]
) -> None:
    with pytest.raises(error) as raised:
        tree.open(name, beneath=beneath)
    assert type(raised.value) is error


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_directory_swapped_for_a_symlink_out_of_the_root_is_not_followed(
    tmp_path: Path, beneath: OpenAt2 | None, target: str
) -> None:
    """What `resolve` checked can change before the open: the open itself must refuse it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    (root / "images" / "kernel").write_bytes(b"vmlinuz")
    (outside / "images").mkdir(parents=True)
    (outside / "images" / "kernel").write_bytes(b"secret")
    tree = VirtualTree(directories={"": root})
    assert read_fd(tree.open("images/kernel", beneath=beneath)) == b"vmlinuz"

    (root / "images" / "kernel").unlink()
    (root / "images").rmdir()
    link = outside / "images" if target == "absolute" else Path("../outside/images")
    (root / "images").symlink_to(link)
    with pytest.raises(AccessViolation):
        open_beneath("images/kernel", root, ("images", "kernel"), beneath=beneath)
    with pytest.raises(AccessViolation):
        tree.open("images/kernel", beneath=beneath)


def test_a_fifo_or_a_symlink_swapped_in_for_the_file_is_refused(
    tmp_path: Path, beneath: OpenAt2 | None
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    os.mkfifo(root / "sub" / "fifo")
    (root / "sub" / "link").symlink_to(root / "sub" / "fifo")
    for name in ("fifo", "link"):
        with pytest.raises(AccessViolation):
            open_beneath(f"sub/{name}", root, ("sub", name), beneath=beneath)
    with pytest.raises(FileNotFound):
        open_beneath("sub/gone", root, ("sub", "gone"), beneath=beneath)
