"""The `metalflow` command: one sub-command group per noun, plus the everyday verbs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from metalflow.cli import (
    apply,
    cloud,
    dhcp,
    installenv,
    ipam,
    lifecycle,
    machine,
    power,
    template,
    tenancy,
    up,
    workflow,
)
from metalflow.cli.context import CliContext, cli_context
from metalflow.cli.exit_codes import CliError
from metalflow.cli.output import Output, OutputFormat
from metalflow.cli.sandbox import sandbox

DEFAULT_URL = "http://127.0.0.1:7080"


class RootGroup(TyperGroup):
    """Reports a `CliError` from any command as one line on stderr and exits with its code."""

    def invoke(self, ctx: Any) -> Any:  # click's Context, which typer may vendor
        try:
            return super().invoke(ctx)
        except CliError as exc:
            cli_context(ctx).out.error(exc.message)
            raise typer.Exit(exc.code) from None


app = typer.Typer(
    cls=RootGroup,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="metalflow: bare-metal provisioning engine.",
)
app.add_typer(machine.app, name="machine")
app.add_typer(template.app, name="template")
app.add_typer(workflow.app, name="workflow")
app.add_typer(dhcp.app, name="dhcp")
app.add_typer(installenv.app, name="installenv")
app.add_typer(power.power_app, name="power")
app.add_typer(power.bmc_app, name="bmc")
app.add_typer(ipam.app, name="ipam")
app.add_typer(tenancy.user_app, name="user")
app.add_typer(tenancy.org_app, name="org")
app.add_typer(tenancy.project_app, name="project")
app.add_typer(tenancy.key_app, name="key")
app.add_typer(cloud.metro_app, name="metro")
app.add_typer(cloud.plan_app, name="plan")
app.add_typer(cloud.os_app, name="os")
app.command("capacity")(cloud.capacity)
app.command("audit")(tenancy.audit)
app.command("login")(tenancy.login)
app.command("up")(up.up)
app.command("apply")(apply.apply)
app.command("provision")(lifecycle.provision)
app.command("deprovision")(lifecycle.deprovision)
app.command("agent-token")(lifecycle.agent_token)
app.command("sandbox")(sandbox)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="METALFLOW_URL", help="URL of the metalflow API.")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="METALFLOW_TOKEN",
            help="API token; default is the admin-token file in the data dir.",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="METALFLOW_DATA_DIR",
            help="Data directory holding admin-token (default metalflow-data).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="Output format.")
    ] = OutputFormat.TABLE,
) -> None:
    cli = CliContext(url=url, token=token, data_dir=data_dir, out=Output(output))
    ctx.obj = cli
    ctx.call_on_close(cli.close)


def hoist_output_option(argv: list[str]) -> list[str]:
    """`metalflow machine list -o json` works as `metalflow -o json machine list` does.

    `-o/--output` belongs to the root (one Output for every command), and Click only takes a
    group's options before the sub-command; operators type it after the verb, as with kubectl.
    """
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        if arg in ("-o", "--output"):
            hoisted.extend(argv[index : index + 2])
            index += 2
            continue
        if arg.startswith(("--output=", "-o")):
            hoisted.append(arg)
        else:
            rest.append(arg)
        index += 1
    return hoisted + rest


def main() -> None:
    app(args=hoist_output_option(sys.argv[1:]), prog_name="metalflow")
