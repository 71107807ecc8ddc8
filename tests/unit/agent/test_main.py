"""The command line entry point: bad configuration is a message and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalflow.agent.__main__ import main
from metalflow.agent.actions.base import ActionError, Context
from metalflow.agent.actions.disk import command
from metalflow.agent.system import System


def test_missing_token_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("quiet metalflow.url=http://127.0.0.1:9\n")
    assert main(["--cmdline", str(cmdline)]) == 2
    err = capsys.readouterr().err
    assert "no token" in err and "metalflow.token=" in err and "Traceback" not in err


def test_bad_wait_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--url", "http://127.0.0.1:9", "--token", "t", "--wait", "900", "--cmdline", "/x"]
    assert main(argv) == 2
    assert "--wait must be between 0 and 300" in capsys.readouterr().err


class Bare(System):
    def which(self, name: str) -> str | None:
        return None


def test_kexec_load_of_a_file_that_is_no_kernel_fails(tmp_path: Path) -> None:
    """The system call really runs: EPERM without CAP_SYS_BOOT, ENOEXEC/EINVAL with it."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"not a kernel")
    with pytest.raises(OSError):
        System().kexec_load(str(kernel), None, "console=ttyS0", lambda _l: None)


def test_cexec_command_forms() -> None:
    def ctx(**env: str) -> Context:
        return Context(env=env, log=lambda _l: None, system=Bare(), action="cexec")

    assert command(ctx(CMD_LINE="grub-install --root-directory=/boot /dev/sda")) == [
        "grub-install",
        "--root-directory=/boot",
        "/dev/sda",
    ]
    assert command(ctx(CMD_LINE="a; b", DEFAULT_INTERPRETER="/bin/sh -c")) == [
        "/bin/sh",
        "-c",
        "a; b",
    ]
    with pytest.raises(ActionError, match="CMD_LINE cannot be split"):
        command(ctx(CMD_LINE="echo 'open"))
    with pytest.raises(ActionError, match="CMD_LINE is not set"):
        command(ctx())
