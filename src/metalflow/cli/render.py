"""Human-readable views of API documents: tables, detail pages and event lines."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

Json = Mapping[str, Any]

NONE = "-"
ELLIPSIS = "…"
COLUMN_GAP = "  "
MIN_COLUMN_WIDTH = 4
GZIP_MAGIC = b"\x1f\x8b"
STATE_STYLES = {
    "SUCCESS": "green",
    "FAILED": "red",
    "TIMEOUT": "red",
    "CANCELLED": "dim",
    "RUNNING": "yellow",
    "PREPARING": "cyan",
    "POST": "cyan",
    "PENDING": "blue",
}
TERMINAL_STATES = frozenset({"SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"})


def table(*headers: str) -> Table:
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        grid.add_column(header)
    return grid


class Listing:
    """A table of one line per row, built in time linear in its cells.

    Rich's `Table` measures, wraps and renders every cell as its own renderable: 26 s for
    5,000 machines. A listing measures each cell once, fits the columns to the terminal by
    truncating the widest ones with an ellipsis (rows never wrap, so `grep` and `awk` see one
    row per line, as with kubectl), and writes each row as a few segments.
    """

    def __init__(self, *headers: str) -> None:
        self.headers = headers
        self.rows: list[tuple[str | Text, ...]] = []

    def add_row(self, *cells: str | Text) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"a row of {len(self.headers)} columns has {len(cells)} cells")
        self.rows.append(cells)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        widths = fit_widths(self._natural_widths(), options.max_width)
        bold = Style(bold=True)
        yield from _row(console, [Text(header, style=bold) for header in self.headers], widths)
        for row in self.rows:
            yield from _row(console, row, widths)

    def _natural_widths(self) -> list[int]:
        widths = [cell_len(header) for header in self.headers]
        for row in self.rows:
            for index, cell in enumerate(row):
                width = cell_len(cell.plain if isinstance(cell, Text) else cell)
                if width > widths[index]:
                    widths[index] = width
        return widths


def _row(console: Console, cells: Iterable[str | Text], widths: list[int]) -> Iterator[Segment]:
    """One line of a listing: unstyled cells and the gaps between them make one segment."""
    last = len(widths) - 1
    plain: list[str] = []
    for index, cell in enumerate(cells):
        text = cell.plain if isinstance(cell, Text) else cell
        width = widths[index]
        if cell_len(text) > width:
            text = set_cell_size(text, width - 1) + ELLIPSIS
        padding = "" if index == last else " " * (width - cell_len(text)) + COLUMN_GAP
        if isinstance(cell, Text) and (cell.style or cell.spans):
            if plain:
                yield Segment("".join(plain))
                plain = []
            styled = cell.copy()
            styled.plain = text
            base = console.get_style(styled.style, default=Style.null())
            yield from Segment.apply_style(styled.render(console), base)
            plain.append(padding)
        else:
            plain.append(text + padding)
    plain.append("\n")
    yield Segment("".join(plain))


def fit_widths(natural: list[int], available: int) -> list[int]:
    """Column widths within `available` cells: the widest columns give up width first, none
    below `MIN_COLUMN_WIDTH`; a table that still does not fit wraps in the terminal rather than
    losing columns."""
    room = available - len(COLUMN_GAP) * (len(natural) - 1)
    low, high = MIN_COLUMN_WIDTH, max(natural)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(width, middle) for width in natural) <= room:
            low = middle
        else:
            high = middle - 1
    return [min(width, low) for width in natural]


def listing(*headers: str) -> Listing:
    return Listing(*headers)


class Lines:
    """Texts one per line; only a line wider than the console goes through Rich's wrapping,
    which, on one joined `Text`, cost 1.3 ms per event line."""

    def __init__(self, lines: Iterable[Text]) -> None:
        self.lines = list(lines)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        newline = Segment.line()
        for line in self.lines:
            if cell_len(line.plain) > options.max_width:
                yield from console.render(line, options)
                continue
            base = console.get_style(line.style, default=Style.null())
            yield from Segment.apply_style(line.render(console), base)
            yield newline


def state(value: str | None) -> Text:
    if not value:
        return Text(NONE)
    return Text(value, style=STATE_STYLES.get(value.upper(), ""))


def timestamp(value: str | None) -> str:
    """An ISO 8601 timestamp in local time, to the second."""
    if not value:
        return NONE
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone()
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def duration(start: str | None, end: str | None) -> str:
    """Time from `start` to `end`, or until now while still running."""
    if not start:
        return NONE
    try:
        begin = dt.datetime.fromisoformat(start)
        finish = dt.datetime.fromisoformat(end) if end else dt.datetime.now(begin.tzinfo)
    except ValueError:
        return NONE
    seconds = max(0, round((finish - begin).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return NONE
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value, index = float(num_bytes), 0
    while value >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{num_bytes} B" if index == 0 else f"{value:.1f} {units[index]}"


def text(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def fields(rows: Iterable[tuple[str, str | Text]]) -> Table:
    """`key: value` lines with aligned values."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(f"{key}:", value)
    return grid


def with_reason(value: str | None, reason: str | None) -> Text:
    return Text.assemble(state(value), f" ({reason})" if reason else "")


def event_line(event: Json) -> Text:
    """`TIME  KIND  workflow=... key=value...` for one event."""
    kind = str(event.get("kind", ""))
    line = Text.assemble((timestamp(event.get("time")), "dim"), "  ", (kind, _kind_style(kind)))
    details: dict[str, Any] = {}
    if event.get("workflow"):
        details["workflow"] = event["workflow"]
    details.update(event.get("data") or {})
    for position, (key, value) in enumerate(details.items()):
        line.append(" " if position else "  ")
        line.append(f"{key}=", style="dim")
        line.append(_value(value))
    return line


def _kind_style(kind: str) -> str:
    last = kind.rsplit(".", 1)[-1]
    if last in {"failed", "timeout", "error"}:
        return "bold red"
    if last in {"succeeded", "success", "completed", "finished"}:
        return "bold green"
    return "bold cyan"


def _value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value)


# machines


def machines(data: Json) -> RenderableType:
    grid = listing("NAME", "STATE", "ARCH", "MAC", "IP", "PROJECT", "TENANT", "METRO", "WORKFLOW")
    for machine in data["items"]:
        first = (machine.get("interfaces") or [{}])[0]
        grid.add_row(
            machine["name"],
            state(machine.get("state")),
            text(machine.get("arch")),
            text(first.get("mac")),
            text(first.get("ip")),
            text(machine.get("project")),
            text(machine.get("project_id")),
            text(machine.get("metro")),
            text(machine.get("workflow")),
        )
    return grid


def machine(data: Json) -> RenderableType:
    bmc = data.get("bmc")
    labels = ", ".join(f"{k}={v}" for k, v in (data.get("labels") or {}).items())
    summary = fields(
        [
            ("name", data["name"]),
            ("id", text(data.get("id"))),
            ("project", text(data.get("project"))),
            ("tenant", text(data.get("project_id"))),
            ("metro", text(data.get("metro"))),
            ("state", with_reason(data.get("state"), data.get("state_reason"))),
            ("arch", text(data.get("arch"))),
            ("uefi", text(data.get("uefi"))),
            ("hostname", text(data.get("hostname"))),
            ("labels", text(labels)),
            ("workflow", text(data.get("workflow"))),
            ("bmc", _bmc(bmc) if bmc else NONE),
            ("user-data", _user_data(data)),
            ("created", timestamp(data.get("created_at"))),
            ("updated", timestamp(data.get("updated_at"))),
        ]
    )
    interfaces = table("MAC", "IP", "NETMASK", "GATEWAY", "VLAN", "HOSTNAME", "PXE", "WORKFLOW")
    for nic in data.get("interfaces") or []:
        interfaces.add_row(
            nic["mac"],
            text(nic.get("ip")),
            text(nic.get("netmask")),
            text(nic.get("gateway")),
            text(nic.get("vlan")),
            text(nic.get("hostname")),
            text(nic.get("allow_pxe")),
            text(nic.get("allow_workflow")),
        )
    disks = table("DEVICE", "SIZE")
    for disk in data.get("disks") or []:
        disks.add_row(disk["device"], size(disk.get("size_bytes")))
    return Group(summary, Text(), interfaces, Text(), disks)


def _user_data(machine: Json) -> str:
    """Its size and kind; the content itself is in `-o yaml` (it may hold secrets, and bytes)."""
    if machine.get("userData") is not None:
        return f"{size(len(machine['userData'].encode()))}, text"
    if machine.get("userDataBase64") is not None:
        data = base64.b64decode(machine["userDataBase64"])
        return f"{size(len(data))}, {'gzip' if data[:2] == GZIP_MAGIC else 'binary'}"
    return NONE


def _bmc(bmc: Json) -> str:
    user = bmc.get("username") or "no user"
    password = "password set" if bmc.get("has_password") else "no password"
    port = f" port {bmc['port']}" if bmc.get("port") else ""
    tls = ", any TLS certificate" if bmc.get("insecure_tls") else ""
    return f"{text(bmc.get('driver'))} {text(bmc.get('address'))}{port} ({user}, {password}{tls})"


# templates


def templates(data: Json) -> RenderableType:
    grid = listing("NAME", "VERSION", "TASKS", "ACTIONS", "CREATED", "UPDATED")
    for template in data["items"]:
        grid.add_row(
            template["name"],
            text(template.get("version")),
            text(template.get("tasks")),
            text(template.get("actions")),
            timestamp(template.get("created_at")),
            timestamp(template.get("updated_at")),
        )
    return grid


def leases(data: Json) -> RenderableType:
    grid = listing("ADDRESS", "MAC", "SUBNET", "HOSTNAME", "EXPIRES")
    for lease in data["items"]:
        grid.add_row(
            lease["address"],
            lease["mac"],
            lease["subnet"],
            text(lease.get("hostname")),
            timestamp(lease.get("expires_at")),
        )
    return grid


# workflows


def counts(workflow: Json) -> tuple[int, int]:
    """`(done, total)` actions."""
    numbers = workflow.get("progress") or {}
    return int(numbers.get("done") or 0), int(numbers.get("total") or 0)


def progress(workflow: Json) -> str:
    done, total = counts(workflow)
    return f"{done}/{total}"


def current_action(workflow: Json) -> str:
    """The running action, else the next pending one, as `task/action`; the state once ended."""
    if workflow.get("state") in TERMINAL_STATES:
        return str(workflow["state"])
    actions = workflow.get("actions") or []
    for wanted in ("RUNNING", "PENDING"):
        for action in actions:
            if action.get("state") == wanted:
                return f"{action.get('task')}/{action.get('name')}"
    return str(workflow.get("state", ""))


def workflows(data: Json) -> RenderableType:
    grid = listing("ID", "NAME", "MACHINE", "TEMPLATE", "STATE", "PROGRESS", "CREATED")
    for workflow in data["items"]:
        grid.add_row(
            str(workflow["id"])[:12],
            text(workflow.get("name")),
            text(workflow.get("machine")),
            text(workflow.get("template")),
            state(workflow.get("state")),
            progress(workflow),
            timestamp(workflow.get("created_at")),
        )
    return grid


def workflow(data: Json) -> RenderableType:
    summary = fields(
        [
            ("id", str(data["id"])),
            ("name", text(data.get("name"))),
            ("machine", text(data.get("machine"))),
            ("template", text(data.get("template"))),
            ("kind", text(data.get("kind"))),
            ("state", with_reason(data.get("state"), data.get("reason"))),
            ("run", text(data.get("run"))),
            ("progress", progress(data)),
            ("timeout", text(data.get("global_timeout"))),
            ("created", timestamp(data.get("created_at"))),
            ("started", timestamp(data.get("started_at"))),
            ("finished", timestamp(data.get("finished_at"))),
            ("duration", duration(data.get("started_at"), data.get("finished_at"))),
        ]
    )
    actions = table(
        "#", "TASK", "ACTION", "IMAGE", "STATE", "ATTEMPTS", "EXIT", "DURATION", "MESSAGE"
    )
    for action in data.get("actions") or []:
        actions.add_row(
            text(action.get("index")),
            text(action.get("task")),
            text(action.get("name")),
            text(action.get("image")),
            state(action.get("state")),
            text(action.get("attempts")),
            text(action.get("exit_code")),
            duration(action.get("started_at"), action.get("finished_at")),
            text(action.get("message")),
        )
    return Group(summary, Text(), actions)


def workflow_created(data: Json) -> RenderableType:
    return Text(
        f"workflow {data['id']} created for machine {data.get('machine')} "
        f"(template {data.get('template')})"
    )


def workflow_state(data: Json) -> Text:
    """`workflow ID STATE (reason)`, the last line of a watch and of cancel/resume/rerun."""
    return Text.assemble(
        f"workflow {data['id']} ", with_reason(data.get("state"), data.get("reason"))
    )


# events


def events(data: Json) -> RenderableType:
    ordered = sorted(data["items"], key=lambda event: int(event.get("id") or 0))
    return Lines(event_line(event) for event in ordered)


def deprovisioned(data: Json) -> Text:
    machine, workflow = data["machine"], data.get("workflow")
    if workflow:
        return Text(
            f"machine {machine['name']} deprovisioning: workflow {workflow['id']} created "
            f"(template {workflow.get('template')})"
        )
    return Text.assemble(f"machine {machine['name']} deprovisioned: ", state(machine.get("state")))
