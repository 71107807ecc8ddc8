"""Actions that work on partitions and the machine itself: writefile, cexec, wipe, kexec,
reboot, poweroff with the environment variables of Tinkerbell's hub actions; partition and
format (which the hub lacks as separate actions) with variables named in the same style.

mount/umount/wipefs/chroot are called as programs (through ``Context.system``): the stdlib
has no mount(2) binding, and ctypes calls into libc would tie the agent to one libc and still
need the same privileges. kexec is two plain system calls (see ``system.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import stat
import struct
import tempfile
from collections.abc import Iterator

from .base import ActionError, After, Context, inside, mounted
from .image import wipe_ends


def writefile(ctx: Context) -> None:
    device = ctx.require("DEST_DISK", "/dev/sda1")
    fs_type = ctx.require("FS_TYPE", "ext4")
    dest = ctx.require("DEST_PATH", "/etc/netplan/config.yaml")
    if "CONTENTS" not in ctx.env:
        raise ActionError(
            "writefile: environment variable CONTENTS is not set; add the file's text to the"
            " action's environment, e.g. CONTENTS: hello",
            exit_code=2,
        )
    contents = ctx.env["CONTENTS"]
    uid = ctx.number("UID", 0)
    gid = ctx.number("GID", 0)
    mode = ctx.octal("MODE", 0o644)
    dir_mode = ctx.octal("DIRMODE", 0o755)
    with mounted(ctx, device, fs_type) as root:
        target = inside(root, dest)
        _make_dirs(root, os.path.dirname(target), dir_mode, uid, gid)
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".metalflow-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(contents)
                handle.flush()
                os.fsync(handle.fileno())
            os.chown(temp, uid, gid)
            os.chmod(temp, mode)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
    ctx.log(f"wrote {len(contents.encode())} bytes to {dest} on {device} (mode {mode:o})")


def _make_dirs(root: str, path: str, mode: int, uid: int, gid: int) -> None:
    """Create missing directories below ``root`` with DIRMODE and the file's owner."""
    missing = []
    while path != root and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chown(directory, uid, gid)
        os.chmod(directory, mode)


def command(ctx: Context) -> list[str]:
    """CMD_LINE as argv; with DEFAULT_INTERPRETER (e.g. ``/bin/sh -c``) as one argument."""
    line = ctx.require("CMD_LINE", "grub-install /dev/sda")
    interpreter = ctx.optional("DEFAULT_INTERPRETER")
    try:
        if interpreter:
            return [*shlex.split(interpreter), line]
        return shlex.split(line)
    except ValueError as error:
        raise ActionError(f"cexec: CMD_LINE cannot be split into words: {error}", 2) from None


@contextlib.contextmanager
def _chroot_mounts(ctx: Context, root: str) -> Iterator[None]:
    """/dev, /proc and /sys bound into the chroot, as a container with them would see."""
    done: list[str] = []
    try:
        for name in ("dev", "proc", "sys"):
            target = os.path.join(root, name)
            if os.path.isdir(target):
                ctx.run("mount", "-o", "bind", f"/{name}", target)
                done.append(target)
        yield
    finally:
        for target in reversed(done):
            ctx.system.run(["umount", "-l", target], ctx.log, check=False)


def cexec(ctx: Context) -> None:
    argv = command(ctx)
    if not ctx.flag("CHROOT"):
        ctx.run(*argv)
        return
    device = ctx.require("BLOCK_DEVICE", "/dev/sda3")
    fs_type = ctx.require("FS_TYPE", "ext4")
    ctx.need_tool("chroot", "coreutils (or busybox)")
    with mounted(ctx, device, fs_type) as root, _chroot_mounts(ctx, root):
        ctx.run("chroot", root, *argv)


WIPE_MODES = ("signatures", "zero", "discard")
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
"""ioctls on a block device, each taking a (start, length) pair of u64."""
WIPE_STEP = 1 << 30
"""Zeroing goes a GiB per call, so progress is logged and a cancel is seen between calls."""
WIPE_BUFFER = 4 << 20


def wipe(ctx: Context) -> None:
    """MODE signatures (default): partition tables and filesystem signatures; zero: every
    byte (the device zeroes itself where it can); discard: every block unmapped (SSDs, thin
    volumes: fast, and reads may then return anything)."""
    device = ctx.require("DEST_DISK", "/dev/sda")
    mode = ctx.optional("MODE", "signatures").lower()
    if mode not in WIPE_MODES:
        raise ActionError(f"wipe: MODE={mode!r} is not one of {', '.join(WIPE_MODES)}", exit_code=2)
    if not os.path.exists(device):
        raise ActionError(f"wipe: DEST_DISK {device} does not exist", exit_code=2)
    if mode == "signatures" and ctx.system.which("wipefs"):
        ctx.run("wipefs", "-a", device)
    elif mode == "signatures":
        ctx.log("wipefs not found; zeroing the first and last MiB only")
    fd = os.open(device, os.O_WRONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if mode == "signatures":
            wipe_ends(fd, size)
        else:
            _wipe_all(ctx, fd, size, device, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    ctx.log(f"wiped {device} ({size} bytes, mode {mode})")


def _wipe_all(ctx: Context, fd: int, size: int, device: str, mode: str) -> None:
    block = stat.S_ISBLK(os.fstat(fd).st_mode)
    if mode == "discard" and not block:
        raise ActionError(f"wipe: MODE=discard needs a block device; {device} is not one", 2)
    for start in range(0, size, WIPE_STEP):
        ctx.check_cancelled()
        length = min(WIPE_STEP, size - start)
        if block:
            request = BLKDISCARD if mode == "discard" else BLKZEROOUT
            try:
                fcntl.ioctl(fd, request, struct.pack("QQ", start, length))
            except OSError as error:
                raise ActionError(f"wipe: {mode} of {device} failed: {error}") from None
        else:
            _write_zeros(fd, start, length)
        ctx.log(f"{mode}: {start + length} of {size} bytes")


def _write_zeros(fd: int, start: int, length: int) -> None:
    zeros = bytes(WIPE_BUFFER)
    end = start + length
    while start < end:
        start += os.pwrite(fd, zeros[: end - start], start)


MKFS = {
    "ext2": ("mkfs.ext2", "e2fsprogs", ["-F", "-q"], "-L"),
    "ext3": ("mkfs.ext3", "e2fsprogs", ["-F", "-q"], "-L"),
    "ext4": ("mkfs.ext4", "e2fsprogs", ["-F", "-q"], "-L"),
    "xfs": ("mkfs.xfs", "xfsprogs", ["-f", "-q"], "-L"),
    "btrfs": ("mkfs.btrfs", "btrfs-progs", ["-f", "-q"], "-L"),
    "vfat": ("mkfs.vfat", "dosfstools", [], "-n"),
    "swap": ("mkswap", "util-linux", ["-f"], "-L"),
}


def partition(ctx: Context) -> None:
    """DEST_DISK gets a new table: LABEL (gpt or dos) and PARTITIONS, one sfdisk(8) script line
    per partition (e.g. ``size=512MiB, type=uefi`` then ``type=linux``)."""
    device = ctx.require("DEST_DISK", "/dev/sda")
    layout = ctx.require("PARTITIONS", "a block scalar with one sfdisk line per partition")
    label = ctx.optional("LABEL", "gpt").lower()
    if label not in ("gpt", "dos"):
        raise ActionError(f"partition: LABEL={label!r} must be gpt or dos", exit_code=2)
    if not os.path.exists(device):
        raise ActionError(f"partition: DEST_DISK {device} does not exist", exit_code=2)
    tool = ctx.need_tool("sfdisk", "fdisk")
    lines = [part.strip() for part in layout.splitlines() if part.strip()]
    script = "\n".join([f"label: {label}", *lines]) + "\n"
    ctx.run(tool, "--wipe", "always", "--wipe-partitions", "always", device, stdin=script)


def format_(ctx: Context) -> None:
    """A new FS_TYPE filesystem on DEST_DISK (a partition), labelled LABEL if given."""
    device = ctx.require("DEST_DISK", "/dev/sda1")
    fs_type = ctx.require("FS_TYPE", "ext4").lower()
    if fs_type not in MKFS:
        raise ActionError(
            f"format: FS_TYPE={fs_type!r} is not supported; use one of {', '.join(MKFS)}",
            exit_code=2,
        )
    if not os.path.exists(device):
        raise ActionError(f"format: DEST_DISK {device} does not exist", exit_code=2)
    program, package, options, label_flag = MKFS[fs_type]
    argv = [ctx.need_tool(program, package), *options]
    label = ctx.optional("LABEL")
    if label:
        argv += [label_flag, label]
    ctx.run(*argv, device)


def kexec(ctx: Context) -> After:
    """Load the installed kernel now (so a missing file fails the action), jump after."""
    device = ctx.require("BLOCK_DEVICE", "/dev/sda3")
    fs_type = ctx.require("FS_TYPE", "ext4")
    kernel = ctx.require("KERNEL_PATH", "/boot/vmlinuz")
    initrd = ctx.optional("INITRD_PATH")
    cmdline = ctx.optional("CMD_LINE")
    with mounted(ctx, device, fs_type) as root:
        paths = [inside(root, kernel), *([inside(root, initrd)] if initrd else [])]
        for path in paths:
            if not os.path.isfile(path):
                raise ActionError(
                    f"kexec: {path[len(root) :]} is not a file on {device}; check KERNEL_PATH"
                    " and INITRD_PATH",
                    exit_code=2,
                )
        try:
            ctx.system.kexec_load(paths[0], paths[1] if initrd else None, cmdline or "", ctx.log)
        except OSError as error:
            raise ActionError(
                f"kexec: the kernel refused to load {kernel}: {error} (it needs"
                " CONFIG_KEXEC_FILE, and under Secure Boot a signed kernel)"
            ) from None
    return lambda: ctx.system.kexec(ctx.log)


def reboot(ctx: Context) -> After:
    return lambda: ctx.system.reboot(ctx.log)


def poweroff(ctx: Context) -> After:
    return lambda: ctx.system.poweroff(ctx.log)
