"""Two processes with several threads each allocate from one pool on one PostgreSQL at once:
every allocation succeeds and no two overlap."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import sys
import textwrap

from sqlalchemy import select

from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.ipam import service
from metalflow.ipam.tables import IpBlock
from tests.integration.conftest import postgres_url, reset_postgres

PROCESSES = 2
THREADS = 4
PER_THREAD = 125

WORKER = textwrap.dedent(
    """
    import json, sys, threading
    from metalflow.db.engine import Database
    from metalflow.ipam import service

    url, holder, threads, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    db = Database(url)
    got, errors = [], []
    start = threading.Barrier(threads)

    def run():
        start.wait()
        for _ in range(count):
            try:
                with db.write() as session:
                    got.append(service.allocate(session, holder, prefixlen=31).cidr)
            except Exception as exc:
                errors.append(repr(exc))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    db.dispose()
    print(json.dumps({"got": got, "errors": errors}))
    """
)


def test_a_thousand_concurrent_allocations_from_two_processes_never_overlap() -> None:
    url = postgres_url()
    reset_postgres(url)
    db = Database(url)
    try:
        upgrade(db)
        with db.write() as session:
            holder = service.create_prefix(session, service.PrefixSpec("198.18.0.0/16")).id
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, url, holder, str(THREADS), str(PER_THREAD)],
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        results = [json.loads(proc.communicate(timeout=600)[0]) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * PROCESSES
        assert [error for result in results for error in result["errors"]] == []
        got = [ipaddress.ip_network(cidr) for result in results for cidr in result["got"]]
        assert len(got) == PROCESSES * THREADS * PER_THREAD
        ordered = sorted(got, key=lambda network: int(network.network_address))
        overlaps = [(a, b) for a, b in itertools.pairwise(ordered) if a.overlaps(b)]
        assert overlaps == []
        with db.read() as session:
            stored = session.scalars(select(IpBlock.cidr).where(IpBlock.parent_id == holder))
            assert sorted(stored) == sorted(str(network) for network in got)
            figures = service.stats(session, service.get(session, holder))
        assert figures.allocated == 2 * len(got)
    finally:
        db.dispose()
