"""A real install environment: built from Debian packages, then booted under QEMU.

The build is kept in a fixed directory under the temp dir, so a rerun with unchanged inputs takes a
second or two; the builder itself decides whether inputs changed.
"""

from __future__ import annotations

import gzip
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from metalflow import installenv
from metalflow.installenv import BuildResult, build
from metalflow.installenv.init import BUSYBOX_APPLETS
from metalflow.installenv.tools import TOOLS
from metalflow.sandbox.vm import machine_args
from tests.prerequisites import needs_tool
from tests.unit.installenv.newc import Member, read_newc
from tests.unit.installenv.test_modules import VIRTIO_ORDER

# The builds here share STABLE_DIR and its .deb cache with each other and with the e2e tests:
# under pytest-xdist they all run on the e2e tests' worker, one after the other.
pytestmark = pytest.mark.xdist_group("e2e")

STABLE_DIR = Path(tempfile.gettempdir()) / "metalflow-installenv-test"
MAX_INITRD = 15_000_000
BOOT_TIMEOUT = 180
STAND_IN_MAIN = "def main() -> int:\n    print('stand-in agent')\n    return 0\n"


def require(*tools: str, package: str) -> None:
    for tool in tools:
        needs_tool(tool, package)


def stand_in_agent(root: Path, main: str = STAND_IN_MAIN) -> Path:
    """A stand-in `metalflow/agent`, so these tests do not depend on the real agent's progress."""
    package = root / "agent"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(main)
    return package


@pytest.fixture(scope="module")
def built() -> BuildResult:
    require("apt-get", "apt-cache", package="apt")
    require("dpkg-deb", package="dpkg")
    return build(STABLE_DIR / "data", agent_package=stand_in_agent(STABLE_DIR / "agent-src"))


def initrd_members(result: BuildResult) -> dict[str, Member]:
    with gzip.open(result.initrd_path) as stream:
        return {m.name: m for m in read_newc(stream.read())}


def test_build_outputs(built: BuildResult) -> None:
    assert built.kernel_path == STABLE_DIR / "data/installenv/x86_64-cloud/vmlinuz"
    assert built.initrd_path.name == "initrd.img"
    assert built.kernel_version.endswith("-cloud-amd64")
    assert 0 < built.size_bytes < MAX_INITRD
    assert built.size_bytes == built.initrd_path.stat().st_size
    assert built.kernel_path.read_bytes()[0x202:0x206] == b"HdrS"  # x86 boot protocol header
    assert tuple(name for name in built.modules if name in VIRTIO_ORDER) == VIRTIO_ORDER
    assert {"libc6", "libssl3", "zlib1g", "busybox-static"} <= set(built.packages)


def test_metalflow_up_finds_the_build_it_serves(built: BuildResult, tmp_path: Path) -> None:
    found = installenv.built(STABLE_DIR / "data")
    assert found is not None
    assert (found.kernel_path, found.initrd_path) == (built.kernel_path, built.initrd_path)
    assert installenv.built(tmp_path) is None


def test_initramfs_contents(built: BuildResult, tmp_path: Path) -> None:
    members = initrd_members(built)
    console, null = members["dev/console"], members["dev/null"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert stat.S_ISCHR(null.mode) and null.rdev == (1, 3)
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert members["bin"].data == b"usr/bin"
    assert members["usr/bin/python3"].data == b"python3.11"
    assert "usr/lib/metalflow/agent.pyz" in members
    stdlib = [name for name in members if name.startswith("usr/lib/python3.11/")]
    assert "usr/lib/python3.11/json/__init__.pyc" in members
    assert not [name for name in stdlib if name.endswith(".py")]  # bytecode only
    assert not [name for name in members if "__pycache__" in name or "/test/" in name]
    assert not [name for name in members if name.startswith("usr/lib/python3.11/tkinter")]
    assert f"usr/lib/modules/{built.kernel_version}/kernel/drivers/net/virtio_net.ko" in members
    for tool in TOOLS:
        assert members[f"usr/sbin/{tool.name}"].mode == stat.S_IFREG | 0o755
        for alias in tool.aliases:
            assert members[f"usr/sbin/{alias}"].data == tool.name.encode()
    busybox = tmp_path / "busybox"
    busybox.write_bytes(members["usr/bin/busybox"].data)
    busybox.chmod(0o755)
    applets = set(
        subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    )
    assert set(BUSYBOX_APPLETS) <= applets


def test_rebuild_with_unchanged_inputs_is_skipped(built: BuildResult) -> None:
    again = build(STABLE_DIR / "data", agent_package=stand_in_agent(STABLE_DIR / "agent-src"))
    assert again.cached
    assert again.inputs == built.inputs
    assert again.initrd_path.stat().st_mtime == built.initrd_path.stat().st_mtime


def test_changed_agent_means_a_rebuild(built: BuildResult, tmp_path: Path) -> None:
    """In a copy of the outputs (sharing the .deb cache), so the stable build stays valid."""
    data = tmp_path / "data"
    shutil.copytree(built.initrd_path.parent, data / "installenv" / "x86_64-cloud")
    (data / "installenv" / "cache").symlink_to(STABLE_DIR / "data" / "installenv" / "cache")
    same = build(data, agent_package=stand_in_agent(STABLE_DIR / "agent-src"))
    assert same.cached
    changed = build(data, agent_package=stand_in_agent(tmp_path / "src", STAND_IN_MAIN + "#\n"))
    assert not changed.cached
    assert changed.inputs != built.inputs
    assert changed.initrd_path.read_bytes() != built.initrd_path.read_bytes()


def boot_selftest(result: BuildResult, log: Path) -> tuple[str, float]:
    """Boot with `metalflow.selftest=1`; the serial log and the seconds until QEMU exited."""
    require("qemu-system-x86_64", package="qemu-system-x86")
    argv = [
        *machine_args(log, 512),
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(result.kernel_path),
        "-initrd",
        str(result.initrd_path),
        "-append",
        "console=ttyS0 panic=-1 metalflow.selftest=1",
    ]
    started = time.monotonic()
    qemu = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        qemu.wait(timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
        pytest.fail(
            f"QEMU did not power off within {BOOT_TIMEOUT} s; serial log:\n"
            + log.read_text(errors="replace")[-3000:]
        )
    serial = log.read_text(errors="replace")
    assert qemu.returncode == 0, serial[-3000:]
    return serial, time.monotonic() - started


def assert_selftest_passed(result: BuildResult, serial: str) -> None:
    prefix = "metalflow-init: loaded "
    loaded = [line[len(prefix) :] for line in serial.splitlines() if line.startswith(prefix)]
    assert loaded == list(result.modules), serial[-3000:]
    assert "metalflow-init: warning" not in serial, serial[-3000:]
    ok = re.search(r"metalflow-init: python ok 3\.11\.\d+ \((\d+) CA certificates\)", serial)
    assert ok is not None, serial[-3000:]
    assert int(ok.group(1)) > 100, "the CA bundle is missing or not where OpenSSL looks"
    assert "metalflow-init: agent ok" in serial, serial[-3000:]
    assert "metalflow-init: tools checked" in serial, serial[-3000:]
    assert "FAILED" not in serial, serial[-3000:]
    assert "Kernel panic" not in serial


def test_selftest_boot_under_qemu(built: BuildResult, tmp_path: Path) -> None:
    serial, elapsed = boot_selftest(built, tmp_path / "serial.log")
    assert_selftest_passed(built, serial)
    print(f"cloud selftest boot: {elapsed:.1f} s to poweroff")


def test_generic_kernel_builds_with_hardware_drivers_and_boots(tmp_path: Path) -> None:
    require("apt-get", "apt-cache", package="apt")
    require("dpkg-deb", package="dpkg")
    result = build(
        STABLE_DIR / "data",
        kernel="generic",
        agent_package=stand_in_agent(STABLE_DIR / "agent-src"),
    )
    assert result.kernel_path.parent.name == "x86_64-generic"
    assert {"e1000", "e1000e", "igb", "ixgbe", "ahci", "virtio_net"} <= set(result.modules)
    assert result.compression == "xz"
    assert result.size_bytes < MAX_INITRD
    serial, elapsed = boot_selftest(result, tmp_path / "serial.log")
    assert_selftest_passed(result, serial)
    print(f"generic selftest boot: {elapsed:.1f} s to poweroff")
