"""`metalflow ipam`: prefixes, allocations from them, and how full they are; projects'
reservations, the addresses they assign to machines, and brought prefixes (BYO)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from metalflow.cli import render
from metalflow.cli.client import resource
from metalflow.cli.context import CliContext, cli_context

Json = dict[str, Any]

app = typer.Typer(no_args_is_help=True, help="IP address management: prefixes and allocations.")
prefix_app = typer.Typer(no_args_is_help=True, help="The provider's prefixes.")
app.add_typer(prefix_app, name="prefix")
byo_app = typer.Typer(no_args_is_help=True, help="Prefixes that tenants bring (provider only).")
app.add_typer(byo_app, name="byo")

HOLDERS = ("pool", "reservation")
BAR_WIDTH = 20


@prefix_app.command("create")
def create(
    ctx: typer.Context,
    cidr: Annotated[str, typer.Argument(help="The prefix, e.g. 198.51.100.0/24 or 2001:db8::/32.")],
    kind: Annotated[str, typer.Option(help="public, private or global.")] = "public",
    metro: Annotated[str | None, typer.Option(help="Metro code, e.g. am.")] = None,
    project: Annotated[str | None, typer.Option(help="Owning project id.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    provisioning: Annotated[
        bool, typer.Option(help="Allocate the provisioning network's DHCP reservations here.")
    ] = False,
    byo: Annotated[
        bool, typer.Option(help="Brought by --project: its reservation, for no one else.")
    ] = False,
    allow_project: Annotated[
        list[str] | None, typer.Option(help="Another project that may use a --byo prefix.")
    ] = None,
) -> None:
    """Add a prefix; it nests inside the smallest pool that holds it."""
    cli = cli_context(ctx)
    body = {
        "cidr": cidr,
        "kind": kind,
        "metro": metro,
        "project": project,
        "tags": tag or [],
        "description": description,
        "provisioning": provisioning,
        "byo": byo,
        "allowed_projects": allow_project or [],
    }
    created = cli.api.post(
        resource("ipam", "prefixes"), json=body, check="metalflow ipam prefix list"
    )
    _emit_prefix(cli, created)


@prefix_app.command("list")
def list_prefixes(
    ctx: typer.Context,
    family: Annotated[int | None, typer.Option(help="4 or 6.")] = None,
    kind: Annotated[str | None, typer.Option(help="public, private or global.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pool, reservation, assignment or quarantine.")
    ] = None,
    metro: Annotated[str | None, typer.Option(help="Metro code.")] = None,
    project: Annotated[str | None, typer.Option(help="Project id.")] = None,
) -> None:
    """List prefixes and what was allocated from them."""
    cli = cli_context(ctx)
    params = {"family": family, "kind": kind, "status": status, "metro": metro, "project": project}
    cli.out.emit(cli.api.get(resource("ipam", "prefixes"), params), _listing)


@prefix_app.command("show")
def show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Id or CIDR.")]) -> None:
    """One prefix, with its usage when it hands out blocks."""
    cli = cli_context(ctx)
    _emit_prefix(cli, cli.api.get(resource("ipam", "prefixes", ref)))


@prefix_app.command("delete")
def delete(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Id or CIDR.")]) -> None:
    """Delete a pool that hands out nothing."""
    cli = cli_context(ctx)
    cli.api.delete(resource("ipam", "prefixes", ref))
    cli.out.write(f"prefix/{ref} deleted\n")


@app.command("allocate")
def allocate(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The pool or reservation (id or CIDR).")],
    size: Annotated[int | None, typer.Option(help="Prefix length to allocate, e.g. 31.")] = None,
    cidr: Annotated[str | None, typer.Option(help="A given block instead of a size.")] = None,
    best_fit: Annotated[
        bool, typer.Option(help="Take the smallest free block that fits, not the lowest.")
    ] = False,
    reserve: Annotated[
        bool, typer.Option(help="A reservation (it hands out addresses) instead of an assignment.")
    ] = False,
    project: Annotated[str | None, typer.Option(help="Project id.")] = None,
    machine: Annotated[str | None, typer.Option(help="Machine id (for an assignment).")] = None,
) -> None:
    """Allocate a block from a pool or reservation."""
    cli = cli_context(ctx)
    body = {
        "prefixlen": size,
        "cidr": cidr,
        "strategy": "best-fit" if best_fit else "first-fit",
        "status": "reservation" if reserve else "assignment",
        "project": project,
        "machine": machine,
    }
    allocated = cli.api.post(
        resource("ipam", "prefixes", ref, "allocations"),
        json=body,
        check=f"metalflow ipam prefix list --status {body['status']}",
    )
    _emit_prefix(cli, allocated)


@app.command("release")
def release(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Id or CIDR.")]) -> None:
    """Release a reservation or assignment into quarantine."""
    cli = cli_context(ctx)
    cli.api.delete(resource("ipam", "prefixes", ref))
    cli.out.write(f"prefix/{ref} released\n")


@app.command("reserve")
def reserve(
    ctx: typer.Context,
    project: Annotated[str, typer.Option(help="The project id that reserves.")],
    size: Annotated[int, typer.Option(help="Prefix length, e.g. 29.")],
    kind: Annotated[str, typer.Option(help="public or private (global: provider only).")] = (
        "public"
    ),
    family: Annotated[int, typer.Option(help="4 or 6.")] = 4,
    metro: Annotated[str | None, typer.Option(help="Metro code, e.g. am.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
) -> None:
    """Reserve a block for a project from the metro's pool."""
    cli = cli_context(ctx)
    body = {
        "project": project,
        "kind": kind,
        "family": family,
        "size": size,
        "metro": metro,
        "description": description,
    }
    reserved = cli.api.post(
        resource("ipam", "reservations"), json=body, check="metalflow ipam reservations"
    )
    _emit_reservation(cli, reserved)


@app.command("reservations")
def reservations(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's.")] = None,
) -> None:
    """List reservations (a tenant sees its projects')."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("ipam", "reservations"), {"project": project}), _listing)


@app.command("reservation")
def reservation(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Reservation id or CIDR.")]
) -> None:
    """One reservation, its usage and its assignments."""
    cli = cli_context(ctx)
    _emit_reservation(cli, cli.api.get(resource("ipam", "reservations", ref)))


@app.command("assign")
def assign(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Reservation id or CIDR.")],
    machine: Annotated[str, typer.Option(help="Machine name or id.")],
    address: Annotated[
        str | None, typer.Option(help="One address, or a sub-block such as 198.51.100.8/30.")
    ] = None,
    size: Annotated[int | None, typer.Option(help="Or the first free block of this size.")] = None,
) -> None:
    """Assign an address or sub-block of a reservation to a machine of its project."""
    cli = cli_context(ctx)
    body = {"machine": machine, "address": address, "size": size}
    given = cli.api.post(
        resource("ipam", "reservations", ref, "assignments"),
        json=body,
        check=f"metalflow ipam assignments --machine {machine}",
    )
    cli.out.emit(given, _assignment_fields)


@app.command("assignments")
def assignments(
    ctx: typer.Context,
    machine: Annotated[str | None, typer.Option(help="Machine name or id.")] = None,
    reservation: Annotated[str | None, typer.Option(help="Reservation id.")] = None,
) -> None:
    """List the addresses given to machines."""
    cli = cli_context(ctx)
    params = {"machine": machine, "reservation": reservation}
    cli.out.emit(cli.api.get(resource("ipam", "assignments"), params), _assignment_listing)


@app.command("move")
def move(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Assignment id or CIDR.")],
    machine: Annotated[str, typer.Option(help="The machine to give it to (name or id).")],
) -> None:
    """Move an elastic address to another machine of its project."""
    cli = cli_context(ctx)
    moved = cli.api.patch(
        resource("ipam", "assignments", ref),
        json={"machine": machine},
        check=f"metalflow ipam assignments --machine {machine}",
    )
    cli.out.emit(moved, _assignment_fields)


@app.command("unassign")
def unassign(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Assignment id or CIDR.")]
) -> None:
    """Take an address back into its reservation."""
    cli = cli_context(ctx)
    cli.api.delete(resource("ipam", "assignments", ref))
    cli.out.write(f"assignment/{ref} unassigned\n")


@app.command("release-reservation")
def release_reservation(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Reservation id or CIDR.")]
) -> None:
    """Give a reservation back (unassign its addresses first); it is quarantined before reuse."""
    cli = cli_context(ctx)
    cli.api.delete(resource("ipam", "reservations", ref))
    cli.out.write(f"reservation/{ref} released\n")


@byo_app.command("import")
def byo_import(
    ctx: typer.Context,
    cidr: Annotated[str, typer.Argument(help="The tenant's prefix, e.g. 203.0.113.0/24.")],
    project: Annotated[str, typer.Option(help="The project id that owns it.")],
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Another project of the owner's organization that may use it."),
    ] = None,
    kind: Annotated[str, typer.Option(help="public, private or global.")] = "public",
    metro: Annotated[str | None, typer.Option(help="Metro code.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
) -> None:
    """Import a tenant's own prefix as its project's reservation."""
    cli = cli_context(ctx)
    body = {
        "cidr": cidr,
        "project": project,
        "allowed_projects": allow or [],
        "kind": kind,
        "metro": metro,
        "description": description,
    }
    imported = cli.api.post(resource("ipam", "byo"), json=body, check="metalflow ipam reservations")
    _emit_reservation(cli, imported)


@app.command("usage")
def usage(ctx: typer.Context) -> None:
    """How full each pool and reservation is."""
    cli = cli_context(ctx)
    rows = [
        {**prefix, "usage": cli.api.get(resource("ipam", "prefixes", prefix["id"], "usage"))}
        for prefix in _holders(cli)
    ]
    cli.out.emit({"items": rows, "count": len(rows)}, _usage_listing)


@app.command("tree")
def tree(ctx: typer.Context) -> None:
    """Every prefix under its parent, with utilisation bars."""
    cli = cli_context(ctx)
    prefixes = cli.api.get(resource("ipam", "prefixes"))["items"]
    usages = {
        prefix["id"]: cli.api.get(resource("ipam", "prefixes", prefix["id"], "usage"))
        for prefix in prefixes
        if prefix["status"] in HOLDERS
    }
    data = {"items": [{**p, "usage": usages.get(p["id"])} for p in prefixes]}
    cli.out.emit(data, _tree)


def _holders(cli: CliContext) -> list[Json]:
    items: list[Json] = cli.api.get(resource("ipam", "prefixes"))["items"]
    return [prefix for prefix in items if prefix["status"] in HOLDERS]


def _emit_prefix(cli: CliContext, prefix: Json) -> None:
    cli.out.emit(prefix, _fields)


def _emit_reservation(cli: CliContext, found: Json) -> None:
    cli.out.emit(found, _reservation)


def _reservation(found: Json) -> RenderableType:
    parts: list[RenderableType] = [_fields(found)]
    if found.get("assignments"):
        parts += [Text(""), _assignment_listing({"items": found["assignments"]})]
    return Group(*parts)


def _assignment_fields(found: Json) -> RenderableType:
    return render.fields(
        [
            ("ID", found["id"]),
            ("CIDR", found["cidr"]),
            ("ADDRESS", found["address"]),
            ("GATEWAY", render.text(found.get("gateway"))),
            ("MACHINE", render.text(found.get("machine"))),
            ("PROJECT", render.text(found.get("project"))),
            ("RESERVATION", render.text(found.get("parent") if found["elastic"] else None)),
        ]
    )


def _assignment_listing(data: Json) -> RenderableType:
    grid = render.listing("CIDR", "ADDRESS", "MACHINE", "PROJECT", "ELASTIC", "ID")
    for found in data["items"]:
        grid.add_row(
            found["cidr"],
            found["address"],
            render.text(found.get("machine")),
            render.text(found.get("project")),
            "yes" if found["elastic"] else "no",
            found["id"],
        )
    return grid


def _fields(prefix: Json) -> RenderableType:
    rows: list[tuple[str, str | Text]] = [
        ("ID", prefix["id"]),
        ("CIDR", prefix["cidr"]),
        ("STATUS", prefix["status"]),
        ("KIND", prefix["kind"]),
        ("PARENT", render.text(prefix.get("parent"))),
        ("PROJECT", render.text(prefix.get("project"))),
        ("MACHINE", render.text(prefix.get("machine"))),
        ("METRO", render.text(prefix.get("metro"))),
        ("TAGS", render.text(", ".join(prefix.get("tags") or []))),
    ]
    if prefix.get("byo"):
        allowed = ", ".join(prefix.get("allowed_projects") or [])
        rows.append(("BROUGHT", Text(f"yes, also for {allowed}" if allowed else "yes")))
    if prefix.get("quarantine_until"):
        rows.append(("QUARANTINE UNTIL", render.timestamp(prefix["quarantine_until"])))
    found = prefix.get("usage")
    if found:
        rows.append(("USED", _bar(found)))
        rows.append(("LARGEST FREE", render.text(_largest(found))))
    return render.fields(rows)


def _listing(data: Json) -> RenderableType:
    grid = render.listing("CIDR", "STATUS", "KIND", "METRO", "PROJECT", "MACHINE", "ID")
    for prefix in data["items"]:
        grid.add_row(
            prefix["cidr"],
            prefix["status"],
            prefix["kind"],
            render.text(prefix.get("metro")),
            render.text(prefix.get("project")),
            render.text(prefix.get("machine")),
            prefix["id"],
        )
    return grid


def _usage_listing(data: Json) -> RenderableType:
    grid = render.listing("CIDR", "STATUS", "USED", "FREE", "LARGEST FREE", "FRAGMENTED")
    for prefix in data["items"]:
        found = prefix["usage"]
        grid.add_row(
            prefix["cidr"],
            prefix["status"],
            f"{found['utilisation']:.1%}",
            str(found["free"]),
            _largest(found),
            f"{found['fragmentation']:.0%}",
        )
    return grid


def _tree(data: Json) -> RenderableType:
    items: list[Json] = data["items"]
    children: dict[str | None, list[Json]] = {}
    for prefix in items:
        children.setdefault(prefix.get("parent"), []).append(prefix)
    roots: list[RenderableType] = []

    def label(prefix: Json) -> Text:
        line = Text(f"{prefix['cidr']}  {prefix['status']}")
        if prefix.get("project"):
            line.append(f"  project {prefix['project']}")
        if prefix.get("machine"):
            line.append(f"  machine {prefix['machine']}")
        if prefix.get("usage"):
            line.append("  ").append_text(_bar(prefix["usage"]))
        return line

    def grow(node: Tree, prefix: Json) -> None:
        for child in children.get(prefix["id"], []):
            grow(node.add(label(child)), child)

    for root in children.get(None, []):
        top = Tree(label(root))
        grow(top, root)
        roots.append(top)
    return Group(*roots) if roots else Text("no prefixes")


def _bar(found: Json) -> Text:
    ratio = float(found["utilisation"])
    filled = round(ratio * BAR_WIDTH)
    style = "red" if ratio >= 0.9 else "yellow" if ratio >= 0.7 else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (BAR_WIDTH - filled), style="dim")
    bar.append(f" {ratio:.1%} of {found['total']}")
    return bar


def _largest(found: Json) -> str:
    largest = found.get("largest_free_prefixlen")
    return "none" if largest is None else f"/{largest}"
