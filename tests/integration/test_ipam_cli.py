"""`metalflow ipam` against a real server: a provider adds pools, allocates, reads usage; a
tenant reserves, assigns, moves, unassigns and releases; the provider imports a brought prefix."""

from __future__ import annotations

import json

from sqlalchemy import select
from typer.testing import CliRunner, Result

from metalflow.cli import app
from metalflow.db.base import utcnow
from metalflow.inventory.tables import Machine
from metalflow.tenancy import service as tenancy
from tests.integration.conftest import LiveServer, apply
from tests.manifests import machine_yaml


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


def tenant_world(live: LiveServer, cli: CliRunner) -> dict[str, str]:
    """A public pool in metro am; projects web and ops of one organization, shop of another;
    machines web1, web2 (web) and shop1 (shop) in am; a read-write key of web."""
    assert run(cli, "ipam", "prefix", "create", "198.51.100.0/24", "--metro", "am").exit_code == 0
    names = ("web1", "web2", "shop1")
    documents = [
        machine_yaml(name, f"52:54:00:00:c1:{index:02x}") for index, name in enumerate(names)
    ]
    with live.client() as api:
        assert apply(api, "---\n".join(documents)).status_code == 200
    with live.services.db.write() as session:
        ada = tenancy.create_user(session, "ada@example.test", "Ada")
        acme = tenancy.create_organization(session, "acme", ada.id)
        globex = tenancy.create_organization(session, "globex", ada.id)
        ids = {
            "web": tenancy.create_project(session, acme.id, "web").id,
            "ops": tenancy.create_project(session, acme.id, "ops").id,
            "shop": tenancy.create_project(session, globex.id, "shop").id,
        }
        for machine in session.scalars(select(Machine)):
            machine.project_id = ids["shop" if machine.name == "shop1" else "web"]
            machine.metro = "am"
        ids["key"] = tenancy.create_key(session, "ci", now=utcnow(), project_id=ids["web"]).secret
    return ids


def test_a_tenant_reserves_assigns_moves_unassigns_and_releases(
    live: LiveServer, cli: CliRunner
) -> None:
    ids = tenant_world(live, cli)
    tenant = {"METALFLOW_TOKEN": ids["key"]}

    def as_tenant(*args: str) -> Result:
        return cli.invoke(app, list(args), env=tenant)

    wanted = f"--project {ids['web']} --kind public --family 4 --size 29 --metro am"
    reserved = as_tenant("-o", "json", "ipam", "reserve", *wanted.split())
    assert reserved.exit_code == 0, reserved.output
    reservation = json.loads(reserved.output)
    assert reservation["cidr"] == "198.51.100.0/29" and reservation["status"] == "reservation"
    listed = as_tenant("ipam", "reservations")
    assert listed.exit_code == 0 and "198.51.100.0/29" in listed.output, listed.output

    given = as_tenant(
        *f"-o json ipam assign {reservation['id']} --machine web1 --address 198.51.100.5".split()
    )
    assert given.exit_code == 0, given.output
    assignment = json.loads(given.output)
    assert assignment["cidr"] == "198.51.100.5/32"
    pair = as_tenant("ipam", "assign", "198.51.100.0/29", "--machine", "web2", "--size", "31")
    assert pair.exit_code == 0 and "198.51.100.1" in pair.output, pair.output

    moved = as_tenant("ipam", "move", assignment["id"], "--machine", "web2")
    assert moved.exit_code == 0, moved.output
    on_web2 = as_tenant("ipam", "assignments", "--machine", "web2")
    assert "198.51.100.5/32" in on_web2.output and "198.51.100.0/31" in on_web2.output
    assert "198.51.100.5/32" not in as_tenant("ipam", "assignments", "--machine", "web1").output
    shown = as_tenant("ipam", "reservation", reservation["id"])
    assert shown.exit_code == 0 and "USED:" in shown.output and "198.51.100.5/32" in shown.output

    busy = as_tenant("ipam", "release-reservation", reservation["id"])
    assert busy.exit_code == 2 and "unassign them first" in busy.output, busy.output
    assert as_tenant("ipam", "unassign", assignment["id"]).exit_code == 0
    assert as_tenant("ipam", "unassign", "198.51.100.0/31").exit_code == 0
    released = as_tenant("ipam", "release-reservation", reservation["id"])
    assert released.exit_code == 0, released.output
    quarantined = run(cli, "ipam", "prefix", "list", "--status", "quarantine")
    assert "198.51.100.0/29" in quarantined.output


def test_reservation_bad_input_exits_2_with_the_apis_message(
    live: LiveServer, cli: CliRunner
) -> None:
    ids = tenant_world(live, cli)
    tenant = {"METALFLOW_TOKEN": ids["key"]}

    def as_tenant(*args: str) -> Result:
        return cli.invoke(app, list(args), env=tenant)

    reserved = as_tenant(
        *f"-o json ipam reserve --project {ids['web']} --size 30 --metro am".split()
    )
    reservation = json.loads(reserved.output)["id"]
    outside = as_tenant("ipam", "assign", reservation, "--machine", "web1", "--address", "10.0.0.1")
    assert outside.exit_code == 2
    assert "address: 10.0.0.1 is outside reservation 198.51.100.0/30" in outside.output
    stranger = as_tenant("ipam", "assign", reservation, "--machine", "shop1", "--size", "32")
    assert stranger.exit_code == 2 and "no machine 'shop1' in the projects" in stranger.output
    size = as_tenant("ipam", "reserve", "--project", ids["web"], "--size", "24", "--metro", "am")
    assert size.exit_code == 2 and "size: /24 is not offered for IPv4" in size.output
    hidden = as_tenant("ipam", "reserve", "--project", ids["shop"], "--size", "29", "--metro", "am")
    assert hidden.exit_code == 2 and f"no project '{ids['shop']}'" in hidden.output
    refused = as_tenant("ipam", "byo", "import", "192.0.2.0/28", "--project", ids["web"])
    assert refused.exit_code == 2, refused.output

    byo = f"ipam byo import 192.0.2.0/28 --project {ids['web']} --allow"
    foreign = run(cli, *byo.split(), ids["shop"])
    assert foreign.exit_code == 2 and "allowed_projects: project" in foreign.output
    brought = run(cli, *byo.split(), ids["ops"])
    assert brought.exit_code == 0, brought.output
    assert f"yes, also for {ids['ops']}" in brought.output
    again = run(cli, "ipam", "byo", "import", "192.0.2.0/28", "--project", ids["web"])
    assert again.exit_code == 2 and "overlaps 192.0.2.0/28" in again.output
    assert "Traceback" not in outside.output + stranger.output + again.output
