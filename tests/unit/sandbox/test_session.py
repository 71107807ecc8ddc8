"""A sandbox run's progress model against stand-in VMs and a stand-in metalflow: phases only move
forward, failures say why, and the run ends once every VM is done."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

from metalflow.sandbox import session
from metalflow.sandbox.lab import Lab
from metalflow.sandbox.run import Sandbox, SandboxError
from metalflow.sandbox.session import Firmware, Rank, Watch
from metalflow.sandbox.vm import Vm, VmSpec


class Process:
    """A QEMU that runs until it is stopped or told to exit."""

    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


def watch(tmp_path: Path, name: str = "sandbox-vm1") -> Watch:
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / "serial.log").write_text("")
    spec = VmSpec(name=name, mac="52:54:00:5b:00:01", tap="t0", disk=workdir / "d", workdir=workdir)
    vm = Vm(spec, cast("subprocess.Popen[bytes]", Process()), started=100.0)
    found = Watch(name, uefi=False, vm=vm)
    found.enter(Rank.FIRMWARE, "firmware", vm.started)
    return found


def event(kind: str, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "machine": "sandbox-vm1", "data": data}


def test_phases_only_move_forward(tmp_path: Path) -> None:
    vm1 = watch(tmp_path)
    session.on_event(vm1, event("dhcp.ack"), 101)
    session.on_event(vm1, event("boot.script", script="install"), 102)
    session.on_event(vm1, event("dhcp.offer"), 103)
    session.on_event(
        vm1, event("workflow.action.started", action="stream-image", index=0, total=3), 104
    )
    session.on_event(vm1, event("workflow.succeeded"), 105)
    session.on_event(vm1, event("dhcp.ack"), 106)
    assert [label for label, _ in vm1.phases] == [
        "firmware",
        "DHCP",
        "iPXE script",
        "action stream-image (1/3)",
        "rebooting",
        "booting the disk",
    ]
    assert vm1.phase_times() == [
        ("firmware", 1.0),
        ("DHCP", 1.0),
        ("iPXE script", 2.0),
        ("action stream-image (1/3)", 1.0),
        ("rebooting", 1.0),
    ]


def test_a_failed_workflow_reports_its_failed_action_and_stops_the_vm(tmp_path: Path) -> None:
    vm1 = watch(tmp_path)
    session.on_event(
        vm1,
        event("workflow.action.failed", action="stream-image", state="TIMEOUT", message=""),
        101,
    )
    session.on_event(vm1, event("workflow.failed", reason="an action failed"), 102)
    assert vm1.failure == "action stream-image timeout: exit code None"
    assert vm1.ended == 102
    assert not vm1.vm.running()
    session.on_event(vm1, event("dhcp.ack"), 103)
    assert vm1.phase == "FAILED: action stream-image timeout: exit code None"


def test_the_marker_on_the_serial_and_a_power_off_end_a_booted_run(tmp_path: Path) -> None:
    vm1 = watch(tmp_path)
    vm1.vm.serial_path.write_text(
        "metalflow-init\nOSIMG-BOOTED\nOSIMG-MARKER hello\nOSIMG-POWEROFF\n"
    )
    session.on_serial(vm1, 110)
    assert vm1.booted
    assert vm1.marker == "hello"
    assert vm1.ended == 110
    assert vm1.phase == 'disk booted, marker "hello"'
    done = session.summary([vm1])["vms"][0]
    assert done["booted"] is True
    assert done["seconds"] == 10.0
    assert done["phases"][0] == {"phase": "firmware", "seconds": 10.0}


def test_qemu_exiting_without_the_marker_fails_with_its_last_words(tmp_path: Path) -> None:
    vm1 = watch(tmp_path)
    (vm1.vm.spec.workdir / "qemu.stderr").write_text("warning\nqemu: could not open disk\n")
    cast(Process, vm1.vm.process).returncode = 1
    session.on_serial(vm1, 105)
    assert vm1.failure == "QEMU exited with code 1: qemu: could not open disk"


class Metalflow:
    """The events API of a running metalflow, one page of events per call."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.process = None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return {"items": self.pages.pop(0) if self.pages else []}


def test_follow_shows_each_round_until_every_vm_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "POLL_SECONDS", 0)
    vm1 = watch(tmp_path)
    pages = [[{"id": 1, **event("dhcp.ack")}], [{"id": 2, **event("workflow.failed")}]]
    shown: list[str] = []
    box = cast(Sandbox, Metalflow(pages))
    session.follow(box, [vm1], lambda watches, now: shown.append(watches[0].phase), timeout=60)
    assert shown == ["DHCP", "FAILED: workflow failed: no reason"]


def test_follow_gives_up_on_a_vm_past_the_timeout(tmp_path: Path) -> None:
    vm1 = watch(tmp_path)
    session.follow(cast(Sandbox, Metalflow([])), [vm1], lambda watches, now: None, timeout=-1)
    assert vm1.failure == "timed out after -1 s in phase firmware"


def test_mixed_firmware_alternates_bios_and_uefi() -> None:
    assert [Firmware.MIXED.uefi(index) for index in (1, 2, 3)] == [False, True, False]
    assert Firmware.UEFI.uefi(1)
    assert not Firmware.BIOS.uefi(2)


def test_a_workdir_is_fresh_when_absent_or_empty(tmp_path: Path) -> None:
    assert session.fresh(tmp_path / "new")
    assert session.fresh(tmp_path)
    (tmp_path / "metalflow.log").write_text("")
    assert not session.fresh(tmp_path)


def test_the_lab_tag_skips_namespaces_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    own = session.TAG_BASE + os.getpid() % session.TAG_SPAN
    monkeypatch.setattr(session, "namespaces", lambda: {Lab(str(own)).namespace})
    assert session.lab_tag() == str(session.TAG_BASE + (os.getpid() + 1) % session.TAG_SPAN)
    every = {Lab(str(session.TAG_BASE + n)).namespace for n in range(session.TAG_SPAN)}
    monkeypatch.setattr(session, "namespaces", lambda: every)
    with pytest.raises(SandboxError, match="every sandbox lab tag is taken"):
        session.lab_tag()
