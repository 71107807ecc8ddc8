"""Everything that changes the machine outside a file write, behind one small object.

Tests pass a recording object instead of rebooting the host; ``--dry-run-power`` makes the
real one log reboot/poweroff/kexec instead of doing them.

kexec uses the kexec_file_load(2) and reboot(2) system calls through ctypes rather than
kexec-tools: Debian's kexec binary links the Xen libraries (~2 MB more initramfs), and the kernel
parses the image itself with kexec_file_load, so nothing of kexec-tools' loaders is needed.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence

Log = Callable[[str], None]


class CommandError(Exception):
    def __init__(self, argv: Sequence[str], code: int, tail: list[str]) -> None:
        detail = ": " + " / ".join(line.strip() for line in tail[-3:]) if tail else ""
        super().__init__(f"{' '.join(argv)} exited {code}{detail}")
        self.code = code


class Cancelled(Exception):
    """The action's time ran out or the server ended it."""


class System:
    """The host: runs commands, reboots, powers off, kexecs."""

    def __init__(self, *, dry_run_power: bool = False) -> None:
        self.dry_run_power = dry_run_power

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def run(
        self,
        argv: Sequence[str],
        log: Log,
        *,
        cancelled: threading.Event | None = None,
        check: bool = True,
        stdin: str | None = None,
    ) -> int:
        """Run a command, sending its output to ``log`` line by line; killed on cancel.

        ``stdin`` is written before the output is read, so it must be small (a partition
        table script), well under the pipe buffer.
        """
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        tail: list[str] = []
        watcher = None
        if cancelled is not None:
            watcher = threading.Thread(target=_kill_on, args=(cancelled, process), daemon=True)
            watcher.start()
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            log(line)
            tail = [*tail[-4:], line]
        code = process.wait()
        if cancelled is not None and cancelled.is_set():
            raise Cancelled(f"{argv[0]} was killed: the action was cancelled")
        if check and code != 0:
            raise CommandError(argv, code, tail)
        return code

    def _power(self, what: str, argv: list[str], sysrq: str, log: Log) -> None:
        if self.dry_run_power:
            log(f"dry run: would {what} now")
            return
        os.sync()
        if self.which(argv[0]):
            self.run(argv, log, check=False)
        with open("/proc/sysrq-trigger", "w") as trigger:
            trigger.write(sysrq)

    def reboot(self, log: Log) -> None:
        self._power("reboot", ["reboot", "-f"], "b", log)

    def poweroff(self, log: Log) -> None:
        self._power("power off", ["poweroff", "-f"], "o", log)

    def kexec_load(self, kernel: str, initrd: str | None, cmdline: str, log: Log) -> None:
        """Stage a kernel for `kexec` (loading works in a dry run too: it changes nothing yet)."""
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None:
            raise OSError(f"kexec: no kexec_file_load system call number for {platform.machine()}")
        argument = cmdline.encode() + b"\0"
        flags = 0 if initrd else KEXEC_FILE_NO_INITRAMFS
        kernel_fd = os.open(kernel, os.O_RDONLY | os.O_CLOEXEC)
        initrd_fd = os.open(initrd, os.O_RDONLY | os.O_CLOEXEC) if initrd else -1
        try:
            _syscall(numbers[0], kernel_fd, initrd_fd, len(argument), argument, flags)
        finally:
            os.close(kernel_fd)
            if initrd_fd >= 0:
                os.close(initrd_fd)
        log(f"kexec: loaded {kernel}" + (f" with {initrd}" if initrd else "") + f": {cmdline}")

    def kexec(self, log: Log) -> None:
        """Jump into the kernel staged by `kexec_load`."""
        if self.dry_run_power:
            log("dry run: would kexec into the loaded kernel now")
            return
        os.sync()
        _syscall(_SYSCALLS[platform.machine()][1], *REBOOT_MAGIC, REBOOT_CMD_KEXEC, None)


KEXEC_FILE_NO_INITRAMFS = 0x4
REBOOT_MAGIC = (0xFEE1DEAD, 0x28121969)
REBOOT_CMD_KEXEC = 0x45584543
_SYSCALLS = {"x86_64": (320, 169), "aarch64": (294, 142)}
"""Machine -> (kexec_file_load, reboot) system call numbers."""


def _syscall(number: int, *arguments: int | bytes | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, *arguments) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _kill_on(cancelled: threading.Event, process: subprocess.Popen[str]) -> None:
    while process.poll() is None:
        if cancelled.wait(0.2):
            process.kill()
            return
