"""`metalflow installenv build`: the kernel and initramfs machines netboot into."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import CliError, ExitCode
from metalflow.config import DEFAULT_DATA_DIR
from metalflow.installenv import BuildResult, Compression, InstallEnvError
from metalflow.installenv import build as build_env

app = typer.Typer(
    no_args_is_help=True, help="Build the install environment (kernel + initramfs with the agent)."
)


@app.command("build")
def build(
    ctx: typer.Context,
    kernel: Annotated[
        str, typer.Option(metavar="cloud|generic", help="Debian kernel flavour.")
    ] = "cloud",
    arch: Annotated[str, typer.Option(metavar="ARCH", help="Machine architecture.")] = "x86_64",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Data directory; output goes to DATA_DIR/installenv/ARCH-KERNEL/.",
            show_default=False,
        ),
    ] = None,
    compression: Annotated[
        Compression | None,
        typer.Option(
            help="gzip boots faster, xz is ~25% smaller; default gzip for cloud, xz for generic.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if nothing changed.")] = False,
) -> None:
    """Build from Debian packages (apt-get download, no root); skipped when inputs are unchanged."""
    cli = cli_context(ctx)
    directory = data_dir or cli.data_dir or DEFAULT_DATA_DIR
    try:
        result = build_env(
            directory, kernel=kernel, arch=arch, force=force, compression=compression
        )
    except InstallEnvError as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None
    for warning in result.warnings:
        cli.out.err.print(Text.assemble(("warning:", "bold yellow"), " ", warning), soft_wrap=True)
    cli.out.emit(summary(result), render)


def summary(result: BuildResult) -> dict[str, Any]:
    return {
        "kernel": str(result.kernel_path),
        "kernel_bytes": result.kernel_bytes,
        "initrd": str(result.initrd_path),
        "initrd_bytes": result.size_bytes,
        "kernel_version": result.kernel_version,
        "compression": result.compression.value,
        "modules": list(result.modules),
        "cached": result.cached,
        "seconds": result.seconds,
    }


def render(data: dict[str, Any]) -> Text:
    how = "unchanged, reused" if data["cached"] else "built"
    return Text(
        f"kernel  {data['kernel']}  ({_mb(data['kernel_bytes'])}, {data['kernel_version']})\n"
        f"initrd  {data['initrd']}  ({_mb(data['initrd_bytes'])}, {data['compression']})\n"
        f"{how} in {data['seconds']:.1f} s; {len(data['modules'])} kernel modules"
    )


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
