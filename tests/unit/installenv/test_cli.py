"""`metalflow installenv build`: output and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from metalflow.cli import RootGroup, installenv
from metalflow.cli.context import CliContext
from metalflow.cli.output import Output, OutputFormat
from metalflow.installenv import BuildResult, Compression, InstallEnvError


def invoke(*args: str) -> Result:
    """Run the sub-app under a root like `metalflow`'s (one-line errors, a CLI context)."""
    root = typer.Typer(cls=RootGroup)
    root.add_typer(installenv.app, name="installenv")

    @root.callback()
    def callback(ctx: typer.Context, output: OutputFormat = OutputFormat.TABLE) -> None:
        ctx.obj = CliContext(url="http://x", token=None, data_dir=None, out=Output(output))

    # Wide enough that a long temporary path (as under pytest-xdist) is not wrapped.
    return CliRunner().invoke(root, list(args), env={"COLUMNS": "200"})


def result(tmp_path: Path) -> BuildResult:
    return BuildResult(
        kernel_path=tmp_path / "vmlinuz",
        initrd_path=tmp_path / "initrd.img",
        size_bytes=10_800_000,
        kernel_bytes=14_200_000,
        kernel_version="6.1.0-57-cloud-amd64",
        packages={"busybox-static": "1:1.35.0-4"},
        modules=("virtio_ring", "virtio_net"),
        compression=Compression.GZIP,
        warnings=("kernel has no module ahci",),
        seconds=12.34,
    )


def test_build_prints_paths_sizes_and_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_build(data_dir: Path, **kwargs: Any) -> BuildResult:
        calls.append({"data_dir": data_dir, **kwargs})
        return result(tmp_path)

    monkeypatch.setattr(installenv, "build_env", fake_build)
    out = invoke("installenv", "build", "--data-dir", str(tmp_path), "--kernel", "generic")
    assert out.exit_code == 0, out.output
    assert f"kernel  {tmp_path / 'vmlinuz'}  (14.2 MB, 6.1.0-57-cloud-amd64)" in out.stdout
    assert f"initrd  {tmp_path / 'initrd.img'}  (10.8 MB, gzip)" in out.stdout
    assert "built in 12.3 s; 2 kernel modules" in out.stdout
    assert "warning: kernel has no module ahci" in out.stderr
    assert calls == [
        {
            "data_dir": tmp_path,
            "kernel": "generic",
            "arch": "x86_64",
            "force": False,
            "compression": None,
        }
    ]


def test_json_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installenv, "build_env", lambda *a, **k: result(tmp_path))
    out = invoke("--output", "json", "installenv", "build", "--force")
    assert out.exit_code == 0, out.output
    assert '"initrd_bytes": 10800000' in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "riscv64"], "--arch 'riscv64' is not supported"),
        (["--kernel", "rt"], "--kernel 'rt' does not exist for --arch x86_64"),
        (["--arch", "arm64"], "--kernel 'cloud' does not exist for --arch arm64"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    out = invoke("installenv", "build", "--data-dir", str(tmp_path), *args)
    assert out.exit_code == 2
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: ")
    assert message in out.stderr
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_build_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> BuildResult:
        raise InstallEnvError("apt-get download failed: ...; run apt-get update")

    monkeypatch.setattr(installenv, "build_env", failing)
    out = invoke("installenv", "build", "--data-dir", str(tmp_path))
    assert out.exit_code == 2
    assert out.stderr == "error: apt-get download failed: ...; run apt-get update\n"
