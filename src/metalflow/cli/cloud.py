"""`metalflow metro|plan|os|capacity`: the provider's catalogue (written with `metalflow apply -f`,
kinds Metro, Plan and OperatingSystem), which machines a plan matches and why others miss it,
and the free machines per metro and plan."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from metalflow.cli import render
from metalflow.cli.client import resource
from metalflow.cli.context import cli_context

Json = dict[str, Any]

metro_app = typer.Typer(no_args_is_help=True, help="Metros: where machines stand.")
plan_app = typer.Typer(no_args_is_help=True, help="Plans: kinds of server, matched from hardware.")
os_app = typer.Typer(no_args_is_help=True, help="Operating systems devices are installed with.")

Code = Annotated[str, typer.Argument(help="The metro's code, e.g. am.")]
PlanSlug = Annotated[str, typer.Argument(help="The plan's slug, e.g. c3.small.x86.")]
OsSlug = Annotated[str, typer.Argument(help="The operating system's slug, e.g. ubuntu_24_04.")]


@metro_app.command("list")
def list_metros(ctx: typer.Context) -> None:
    """List metros with the machines standing in each."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("metros")), _metros)


@metro_app.command("show")
def show_metro(ctx: typer.Context, code: Code) -> None:
    """One metro, with its BGP route servers."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("metros", code)), _metro)


@metro_app.command("delete")
def delete_metro(ctx: typer.Context, code: Code) -> None:
    """Delete a metro no machine stands in."""
    cli = cli_context(ctx)
    cli.api.delete(resource("metros", code))
    cli.out.write(f"metro/{code} deleted\n")


@plan_app.command("list")
def list_plans(ctx: typer.Context) -> None:
    """List plans with the machines classified into each."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("plans")), _plans)


@plan_app.command("show")
def show_plan(ctx: typer.Context, slug: PlanSlug) -> None:
    """One plan: its specs as tenants see them and the rule machines are matched by."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("plans", slug)), _plan)


@plan_app.command("delete")
def delete_plan(ctx: typer.Context, slug: PlanSlug) -> None:
    """Delete a plan no device and no operating system uses; its machines are re-classified."""
    cli = cli_context(ctx)
    cli.api.delete(resource("plans", slug))
    cli.out.write(f"plan/{slug} deleted\n")


@plan_app.command("check")
def check_plan(ctx: typer.Context, slug: PlanSlug) -> None:
    """The machines the plan's rule matches, and every other machine with why it misses."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("plans", slug, "check")), _check)


@os_app.command("list")
def list_operating_systems(ctx: typer.Context) -> None:
    """List operating systems and the template each is installed with."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("operating-systems")), _operating_systems)


@os_app.command("show")
def show_operating_system(ctx: typer.Context, slug: OsSlug) -> None:
    """One operating system: its image, plans and install template."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("operating-systems", slug)), _operating_system)


@os_app.command("delete")
def delete_operating_system(ctx: typer.Context, slug: OsSlug) -> None:
    """Delete an operating system no device runs (and its generated template)."""
    cli = cli_context(ctx)
    cli.api.delete(resource("operating-systems", slug))
    cli.out.write(f"os/{slug} deleted\n")


def capacity(ctx: typer.Context) -> None:
    """Ready machines with no project and no hardware reservation, per metro and plan."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("capacity")), _capacity)


def _metros(data: Json) -> RenderableType:
    grid = render.listing("CODE", "NAME", "COUNTRY", "MACHINES", "BGP PEERS")
    for metro in data["items"]:
        grid.add_row(
            metro["code"],
            metro["name"],
            metro["country"],
            str(metro["machines"]),
            str(len(metro["bgp_peers"])),
        )
    return grid


def _peer(peer: Json) -> str:
    return f"IPv{peer['address_family']} AS{peer['peer_as']} {', '.join(peer['peer_ips'])}"


def _metro(data: Json) -> RenderableType:
    return render.fields(
        [
            ("Code", data["code"]),
            ("Name", data["name"]),
            ("Country", data["country"]),
            ("Machines", str(data["machines"])),
            ("BGP peers", "; ".join(_peer(peer) for peer in data["bgp_peers"]) or render.NONE),
            ("Id", data["id"]),
        ]
    )


def _plans(data: Json) -> RenderableType:
    grid = render.listing("SLUG", "NAME", "CLASS", "LINE", "MACHINES", "WIPE")
    for plan in data["items"]:
        grid.add_row(
            plan["slug"],
            plan["name"],
            plan["class"],
            plan["line"],
            str(plan["machines"]),
            plan["wipe"],
        )
    return grid


def _set(values: Json) -> str:
    """A rule or specs part as `key=value` pairs, leaving out what asks nothing."""
    shown = {key: value for key, value in values.items() if value not in (None, [], {})}
    return " ".join(f"{key}={json.dumps(value)}" for key, value in shown.items()) or render.NONE


def _plan(data: Json) -> RenderableType:
    specs = data["specs"]
    return render.fields(
        [
            ("Slug", data["slug"]),
            ("Name", data["name"]),
            ("Class", data["class"]),
            ("Line", data["line"]),
            ("Description", render.text(data["description"])),
            ("Machines", str(data["machines"])),
            ("Wipe", data["wipe"]),
            ("Rule", _set(data["rule"])),
            ("Specs", _set({key: value for key, value in specs.items() if key != "features"})),
            ("Features", _set(specs["features"])),
            ("Id", data["id"]),
        ]
    )


def _check(data: Json) -> RenderableType:
    matching = render.listing("MACHINE", "STATE", "METRO", "CLASSIFIED AS")
    for found in data["matching"]:
        matching.add_row(
            found["name"],
            render.state(found["state"]),
            render.text(found["metro"]),
            render.text(found["plan"]),
        )
    misses = render.listing("MACHINE", "STATE", "METRO", "WHY NOT")
    for miss in data["near_misses"]:
        misses.add_row(
            miss["name"],
            render.state(miss["state"]),
            render.text(miss["metro"]),
            "; ".join(miss["reasons"]),
        )
    plan = data["plan"]
    parts: list[RenderableType] = [
        Text(f"{len(data['matching'])} machine(s) match plan {plan}", style="bold")
    ]
    if data["matching"]:
        parts.append(matching)
    parts.append(Text(f"{len(data['near_misses'])} machine(s) miss it", style="bold"))
    if data["near_misses"]:
        parts.append(misses)
    return Group(*parts)


def _operating_systems(data: Json) -> RenderableType:
    grid = render.listing("SLUG", "NAME", "DISTRO", "VERSION", "PLANS", "TEMPLATE")
    for os_row in data["items"]:
        grid.add_row(
            os_row["slug"],
            os_row["name"],
            os_row["distro"],
            os_row["version"],
            ",".join(os_row["provisionable_on"]) or render.NONE,
            os_row["install_template"],
        )
    return grid


def _operating_system(data: Json) -> RenderableType:
    generated = " (generated)" if data["template"] is None else ""
    return render.fields(
        [
            ("Slug", data["slug"]),
            ("Name", data["name"]),
            ("Distro", f"{data['distro']} {data['version']}"),
            ("Provisionable on", ", ".join(data["provisionable_on"]) or render.NONE),
            ("Image", render.text(data["image_url"])),
            ("Checksum", render.text(data["image_checksum"])),
            ("Template", data["install_template"] + generated),
            ("cloud-init", render.text(data["cloud_init"])),
            ("Id", data["id"]),
        ]
    )


def _capacity(data: Json) -> RenderableType:
    grid = render.listing("METRO", "PLAN", "AVAILABLE")
    for entry in data["items"]:
        grid.add_row(entry["metro"], entry["plan"], str(entry["available"]))
    return grid
