"""`metalflow sandbox` run as a newcomer runs it: two VMs at once, one BIOS and one UEFI, each
provisioned and booted from its disk, and nothing of the run left behind afterwards; wrong
options and a machine that lacks something end at once with exit code 2 and a plain message."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metalflow.sandbox import lab, vm
from metalflow.sandbox.osimage import HOST_TOOLS
from tests.e2e.conftest import STABLE_DIR
from tests.prerequisites import needs_root, needs_tool, unavailable

DATA_DIR = STABLE_DIR / "e2e-data"
"""test_provision's install environment, which the sandbox reuses (and its test OS image cache
lives beside it)."""
COMMAND = (sys.executable, "-m", "metalflow", "sandbox")
VM_TIMEOUT = 420
"""The command's own --timeout: past it, it still cleans up and reports inside pytest's 600 s."""
RUN_TIMEOUT = 540.0
CLEANUP_TIMEOUT = 50.0
LOG_TAIL = 3000


def run_sandbox(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command with its output; one that overruns gets SIGTERM, which it must clean up on.

    Without COLUMNS, as from a pipe, the summary's rows are one line each.
    """
    process = subprocess.Popen(
        [*COMMAND, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or {k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    try:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=CLEANUP_TIMEOUT)
            pytest.fail(f"metalflow sandbox ran past {timeout:.0f} s:\n{stdout}\n{stderr}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def processes_using(path: Path) -> list[str]:
    """Command lines that name `path`: metalflow up's data dir, QEMU's disk and serial log."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or one that just ended
        line = " ".join(arg.decode(errors="replace") for arg in argv)
        if str(path) in line:
            found.append(f"{entry.name}: {line}")
    return found


def logs(workdir: Path) -> str:
    """The tails of what a failed run kept: metalflow's log and each VM's serial console."""
    paths = [workdir / "metalflow.log", *sorted(workdir.glob("vms/*/serial.log"))]
    return "\n".join(
        f"--- {path} ---\n{path.read_text(errors='replace')[-LOG_TAIL:]}"
        for path in paths
        if path.is_file()
    )


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"no {pattern!r} in:\n{text}"
    return match.group(1)


@pytest.mark.timeout(600)
def test_two_vms_bios_and_uefi_boot_their_disks_and_nothing_is_left(qemu: None) -> None:
    needs_root("the sandbox lab (network namespaces, taps)")
    missing = lab.requirements() + vm.requirements()
    if missing:
        unavailable("; ".join(missing))
    for tool, package in HOST_TOOLS.items():
        needs_tool(tool, package)

    done = run_sandbox(
        "--vms",
        "2",
        "--firmware",
        "mixed",
        "--bmc",
        "--timeout",
        str(VM_TIMEOUT),
        "--data-dir",
        str(DATA_DIR),
        timeout=RUN_TIMEOUT,
    )
    output = f"{done.stdout}\n{done.stderr}"
    print(output)
    workdir = Path(found(r"^workdir: (\S+)$", done.stdout))
    namespace = found(r"namespace (mfsb\d+)", done.stdout)
    if done.returncode != 0:
        story = logs(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"exit code {done.returncode}:\n{output}\n{story}")

    for name, firmware in (("sandbox-vm1", "bios"), ("sandbox-vm2", "uefi")):
        marker = f"provisioned by metalflow for {name}"
        assert re.search(
            rf'^{name} +{firmware} +booted its disk, marker "{marker}" +\d+', done.stdout, re.M
        ), output
        assert f'{name}: disk booted, marker "{marker}"' in done.stdout
        # No "booting the disk" phase (iPXE's exit to the disk) is required: with a BMC, the
        # disk is set first before the VM's reboot when the boot-disk job wins the race.
        for phase in ("DHCP", "agent hello", "action stream-image (1/3)", "disk booted"):
            assert f"{name}: {phase}" in done.stdout, output
    assert "powered on by their BMCs" in done.stdout, output
    assert "Traceback" not in output

    # Everything the run made is gone: the namespace, its link, the processes, the workdir.
    assert namespace not in namespaces()
    assert not Path(f"/sys/class/net/mfsbh{namespace.removeprefix('mfsb')}").exists()
    assert processes_using(workdir) == []
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--vms", "0"], "--vms"),
        (["--vms", "9"], "--vms"),
        (["--firmware", "efi"], "--firmware"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_a_bad_option_exits_2_naming_it(args: list[str], option: str) -> None:
    done = run_sandbox(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Invalid value for '{option}'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_used_workdir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "earlier-run").mkdir()
    done = run_sandbox("--workdir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == f"error: --workdir {tmp_path} is not a new or empty directory\n"


def test_missing_prerequisites_are_listed_with_their_fixes_before_anything_starts(
    tmp_path: Path,
) -> None:
    nothing = tmp_path / "empty-bin"
    nothing.mkdir()
    done = run_sandbox("--firmware", "uefi", env={**os.environ, "PATH": str(nothing)})
    assert done.returncode == 2
    assert done.stdout == ""  # no build, no lab, no metalflow
    lines = done.stderr.splitlines()
    assert "error: `ip` not found: install the Debian package iproute2" in lines
    assert (
        "error: qemu-system-x86_64 not found: install the Debian package qemu-system-x86" in lines
    )
    assert "error: zstd not found: install the Debian package zstd" in lines
    assert all(line.startswith("error: ") for line in lines), done.stderr
