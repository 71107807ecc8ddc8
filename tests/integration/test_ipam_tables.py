"""The database itself keeps one block's children apart: on PostgreSQL an overlapping sibling
is refused by the schema, whichever process or code path writes it."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.ipam.tables import FreeBlock, IpBlock, Kind, Status, address_key
from tests.integration.conftest import postgres_url, reset_postgres


def block(cidr: str, parent: IpBlock | None = None, status: Status = Status.POOL) -> IpBlock:
    network = ipaddress.ip_network(cidr)
    return IpBlock(
        id=uuid.uuid4().hex,
        parent_id=None if parent is None else parent.id,
        cidr=str(network),
        family=network.version,
        prefixlen=network.prefixlen,
        first=address_key(network.network_address),
        last=address_key(network.broadcast_address),
        kind=Kind.PUBLIC.value,
        status=status.value,
    )


@pytest.fixture
def postgres() -> Database:
    url = postgres_url()
    reset_postgres(url)
    db = Database(url)
    upgrade(db)
    return db


def test_blocks_and_free_space_round_trip(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.database_url)
    try:
        upgrade(db)
        pool = block("2001:db8::/48")
        with db.write() as session:
            session.add(pool)
            session.flush()
            session.add(block("2001:db8:0:1::/64", pool, Status.RESERVATION))
            session.add(
                FreeBlock(block_id=pool.id, cidr="2001:db8::/64", prefixlen=64, first="0" * 32)
            )
        with db.read() as session:
            rows = [(row.cidr, row.first) for row in session.query(IpBlock).order_by(IpBlock.first)]
        assert rows == [
            ("2001:db8::/48", "20010db8000000000000000000000000"),
            ("2001:db8:0:1::/64", "20010db8000000010000000000000000"),
        ]
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("198.18.0.0/31", "198.18.0.0/31"),
        ("198.18.0.0/30", "198.18.0.2/31"),
        ("198.18.0.2/31", "198.18.0.0/29"),
    ],
)
def test_postgresql_refuses_overlapping_children_of_one_block(
    postgres: Database, first: str, second: str
) -> None:
    try:
        pool = block("198.18.0.0/16")
        with postgres.write() as session:
            session.add(pool)
            session.flush()
            session.add(block(first, pool, Status.ASSIGNMENT))
        with (
            pytest.raises(IntegrityError, match="ex_ipam_blocks_children_disjoint"),
            postgres.write() as session,
        ):
            session.add(block(second, pool, Status.ASSIGNMENT))
        with postgres.read() as session:
            assert sorted(row.cidr for row in session.query(IpBlock)) == ["198.18.0.0/16", first]
    finally:
        postgres.dispose()


def test_postgresql_keeps_roots_apart_but_not_nested_blocks_or_families(postgres: Database) -> None:
    try:
        pool = block("198.18.0.0/15")
        with postgres.write() as session:
            session.add(pool)
            session.add(block("2001:db8::/32"))
            session.flush()
            session.add(block("198.18.0.0/24", pool))
        with (
            pytest.raises(IntegrityError, match="ex_ipam_blocks_children_disjoint"),
            postgres.write() as session,
        ):
            session.add(block("198.19.0.0/16"))
        with postgres.read() as session:
            assert session.query(IpBlock).count() == 3
    finally:
        postgres.dispose()
