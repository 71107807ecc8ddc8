#!/usr/bin/env python3
"""IPAM benchmark: allocation cost through the API as a pool fills, against a no-op request.

Starts metalflow (and, for PostgreSQL, a throwaway cluster; bench/fleet.py's), creates one pool
per (family, utilisation): /16s that hand out /31s and /48s that hand out /64s, filled to 0 %, 50 %
and 95 % before the clock starts (the fill writes the rows the service itself would write: the
in-memory reference index, which the service's differential test proves equal, decides them), then
measures `POST /api/v1/ipam/prefixes/{id}/allocations` one at a time (latency) and from
`--clients` threads at once (throughput), and `GET /api/v1/whoami` (an authenticated no-op) the
same two ways. Prints p50/p99, allocations/s, the ratio 95 % / 0 % of the p50 (goal <= 1.5x: cost
must not grow with utilisation) and allocation vs no-op throughput (goal: an allocation costs at
most 3x a no-op request). Only loopback traffic; only processes this script started are stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import Postgres, Server, Stats, log  # bench/fleet.py (same directory)
from sqlalchemy import delete, insert

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.ipam.allocator import FreeIndex
from metalflow.ipam.tables import FreeBlock, IpBlock, address_key

LEVELS = (0.0, 0.5, 0.95)
FAMILIES = {
    4: ("198.18.0.0/16", "198.19.0.0/16", "100.64.0.0/16", 31),
    6: ("2001:db8:0::/48", "2001:db8:1::/48", "2001:db8:2::/48", 64),
}


def fill(db: Database, pool_id: str, cidr: str, prefixlen: int, fraction: float) -> None:
    """Write the pool as `fraction` of its /prefixlen blocks allocated, lowest first."""
    parent = ipaddress.ip_network(cidr)
    index = FreeIndex(parent)
    count = int(fraction * (1 << (prefixlen - parent.prefixlen)))
    taken = [index.allocate(prefixlen) for _ in range(count)]
    now = dt.datetime.now(dt.UTC)
    children = [
        {
            "id": uuid.uuid4().hex,
            "parent_id": pool_id,
            "cidr": str(block),
            "family": block.version,
            "prefixlen": block.prefixlen,
            "first": address_key(block.network_address),
            "last": address_key(block.broadcast_address),
            "kind": "public",
            "status": "assignment",
            "provisioning": False,
            "byo": False,
            "allowed_projects": [],
            "tags": [],
            "description": "",
            "created_at": now,
            "updated_at": now,
        }
        for block in taken
    ]
    free = [
        {
            "block_id": pool_id,
            "cidr": str(block),
            "prefixlen": block.prefixlen,
            "first": address_key(block.network_address),
        }
        for block in index.free_blocks()
    ]
    with db.write() as session:
        session.execute(delete(FreeBlock).where(FreeBlock.block_id == pool_id))
        if children:
            session.execute(insert(IpBlock), children)
        session.execute(insert(FreeBlock), free)


def sequential(call: Callable[[httpx.Client], None], client: httpx.Client, count: int) -> Stats:
    stats = Stats()
    for _ in range(count):
        started = time.perf_counter()
        call(client)
        stats.add(time.perf_counter() - started)
    return stats


def concurrent(
    call: Callable[[httpx.Client], None], make: Callable[[], httpx.Client], clients: int, each: int
) -> float:
    """Requests per second from `clients` threads doing `each` requests."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run() -> None:
        with make() as client:
            barrier.wait()
            try:
                for _ in range(each):
                    call(client)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return clients * each / seconds


def measure(database: str, args: argparse.Namespace) -> list[str]:
    postgres = Postgres(None) if database == "postgresql" else None
    url = postgres.start() if postgres else None
    server = Server(url, None)
    lines: list[str] = []
    try:
        token = server.start()
        settings = Settings(data_dir=server.data_dir, database=url)
        db = Database(settings.database_url)
        headers = {"Authorization": f"Bearer {token}"}

        def make() -> httpx.Client:
            return httpx.Client(base_url=server.url, headers=headers, timeout=30)

        def whoami(client: httpx.Client) -> None:
            client.get("/api/v1/whoami").raise_for_status()

        with make() as client:
            noop = sequential(whoami, client, args.requests).summary()
            noop_rate = concurrent(whoami, make, args.clients, args.requests // args.clients)
            lines.append(
                f"{database}: no-op GET /whoami p50 {noop['p50_ms']:.2f} ms,"
                f" p99 {noop['p99_ms']:.2f} ms, {noop_rate:.0f} req/s with {args.clients} clients"
            )
            for family, (*cidrs, prefixlen) in FAMILIES.items():
                p50s: dict[float, float] = {}
                for level, cidr in zip(LEVELS, cidrs, strict=True):
                    created = client.post("/api/v1/ipam/prefixes", json={"cidr": cidr})
                    created.raise_for_status()
                    pool = created.json()["id"]
                    fill(db, pool, str(cidr), int(prefixlen), level)
                    body = {"prefixlen": prefixlen}

                    def allocate(
                        client: httpx.Client, pool: str = pool, body: dict[str, int] = body
                    ) -> None:
                        answer = client.post(f"/api/v1/ipam/prefixes/{pool}/allocations", json=body)
                        answer.raise_for_status()

                    latency = sequential(allocate, client, args.requests).summary()
                    rate = concurrent(allocate, make, args.clients, args.requests // args.clients)
                    p50s[level] = latency["p50_ms"]
                    lines.append(
                        f"{database}: /{prefixlen} from {cidr} at {level:.0%}: p50"
                        f" {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms,"
                        f" {rate:.0f} allocations/s ({noop_rate / rate:.2f}x the no-op's cost)"
                    )
                lines.append(
                    f"{database}: IPv{family} p50 at 95 % / at 0 %:"
                    f" {p50s[0.95] / p50s[0.0]:.2f}x (goal <= 1.5x)"
                )
        db.dispose()
    finally:
        server.stop()
        server.cleanup(keep=False)
        if postgres:
            postgres.stop()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=400, help="per measurement")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    report = [line for database in databases for line in measure(database, args)]
    log("done")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
