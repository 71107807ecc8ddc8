"""`metalflow ipam` against a real server: a provider adds pools, allocates, reads usage."""

from __future__ import annotations

import json

from typer.testing import CliRunner, Result

from metalflow.cli import app


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args))


def test_pools_allocations_usage_and_tree(cli: CliRunner) -> None:
    created = run(
        cli, "ipam", "prefix", "create", "198.18.0.0/16", "--metro", "am", "--tag", "edge"
    )
    assert created.exit_code == 0, created.output
    assert "198.18.0.0/16" in created.output and "USED:" in created.output
    inner = run(cli, "ipam", "prefix", "create", "198.18.64.0/18", "--kind", "private")
    assert inner.exit_code == 0, inner.output

    first = run(cli, "-o", "json", "ipam", "allocate", "198.18.0.0/16", "--size", "31")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["cidr"] == "198.18.0.0/31"
    reserved = run(cli, "ipam", "allocate", "198.18.0.0/16", "--cidr", "198.18.1.0/29", "--reserve")
    assert reserved.exit_code == 0 and "reservation" in reserved.output, reserved.output

    usage = run(cli, "ipam", "usage")
    assert usage.exit_code == 0, usage.output
    header, *rows = usage.output.splitlines()
    assert header.split()[:3] == ["CIDR", "STATUS", "USED"]
    assert [row.split()[:3] for row in rows] == [
        ["198.18.0.0/16", "pool", "25.0%"],
        ["198.18.1.0/29", "reservation", "0.0%"],
        ["198.18.64.0/18", "pool", "0.0%"],
    ]
    tree = run(cli, "ipam", "tree")
    assert tree.exit_code == 0, tree.output
    lines = tree.output.splitlines()
    assert lines[0].startswith("198.18.0.0/16  pool") and "25.0% of 65536" in lines[0]
    assert any("198.18.0.0/31  assignment" in line for line in lines[1:])
    assert any("198.18.64.0/18  pool" in line for line in lines[1:])

    released = run(cli, "ipam", "release", "198.18.0.0/31")
    assert released.exit_code == 0, released.output
    listed = run(cli, "ipam", "prefix", "list", "--status", "quarantine")
    assert "198.18.0.0/31" in listed.output


def test_bad_input_names_the_field_and_exits_2(cli: CliRunner) -> None:
    host_bits = run(cli, "ipam", "prefix", "create", "198.18.0.1/24")
    assert host_bits.exit_code == 2
    assert "has host bits set: use 198.18.0.0/24" in host_bits.output
    run(cli, "ipam", "prefix", "create", "198.18.0.0/30")
    run(cli, "ipam", "allocate", "198.18.0.0/30", "--size", "31")
    run(cli, "ipam", "allocate", "198.18.0.0/30", "--size", "31")
    exhausted = run(cli, "ipam", "allocate", "198.18.0.0/30", "--size", "31")
    assert exhausted.exit_code == 2
    assert "no free /31 in 198.18.0.0/30 (100.0% used" in exhausted.output
    busy = run(cli, "ipam", "prefix", "delete", "198.18.0.0/30")
    assert busy.exit_code == 2 and "still holds 2 block(s)" in busy.output
    missing = run(cli, "ipam", "prefix", "show", "192.0.2.0/24")
    assert missing.exit_code == 2 and "no prefix '192.0.2.0/24'" in missing.output
