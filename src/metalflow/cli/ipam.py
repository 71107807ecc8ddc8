"""`metalflow ipam`: prefixes, allocations from them, and how full they are."""

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
