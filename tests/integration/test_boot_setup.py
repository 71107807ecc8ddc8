"""`metalflow up` refuses bad boot settings before it writes anything: one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

METALFLOW = str(Path(sys.executable).with_name("metalflow"))


def up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METALFLOW, "up", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--interface", "mfnosuch0"], None, "--interface mfnosuch0: interface 'mfnosuch0' has"),
        (["--interface", "lo", "--dhcp-pool", "127.0.0.9"], None, "--dhcp-pool must be START-END"),
        (
            ["--interface", "lo", "--dhcp-pool", "192.0.2.10-192.0.2.20"],
            None,
            "--dhcp-pool address 192.0.2.10 is outside 127.0.0.0/8",
        ),
        (["--kernel", "/nonexistent/vmlinuz"], None, "--kernel /nonexistent/vmlinuz: no such file"),
        (["--public-url", "ftp://x"], None, "--public-url must be an http:// or https:// URL"),
        (
            ["--interface", "lo"],
            "networks:\n  - subnet: 192.0.2.0/24\n    lease_time: 5\n",
            "networks[0].lease_time: Input should be greater than or equal to 60",
        ),
        (
            ["--interface", "lo"],
            "networks:\n  - subnet: 192.0.2.0/24\n    gateway: 10.1.1.1\n",
            "networks[0]: gateway 10.1.1.1 is outside subnet 192.0.2.0/24",
        ),
        (["--interface", "lo"], "networks: [\n", "not YAML"),
    ],
)
def test_bad_boot_settings_exit_2_naming_the_setting(
    tmp_path: Path, args: list[str], config: str | None, message: str
) -> None:
    if config is not None:
        path = tmp_path / "boot.yaml"
        path.write_text(config)
        args = [*args, "--boot-config", str(path)]
    result = up(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "nothing is written before the settings are checked"
