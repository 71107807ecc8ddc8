"""apt output parsing, kernel package names and architecture checks (no apt run)."""

from __future__ import annotations

import pytest

from metalflow.installenv import debs
from metalflow.installenv.errors import InstallEnvError

SHOW = """Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Architecture: amd64
Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel
 .
 and modules for use on cloud platforms.

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Architecture: amd64
"""


def test_parse_stanzas() -> None:
    first, second = debs.parse_stanzas(SHOW)
    assert first["Package"] == "linux-image-cloud-amd64"
    assert first["Description"] == "Linux for x86-64 cloud (meta-package)"
    assert second == {
        "Package": "busybox-static",
        "Version": "1:1.35.0-4+deb12u1+b1",
        "Architecture": "amd64",
    }


@pytest.mark.parametrize(
    ("depends", "expected"),
    [
        ("linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)", "linux-image-6.1.0-57-cloud-amd64"),
        (
            "initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-57-amd64 (= 6.1.192-3)",
            "linux-image-6.1.0-57-amd64",
        ),
    ],
)
def test_real_kernel_package(depends: str, expected: str) -> None:
    assert debs.real_kernel_package(depends, "linux-image-amd64") == expected


def test_a_metapackage_without_a_kernel_is_an_error() -> None:
    with pytest.raises(InstallEnvError, match="run apt-get update"):
        debs.real_kernel_package("linux-image-cloud-amd64-signed", "linux-image-cloud-amd64")


def test_deb_file_names_quote_the_epoch() -> None:
    package = debs.Package("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64")
    assert package.deb_name == "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"


def test_flavours_per_architecture() -> None:
    assert debs.arch_info("x86_64", "cloud").kernels["cloud"] == "linux-image-cloud-amd64"
    assert debs.arch_info("x86_64", "generic").kernels["generic"] == "linux-image-amd64"
    assert debs.arch_info("arm64", "generic").kernels["generic"] == "linux-image-arm64"


def test_unknown_architecture_names_the_option_and_choices() -> None:
    with pytest.raises(InstallEnvError, match=r"--arch 'riscv64' .* arm64, x86_64"):
        debs.arch_info("riscv64", "cloud")


def test_arm64_has_no_cloud_kernel() -> None:
    with pytest.raises(InstallEnvError, match=r"--kernel 'cloud' does not exist for --arch arm64"):
        debs.arch_info("arm64", "cloud")


def test_unknown_flavour_names_the_choices() -> None:
    with pytest.raises(InstallEnvError, match="use one of: cloud, generic"):
        debs.arch_info("x86_64", "rt")


def test_error_line_prefers_apt_errors_over_warnings() -> None:
    stderr = (
        "E: Can't find a source to download version '9' of 'libc6:amd64'\n"
        "W: Download is performed unsandboxed as root\n"
    )
    assert (
        debs.error_line(stderr) == "E: Can't find a source to download version '9' of 'libc6:amd64'"
    )
    assert debs.error_line("something\nlast words\n") == "last words"
    assert debs.error_line("") == "(no output)"
