"""An IP allocation through the API writes its audit entry in its own transaction: one entry per
allocation, with the caller, route, status and what was allocated from where; a refused one (the
pool used up) still gets its error entry from the recorder. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

ACTION = "POST /api/v1/ipam/prefixes/{ref:path}/allocations"


def entries(api: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    return items


def test_one_allocation_is_one_entry_naming_the_block_and_its_pool(api: httpx.Client) -> None:
    pool = api.post("/api/v1/ipam/prefixes", json={"cidr": "198.51.100.0/30"}).json()
    before = len(entries(api))
    answer = api.post(f"/api/v1/ipam/prefixes/{pool['id']}/allocations", json={"prefixlen": 31})
    assert answer.status_code == 201
    block = answer.json()
    found = entries(api)
    assert len(found) == before + 1
    entry = found[0]
    assert (entry["action"], entry["result"], entry["status"]) == (ACTION, "ok", 201)
    assert (entry["resource_type"], entry["resource_id"]) == ("ipam_prefix", block["id"])
    assert entry["summary"] == {"cidr": "198.51.100.0/31", "allocated_from": "198.51.100.0/30"}
    assert entry["actor_kind"] == "provider" and entry["address"]


def test_an_allocation_by_cidr_names_the_pool_it_came_from(api: httpx.Client) -> None:
    api.post("/api/v1/ipam/prefixes", json={"cidr": "198.51.100.8/29"})
    answer = api.post(
        "/api/v1/ipam/prefixes/198.51.100.8/29/allocations", json={"cidr": "198.51.100.12/30"}
    )
    assert answer.status_code == 201
    entry = entries(api)[0]
    assert (entry["action"], entry["resource_id"]) == (ACTION, answer.json()["id"])
    assert entry["summary"] == {"cidr": "198.51.100.12/30", "allocated_from": "198.51.100.8/29"}


def test_a_used_up_pool_refuses_with_one_error_entry(api: httpx.Client) -> None:
    pool = api.post("/api/v1/ipam/prefixes", json={"cidr": "198.51.100.4/31"}).json()
    url = f"/api/v1/ipam/prefixes/{pool['id']}/allocations"
    assert api.post(url, json={"prefixlen": 31}).status_code == 201
    before = len(entries(api))
    refused = api.post(url, json={"prefixlen": 31})
    assert refused.status_code == 409
    found = entries(api)
    assert len(found) == before + 1
    entry = found[0]
    assert (entry["action"], entry["result"], entry["status"]) == (ACTION, "error", 409)
    assert (entry["resource_type"], entry["resource_id"]) == ("ipam", pool["id"])
