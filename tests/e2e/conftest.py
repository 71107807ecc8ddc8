"""Session fixtures for the end-to-end tests: the test OS image, built once per set of inputs,
and the install environment with the real agent."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from metalflow.installenv import BuildResult, build
from metalflow.sandbox.osimage import MissingPrerequisite, OsImage, build_os_image
from metalflow.sandbox.vm import OVMF_CODE, OVMF_VARS, QEMU
from tests.prerequisites import needs_tool, unavailable

STABLE_DIR = Path("/tmp/metalflow-installenv-test")
"""Shared with tests/integration/test_installenv.py: the .deb cache is reused."""
CACHE_ENV = "METALFLOW_E2E_CACHE"
DEFAULT_CACHE = Path("/tmp/metalflow-e2e-cache")


def pytest_collection_modifyitems(items: Sequence[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`) every test here runs on one worker: one VM at a
    time, and the session fixtures below build once, not once per worker."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("e2e"))


@pytest.fixture(scope="session")
def image_builder() -> Callable[[str], OsImage]:
    """build_os_image into the shared cache (env METALFLOW_E2E_CACHE), per extra command line."""
    cache_dir = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    built: dict[str, OsImage] = {}

    def build(extra_cmdline: str) -> OsImage:
        if extra_cmdline not in built:
            try:
                built[extra_cmdline] = build_os_image(cache_dir, extra_cmdline=extra_cmdline)
            except MissingPrerequisite as exc:
                unavailable(str(exc))
        return built[extra_cmdline]

    return build


@pytest.fixture(scope="session")
def os_image(image_builder: Callable[[str], OsImage]) -> OsImage:
    """The test OS image with the default kernel command line."""
    return image_builder("")


@pytest.fixture(scope="session")
def qemu() -> None:
    """QEMU and OVMF are present (their absence fails under CI)."""
    needs_tool(QEMU, "qemu-system-x86")
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.is_file():
            unavailable(f"{path} not found: install the Debian package ovmf")


@pytest.fixture(scope="session")
def install_env() -> BuildResult:
    """The install environment with the real agent (rebuilt only when its inputs change)."""
    needs_tool("apt-get", "apt")
    needs_tool("dpkg-deb", "dpkg")
    data = STABLE_DIR / "e2e-data"
    cache = data / "installenv" / "cache"
    if not cache.exists():
        (STABLE_DIR / "data" / "installenv" / "cache").mkdir(parents=True, exist_ok=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(STABLE_DIR / "data" / "installenv" / "cache")
    return build(data)
