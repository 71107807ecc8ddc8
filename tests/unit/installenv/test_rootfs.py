"""Paths inside the initramfs and symlinks resolved inside a staging root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from metalflow.installenv import rootfs


def test_top_level_dirs_move_into_usr() -> None:
    assert rootfs.initramfs_path(PurePosixPath("lib/x86_64-linux-gnu/libc.so.6")) == (
        "usr/lib/x86_64-linux-gnu/libc.so.6"
    )
    assert rootfs.initramfs_path(PurePosixPath("/lib64/ld.so")) == "usr/lib64/ld.so"
    assert rootfs.initramfs_path(PurePosixPath("usr/bin/python3")) == "usr/bin/python3"
    assert rootfs.initramfs_path(PurePosixPath("etc/passwd")) == "etc/passwd"


def test_symlinks_resolve_inside_the_root_not_the_host(tmp_path: Path) -> None:
    (tmp_path / "lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib64").mkdir()
    real = tmp_path / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    real.write_bytes(b"ld")
    (tmp_path / "lib64/ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    (tmp_path / "lib/x86_64-linux-gnu/libz.so.1").symlink_to("libz.so.1.2.13")
    (tmp_path / "lib/x86_64-linux-gnu/libz.so.1.2.13").write_bytes(b"z")
    (tmp_path / "lib/passwd").symlink_to("../../../../etc/passwd")
    (tmp_path / "loop").symlink_to("loop")
    assert rootfs.resolve_in_root(tmp_path, PurePosixPath("lib64/ld-linux-x86-64.so.2")) == real
    assert rootfs.resolve_in_root(tmp_path, PurePosixPath("lib/x86_64-linux-gnu/libz.so.1")) == (
        tmp_path / "lib/x86_64-linux-gnu/libz.so.1.2.13"
    )
    assert rootfs.resolve_in_root(tmp_path, PurePosixPath("lib/passwd")) is None
    assert rootfs.resolve_in_root(tmp_path, PurePosixPath("loop")) is None
    assert rootfs.resolve_in_root(tmp_path, PurePosixPath("nothing")) is None
