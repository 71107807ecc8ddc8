"""`metalflow up`: run the server in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from metalflow import installenv
from metalflow.boot.dhcp.network import DhcpMode
from metalflow.boot.errors import BootSetupError
from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import CliError, ExitCode
from metalflow.config import ScriptToken, Settings, TlsMode
from metalflow.errors import validation_message
from metalflow.tls import TlsSetupError

OPTIONS = {
    "data_dir": "--data-dir",
    "database": "--database",
    "http": "--http",
    "https": "--https",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "tls": "--tls",
    "roles": "--roles",
    "interface": "--interface",
    "dhcp_mode": "--dhcp-mode",
    "dhcp_pool": "--dhcp-pool",
    "boot_config": "--boot-config",
    "public_url": "--public-url",
    "kernel": "--kernel",
    "initrd": "--initrd",
    "boot_dir": "--boot-dir",
    "discovery": "--discovery",
    "discovery_networks": "--discovery-networks",
    "discovery_rate_per_address": "--discovery-rate-per-address",
    "discovery_rate": "--discovery-rate",
    "script_token": "--script-token",
    "boot_token_ttl": "--boot-token-ttl",
    "script_token_any_address": "--script-token-any-address",
    "ipv6_ra": "--ipv6-ra",
    "metadata_port": "--metadata-port",
    "metadata_on_api_port": "--metadata-on-api-port",
    "metadata_trusted_proxies": "--metadata-trusted-proxy",
    "power_sync_interval": "--power-sync-interval",
    "power_workers": "--power-workers",
}
METADATA_PANEL = "Metadata service"


POWER_PANEL = "BMC power"
TLS_PANEL = "HTTPS (the Metal API's clients)"
BOOT_PANEL = "Boot services"


def up(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where SQLite, keys and tokens live.", show_default=False),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL, e.g. postgresql://...; default is SQLite in the data dir.",
            show_default=False,
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR:PORT", help="Address of the API and boot HTTP server.", show_default=False
        ),
    ] = None,
    https: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR:PORT",
            help="Also serve the API over HTTPS here (packet-python and equinix-metal need it);"
            " machines keep booting over --http.",
            show_default=False,
            rich_help_panel=TLS_PANEL,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="PEM certificate (chain) of the --https listener.",
            show_default=False,
            rich_help_panel=TLS_PANEL,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="PEM private key of --tls-cert.",
            show_default=False,
            rich_help_panel=TLS_PANEL,
        ),
    ] = None,
    tls: Annotated[
        TlsMode | None,
        typer.Option(
            help="self-signed: a CA of the data dir's own (DATA_DIR/tls/ca.pem, give it to"
            " clients) signs the --https certificate; made once, kept.",
            show_default=False,
            rich_help_panel=TLS_PANEL,
        ),
    ] = None,
    roles: Annotated[
        str | None,
        typer.Option(
            metavar="ROLE[,ROLE...]",
            help="What this process runs: api (/api/v1 routes), boot (DHCP, TFTP and RA with"
            " --interface, the /boot routes), metadata (the metadata port, --metadata-on-api-port),"
            " controller (timeout and retry sweeps, event and audit pruning), power (power jobs,"
            " BMC sync)."
            " /healthz and /metrics are always served. [default: all]",
            show_default=False,
        ),
    ] = None,
    interface: Annotated[
        str | None,
        typer.Option(
            metavar="IFACE",
            help="Run DHCP and TFTP on this interface (its IPv4 network is served).",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    dhcp_mode: Annotated[
        DhcpMode | None,
        typer.Option(
            help="reservation: full DHCP; proxy: boot options beside the site's DHCP; off.",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    dhcp_pool: Annotated[
        str | None,
        typer.Option(
            metavar="START-END",
            help="Addresses for machines not in inventory (reservation mode).",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    boot_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML file with `networks:` (several subnets, relays, options, pools).",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="URL machines reach this server at (default http://INTERFACE_IP:PORT).",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    kernel: Annotated[
        Path | None,
        typer.Option(
            help="Install environment kernel [default: what `metalflow installenv build` built"
            " in the data dir].",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    initrd: Annotated[
        Path | None,
        typer.Option(
            help="Install environment initramfs [default: as for --kernel].",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    boot_dir: Annotated[
        Path | None,
        typer.Option(
            help="More files served over TFTP and under /boot/assets/.",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    discovery: Annotated[
        bool | None,
        typer.Option(
            "--discovery/--no-discovery",
            help="Netboot machines not in inventory into the install environment.",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    discovery_networks: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NETWORK[,NETWORK...]",
            help="Only machines calling from these networks may register through discovery"
            " (repeatable). [default: any]",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    discovery_rate_per_address: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Discoveries per minute from one address; more are refused (429). [default: 10]",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    discovery_rate: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Discoveries per minute from all addresses together. [default: 100]",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    script_token: Annotated[
        ScriptToken | None,
        typer.Option(
            help="Token in install scripts: boot (of the workflow run, short-lived, exchanged"
            " once by the agent) or agent (the machine's agent token, as Tinkerbell).",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    boot_token_ttl: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="How long a boot token waits for its exchange. [default: 1800]",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    script_token_any_address: Annotated[
        bool | None,
        typer.Option(
            "--script-token-any-address/--no-script-token-any-address",
            help="Serve install scripts to any address, not only to the one metalflow's DHCP"
            " gave the MAC (DHCP relays, foreign DHCP servers).",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    ipv6_ra: Annotated[
        bool | None,
        typer.Option(
            "--ipv6-ra/--no-ipv6-ra",
            help="Answer netbooting machines' IPv6 router solicitations (saves iPXE ~13 s per"
            " boot; announces no router, no prefix). Default on.",
            show_default=False,
            rich_help_panel=BOOT_PANEL,
        ),
    ] = None,
    metadata_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Port of the EC2/Equinix-style metadata service (0: off). [default: 50061]",
            show_default=False,
            rich_help_panel=METADATA_PANEL,
        ),
    ] = None,
    metadata_on_api_port: Annotated[
        bool | None,
        typer.Option(
            "--metadata-on-api-port/--no-metadata-on-api-port",
            help="Also serve the metadata paths on the --http port.",
            show_default=False,
            rich_help_panel=METADATA_PANEL,
        ),
    ] = None,
    metadata_trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NETWORK",
            help="A proxy whose X-Forwarded-For names the caller (repeatable).",
            show_default=False,
            rich_help_panel=METADATA_PANEL,
        ),
    ] = None,
    power_sync_interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Read every BMC's power state this often (0: never). [default: 60]",
            show_default=False,
            rich_help_panel=POWER_PANEL,
        ),
    ] = None,
    power_workers: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="BMC calls (power jobs and sync reads) at once. [default: 32]",
            show_default=False,
            rich_help_panel=POWER_PANEL,
        ),
    ] = None,
) -> None:
    """Run the metalflow server (API, boot services, controllers) until interrupted."""
    given: dict[str, Any] = {
        "data_dir": data_dir or cli_context(ctx).data_dir,
        "database": database,
        "http": http,
        "https": https,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls": tls,
        "roles": roles,
        "interface": interface,
        "dhcp_mode": dhcp_mode,
        "dhcp_pool": dhcp_pool,
        "boot_config": boot_config,
        "public_url": public_url,
        "kernel": kernel,
        "initrd": initrd,
        "boot_dir": boot_dir,
        "discovery": discovery,
        "discovery_networks": _comma_separated(discovery_networks),
        "discovery_rate_per_address": discovery_rate_per_address,
        "discovery_rate": discovery_rate,
        "script_token": script_token,
        "boot_token_ttl": boot_token_ttl,
        "script_token_any_address": script_token_any_address,
        "ipv6_ra": ipv6_ra,
        "metadata_port": metadata_port,
        "metadata_on_api_port": metadata_on_api_port,
        "metadata_trusted_proxies": metadata_trusted_proxy,
        "power_sync_interval": power_sync_interval,
        "power_workers": power_workers,
    }
    try:
        settings = Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise CliError(settings_error(exc), ExitCode.BAD_INPUT) from None
    if settings.kernel is None and settings.initrd is None:
        found = installenv.built(settings.data_dir)
        if found is not None:
            settings = settings.model_copy(
                update={"kernel": found.kernel_path, "initrd": found.initrd_path}
            )
    from metalflow.server import serve

    try:
        serve(settings)
    except (BootSetupError, TlsSetupError) as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None


def _comma_separated(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def settings_error(exc: ValidationError) -> str:
    """The first invalid setting, named as the option (or environment variable) that set it."""
    error = exc.errors()[0]
    if not error["loc"]:
        return validation_message(error)
    name = str(error["loc"][0])
    option = OPTIONS.get(name, f"METALFLOW_{name.upper()}")
    message = validation_message(error)
    return message if option in message else f"{option}: {message}"
