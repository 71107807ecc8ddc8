"""Vm.wait_for against a stand-in QEMU process whose last serial line and exit race the reader."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import cast

from metalflow.sandbox.vm import Vm, VmSpec


class ExitsAfterItsLastLine:
    """A QEMU that prints `last` and exits at the moment it is asked whether it still runs."""

    def __init__(self, serial: Path, last: str) -> None:
        self._serial = serial
        self._last = last
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with self._serial.open("a") as log:
                log.write(self._last)
            self.returncode = 0
        return self.returncode


def test_a_line_written_just_before_qemu_exits_is_found(tmp_path: Path) -> None:
    spec = VmSpec(
        name="vm1", mac="52:54:00:00:00:01", tap="t0", disk=tmp_path / "d", workdir=tmp_path
    )
    (tmp_path / "serial.log").write_text("SeaBIOS\n")
    process = ExitsAfterItsLastLine(tmp_path / "serial.log", "OSIMG-POWEROFF\n")
    vm = Vm(spec, cast("subprocess.Popen[bytes]", process))
    found = vm.wait_for("OSIMG-POWEROFF", timeout=5)
    assert found is not None
    assert not vm.running()
    assert vm.wait_for("never printed", timeout=5) is None
