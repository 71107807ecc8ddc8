"""Everything that changes the machine outside a file write, behind one small object.

Tests pass a recording object instead of rebooting the host; ``--dry-run-power`` makes the
real one log reboot/poweroff/kexec instead of doing them.
"""

from __future__ import annotations

import os
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

    def kexec(self, log: Log) -> None:
        """Jump into the kernel loaded earlier with ``kexec -l``."""
        if self.dry_run_power:
            log("dry run: would kexec into the loaded kernel now")
            return
        os.sync()
        self.run(["kexec", "-e"], log)


def _kill_on(cancelled: threading.Event, process: subprocess.Popen[str]) -> None:
    while process.poll() is None:
        if cancelled.wait(0.2):
            process.kill()
            return
