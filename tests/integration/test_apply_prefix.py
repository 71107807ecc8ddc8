"""`kind: Prefix` through `POST /api/v1/apply` and `metalflow apply -f`, on SQLite and PostgreSQL,
and the IPAM gauges a scrape of /metrics shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from metalflow.cli import app
from metalflow.metrics import MAX_PREFIX_SERIES, Metrics, PrefixUsage
from metalflow.tenancy import service as tenancy
from tests.integration.conftest import LiveServer, apply

POOL = """\
apiVersion: metalflow/v1
kind: Prefix
metadata: {name: ams-public}
spec: {cidr: 198.51.100.0/24, kind: public, metro: am, tags: [edge], description: Amsterdam,
       provisioning: false, byo: false, project: null, allowedProjects: []}
"""


def prefix(cidr: str, extra: str = "") -> str:
    return f"apiVersion: metalflow/v1\nkind: Prefix\nspec: {{cidr: {cidr}{extra}}}\n"


def results(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 200, response.text
    return [(item["kind"], item["name"], item["action"]) for item in response.json()["results"]]


def stored(api: httpx.Client) -> dict[str, dict[str, Any]]:
    listed = api.get("/api/v1/ipam/prefixes")
    assert listed.status_code == 200, listed.text
    return {item["cidr"]: item for item in listed.json()["items"]}


def test_created_then_unchanged_then_updated(api: httpx.Client) -> None:
    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "created")]
    pool = stored(api)["198.51.100.0/24"]
    assert (pool["status"], pool["kind"], pool["metro"], pool["tags"]) == (
        "pool",
        "public",
        "am",
        ["edge"],
    )
    assert pool["description"] == "Amsterdam"

    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "unchanged")]

    retagged = POOL.replace("tags: [edge]", "tags: [edge, transit]")
    assert results(apply(api, retagged)) == [("Prefix", "198.51.100.0/24", "updated")]
    after = stored(api)["198.51.100.0/24"]
    assert after["tags"] == ["edge", "transit"]
    assert after["id"] == pool["id"], "an update keeps the prefix, it does not add another"
    assert results(apply(api, retagged)) == [("Prefix", "198.51.100.0/24", "unchanged")]


def test_every_mutable_field_updates_in_place(api: httpx.Client) -> None:
    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "created")]
    changed = (
        POOL.replace("kind: public", "kind: private")
        .replace("description: Amsterdam", "description: Amsterdam 2")
        .replace("provisioning: false", "provisioning: true")
        .replace("allowedProjects: []", "allowedProjects: [p2]")
    )
    assert results(apply(api, changed)) == [("Prefix", "198.51.100.0/24", "updated")]
    pool = stored(api)["198.51.100.0/24"]
    assert (pool["kind"], pool["description"], pool["provisioning"]) == (
        "private",
        "Amsterdam 2",
        True,
    )
    assert pool["allowed_projects"] == ["p2"]


def test_an_allocated_block_is_not_taken_for_a_prefix(api: httpx.Client) -> None:
    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "created")]
    allocated = api.post(
        "/api/v1/ipam/prefixes/198.51.100.0/24/allocations", json={"prefixlen": 30}
    )
    assert allocated.status_code == 201, allocated.text
    refused = apply(api, prefix("198.51.100.0/30"))
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert detail["field"] == "documents[0].spec.cidr"
    assert "allocated from another prefix (status assignment)" in detail["message"]


def test_dry_run_says_what_would_happen_and_writes_nothing(api: httpx.Client) -> None:
    planned = apply(api, POOL, dry_run=True)
    assert planned.json()["dry_run"] is True
    assert results(planned) == [("Prefix", "198.51.100.0/24", "created")]
    assert stored(api) == {}

    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "created")]
    moved = POOL.replace("metro: am", "metro: fr")
    assert results(apply(api, moved, dry_run=True)) == [("Prefix", "198.51.100.0/24", "updated")]
    assert stored(api)["198.51.100.0/24"]["metro"] == "am"


def test_nested_prefixes_in_reverse_order_nest(api: httpx.Client) -> None:
    text = "---\n".join(
        [
            prefix("10.1.2.0/24", ", kind: private"),
            prefix("10.1.0.0/16", ", kind: private"),
            prefix("10.0.0.0/8", ", kind: private"),
        ]
    )
    assert results(apply(api, text)) == [
        ("Prefix", "10.0.0.0/8", "created"),
        ("Prefix", "10.1.0.0/16", "created"),
        ("Prefix", "10.1.2.0/24", "created"),
    ]
    blocks = stored(api)
    assert blocks["10.0.0.0/8"]["parent"] is None
    assert blocks["10.1.0.0/16"]["parent"] == blocks["10.0.0.0/8"]["id"]
    assert blocks["10.1.2.0/24"]["parent"] == blocks["10.1.0.0/16"]["id"]
    usage = api.get("/api/v1/ipam/prefixes/10.0.0.0/8/usage").json()
    assert usage["allocated"] == 1 << 16, "the /16 is taken from the /8's free space"
    assert [action for _, _, action in results(apply(api, text))] == ["unchanged"] * 3


def test_a_bad_cidr_names_the_field_and_nothing_is_written(api: httpx.Client) -> None:
    text = POOL + "---\n" + prefix("10.0.0.1/8")
    refused = apply(api, text)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail["field"] == "documents[1].spec.cidr"
    assert "host bits set: use 10.0.0.0/8" in detail["message"]
    assert stored(api) == {}


def test_a_conflict_names_the_document_and_rolls_back_the_whole_apply(api: httpx.Client) -> None:
    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "created")]
    brought = POOL.replace("byo: false", "byo: true").replace("project: null", "project: p1")
    text = prefix("192.0.2.0/24") + "---\n" + brought
    refused = apply(api, text)
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert detail["field"] == "documents[1].spec.byo"
    assert detail["message"].startswith("documents[1] (Prefix 198.51.100.0/24): ")
    assert "192.0.2.0/24" not in stored(api)


def cli_apply(cli: CliRunner, path: Path, *flags: str) -> Result:
    return cli.invoke(app, ["apply", "-f", str(path), *flags])


def test_cli_apply_reports_each_prefix_and_exits_2_on_a_bad_field(
    cli: CliRunner, api: httpx.Client, tmp_path: Path
) -> None:
    manifest = tmp_path / "prefixes.yaml"
    manifest.write_text(prefix("10.1.0.0/16") + "---\n" + prefix("10.0.0.0/8"))
    planned = cli_apply(cli, manifest, "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert planned.output.splitlines() == [
        "prefix/10.0.0.0/8 created (dry run)",
        "prefix/10.1.0.0/16 created (dry run)",
    ]
    assert stored(api) == {}
    created = cli_apply(cli, manifest)
    assert created.exit_code == 0, created.output
    assert created.output.splitlines() == [
        "prefix/10.0.0.0/8 created",
        "prefix/10.1.0.0/16 created",
    ]
    again = cli_apply(cli, manifest)
    assert again.output.splitlines() == [
        "prefix/10.0.0.0/8 unchanged",
        "prefix/10.1.0.0/16 unchanged",
    ]

    manifest.write_text(prefix("10.0.0.0/8", ", tags: ['not a tag']"))
    refused = cli_apply(cli, manifest)
    assert refused.exit_code == 2, refused.output
    assert "documents[0].spec.tags.0" in refused.output
    assert stored(api)["10.0.0.0/8"]["tags"] == []


def gauges(api: httpx.Client) -> dict[str, dict[tuple[str, ...], float]]:
    scraped = api.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(scraped.text):
        if family.name.startswith("metalflow_ipam_"):
            for sample in family.samples:
                labels = tuple(sample.labels[name] for name in sorted(sample.labels))
                found.setdefault(sample.name, {})[labels] = sample.value
    return found


def test_metrics_show_each_pool_after_an_allocation(live: LiveServer, api: httpx.Client) -> None:
    text = POOL + "---\n" + prefix("2001:db8::/48", ", kind: global")
    assert [action for _, _, action in results(apply(api, text))] == ["created", "created"]
    allocated = api.post(
        "/api/v1/ipam/prefixes/198.51.100.0/24/allocations", json={"prefixlen": 26}
    )
    assert allocated.status_code == 201, allocated.text

    found = gauges(api)
    pool = ("public", "am", "198.51.100.0/24", "pool")  # kind, metro, prefix, status
    v6 = ("global", "", "2001:db8::/48", "pool")
    assert found["metalflow_ipam_prefix_utilisation_ratio"] == {pool: 0.25, v6: 0.0}
    assert found["metalflow_ipam_prefix_free_addresses"] == {pool: 192.0, v6: float(1 << 80)}
    assert found["metalflow_ipam_prefixes_unreported"] == {(): 0.0}


def test_the_gauges_stop_at_the_series_bound_and_count_the_rest() -> None:
    many = [
        PrefixUsage(f"10.{i >> 8}.{i & 255}.0/24", "private", None, "pool", 0.5, 128)
        for i in range(MAX_PREFIX_SERIES + 5)
    ]
    metrics = Metrics(dict)
    metrics.register_prefix_usage(lambda limit: (many, len(many)))
    rendered = metrics.render().decode()
    assert len(re.findall(r"^metalflow_ipam_prefix_free_addresses\{", rendered, re.M)) == (
        MAX_PREFIX_SERIES
    )
    assert "metalflow_ipam_prefixes_unreported 5.0" in rendered


def test_a_brought_prefix_in_a_document_gets_the_checks_of_an_import(
    api: httpx.Client, live: LiveServer
) -> None:
    with live.services.db.write() as session:
        ada = tenancy.create_user(session, "ada@example.test", "Ada")
        web = tenancy.create_project(
            session, tenancy.create_organization(session, "acme", ada.id).id, "web"
        ).id
        other = tenancy.create_project(
            session, tenancy.create_organization(session, "globex", ada.id).id, "shop"
        ).id
    assert results(apply(api, POOL)) == [("Prefix", "198.51.100.0/24", "created")]
    inside = apply(api, prefix("198.51.100.0/28", f", byo: true, project: {web}"))
    assert inside.status_code == 409, inside.text
    assert inside.json()["detail"]["field"] == "documents[0].spec.cidr"
    foreign = prefix("192.0.2.0/28", f", byo: true, project: {web}, allowedProjects: [{other}]")
    refused = apply(api, foreign)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"]["field"] == "documents[0].spec.allowedProjects"
    assert set(stored(api)) == {"198.51.100.0/24"}, "nothing written"
    brought = prefix("192.0.2.0/28", f", byo: true, project: {web}")
    assert results(apply(api, brought)) == [("Prefix", "192.0.2.0/28", "created")]
    block = stored(api)["192.0.2.0/28"]
    assert (block["status"], block["byo"], block["project"]) == ("reservation", True, web)
