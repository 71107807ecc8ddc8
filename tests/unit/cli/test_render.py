"""Rendering long lists: complete and correct in every format, one row per line."""

from __future__ import annotations

import io
import json
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from metalflow.cli import render
from tests.unit.cli.fakes import FakeServer, Run, event_doc, machine_doc

MACHINES = "/api/v1/machines"
FLEET = 20_000


def fleet() -> list[dict[str, object]]:
    """20,000 machines, each with its own name, MAC, address and state."""
    states = ["ready", "provisioning", "provisioned", "failed_provisioning"]
    machines = []
    for i in range(FLEET):
        nic = {
            **machine_doc()["interfaces"][0],
            "mac": f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            "ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
        }
        machines.append(machine_doc(f"m{i:05d}", interfaces=[nic], state=states[i % 4]))
    return machines


@pytest.fixture(scope="module")
def machines() -> list[dict[str, object]]:
    return fleet()


def test_a_fleet_as_json_is_the_whole_response(
    server: FakeServer, run: Run, machines: list[dict[str, object]]
) -> None:
    server.reply("GET", MACHINES, {"items": machines, "count": FLEET})

    result = run("-o", "json", "machine", "list")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"items": machines, "count": FLEET}


def test_a_fleet_as_yaml_is_the_whole_response(
    server: FakeServer, run: Run, machines: list[dict[str, object]]
) -> None:
    server.reply("GET", MACHINES, {"items": machines, "count": FLEET})

    result = run("-o", "yaml", "machine", "list")

    assert result.exit_code == 0, result.stderr
    head = result.stdout[: result.stdout.index("\n- id: id-m00002\n")]
    assert yaml.safe_load(head) == {"items": machines[:2]}
    assert re.findall(r"^  name: (m\d{5})$", result.stdout, re.MULTILINE) == [
        machine["name"] for machine in machines
    ]
    assert re.findall(r"^  - mac: '?([0-9a-f:]{17})'?$", result.stdout, re.MULTILINE) == [
        machine["interfaces"][0]["mac"]  # type: ignore[index]
        for machine in machines
    ]
    assert result.stdout.endswith("\ncount: 20000\n")


def test_a_fleet_as_a_table_is_one_line_per_machine(
    server: FakeServer, run: Run, machines: list[dict[str, object]]
) -> None:
    server.reply("GET", MACHINES, {"items": machines, "count": FLEET})

    result = run("machine", "list")

    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "STATE",
        "ARCH",
        "MAC",
        "IP",
        "PROJECT",
        "TENANT",
        "METRO",
        "WORKFLOW",
    ]
    assert len(rows) == FLEET
    for row, machine in zip(rows, machines, strict=True):
        nic = machine["interfaces"][0]  # type: ignore[index]
        expected = [machine["name"], machine["state"], "x86_64", nic["mac"], nic["ip"]]
        assert row.split() == [*expected, "default", "-", "-", "-"]


def test_many_events_are_one_line_each_oldest_first(server: FakeServer, run: Run) -> None:
    events = [
        event_doc(i, "dhcp.offered", address=f"10.0.{i >> 8}.{i & 255}") for i in range(FLEET)
    ]
    server.reply("GET", "/api/v1/events", {"items": events[::-1], "count": FLEET})

    result = run("machine", "events", "m1")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == FLEET
    assert [line.rsplit("address=", 1)[1] for line in lines] == [
        f"10.0.{i >> 8}.{i & 255}" for i in range(FLEET)
    ]


def rendered(renderable: render.Listing | render.Lines, width: int, *, color: bool = False) -> str:
    out = io.StringIO()
    console = Console(
        file=out, width=width, force_terminal=color, color_system="standard" if color else None
    )
    console.print(renderable)
    return out.getvalue()


def test_a_narrow_terminal_truncates_the_widest_columns_and_keeps_rows_whole() -> None:
    grid = render.listing("NAME", "STATE", "NOTE")
    grid.add_row("a-rather-long-machine-name", render.state("FAILED"), "it did not boot its disk")
    grid.add_row("m2", render.state("ready"), "-")

    lines = rendered(grid, 40).splitlines()

    assert lines == [
        "NAME             STATE   NOTE",
        "a-rather-long-…  FAILED  it did not boo…",
        "m2               ready   -",
    ]
    assert all(len(line) <= 40 for line in lines)


def test_a_listing_keeps_its_styles_on_a_terminal() -> None:
    grid = render.listing("NAME", "STATE")
    grid.add_row("m1", render.state("FAILED"))

    header, row = rendered(grid, 80, color=True).splitlines()

    assert header == "\x1b[1mNAME\x1b[0m  \x1b[1mSTATE\x1b[0m"
    assert row == "m1    \x1b[31mFAILED\x1b[0m"


def test_a_listing_row_must_have_a_cell_per_column() -> None:
    with pytest.raises(ValueError, match="a row of 2 columns has 1 cells"):
        render.listing("NAME", "STATE").add_row("m1")


def test_a_line_wider_than_the_console_wraps_instead_of_being_cut() -> None:
    lines = render.Lines([Text("x" * 30), Text("short")])

    assert rendered(lines, 20).splitlines() == ["x" * 20, "x" * 10, "short"]


@given(
    natural=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=10),
    available=st.integers(min_value=0, max_value=400),
)
def test_fitted_widths_fit_when_they_can_and_never_grow(natural: list[int], available: int) -> None:
    widths = render.fit_widths(natural, available)

    gaps = len(render.COLUMN_GAP) * (len(natural) - 1)
    assert all(0 <= w <= n for w, n in zip(widths, natural, strict=True))
    assert all(w >= min(n, render.MIN_COLUMN_WIDTH) for w, n in zip(widths, natural, strict=True))
    if sum(natural) + gaps <= available:
        assert widths == natural
    if sum(min(n, render.MIN_COLUMN_WIDTH) for n in natural) + gaps <= available:
        assert sum(widths) + gaps <= available
