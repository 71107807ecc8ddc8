"""Prefixes and allocations on both databases: what the operator sees, and the same answers as
the in-memory reference index for any sequence of allocations and releases."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.errors import Conflict, Invalid, NotFound
from metalflow.ipam import service
from metalflow.ipam.allocator import FreeIndex, Strategy
from metalflow.ipam.tables import FreeBlock, IpBlock, Kind, Status

NO_QUARANTINE = dt.timedelta(0)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True)
    database = Database(settings.database_url)
    upgrade(database)
    yield database
    database.dispose()


def pool(db: Database, cidr: str, **fields: object) -> str:
    with db.write() as session:
        return service.create_prefix(session, service.PrefixSpec(cidr, **fields)).id  # type: ignore[arg-type]


def allocate(db: Database, holder: str, **fields: object) -> str:
    with db.write() as session:
        return service.allocate(session, holder, **fields).cidr  # type: ignore[arg-type]


def free_space(db: Database, holder: str) -> list[str]:
    with db.read() as session:
        rows = session.scalars(
            select(FreeBlock).where(FreeBlock.block_id == holder).order_by(FreeBlock.first)
        )
        return [row.cidr for row in rows]


def block_id(db: Database, cidr: str) -> str:
    with db.read() as session:
        found = session.scalar(select(IpBlock.id).where(IpBlock.cidr == cidr))
        assert found is not None
        return found


def test_slash31s_come_lowest_first_and_release_returns_the_whole_pool(db: Database) -> None:
    holder = pool(db, "198.18.0.0/29")
    got = [allocate(db, holder, prefixlen=31) for _ in range(4)]
    assert got == ["198.18.0.0/31", "198.18.0.2/31", "198.18.0.4/31", "198.18.0.6/31"]
    with db.read() as session:
        figures = service.stats(session, service.get(session, holder))
    assert (figures.allocated, figures.free, figures.utilisation) == (8, 0, 1.0)
    with pytest.raises(Conflict, match=r"no free /31 in 198.18.0.0/29 \(100.0% used"):
        allocate(db, holder, prefixlen=31)
    for cidr in got:
        with db.write() as session:
            service.release(session, block_id(db, cidr), quarantine=NO_QUARANTINE)
    assert free_space(db, holder) == ["198.18.0.0/29"]


def test_a_given_block_is_carved_and_an_overlapping_one_refused(db: Database) -> None:
    holder = pool(db, "2001:db8::/48", kind=Kind.PUBLIC)
    assert allocate(db, holder, at="2001:db8:0:100::/56") == "2001:db8:0:100::/56"
    with pytest.raises(Conflict, match="2001:db8:0:100::/64 overlaps 2001:db8:0:100::/56"):
        allocate(db, holder, at="2001:db8:0:100::/64")
    with pytest.raises(Invalid, match="has host bits set: use 2001:db8::/64"):
        allocate(db, holder, at="2001:db8::1/64")
    with pytest.raises(Invalid, match="is outside 2001:db8::/48"):
        allocate(db, holder, at="2001:db9::/64")
    assert allocate(db, holder, prefixlen=56) == "2001:db8::/56"


def test_best_fit_keeps_the_big_blocks_whole(db: Database) -> None:
    holder = pool(db, "198.18.0.0/24")
    allocate(db, holder, at="198.18.0.0/26")
    allocate(db, holder, at="198.18.0.128/26")
    allocate(db, holder, at="198.18.0.192/27")
    # free: 198.18.0.64/26 and 198.18.0.224/27; first-fit splits the /26, best-fit the /27.
    assert allocate(db, holder, prefixlen=28, strategy=Strategy.BEST_FIT) == "198.18.0.224/28"
    assert allocate(db, holder, prefixlen=28) == "198.18.0.64/28"


def test_released_blocks_wait_in_quarantine(db: Database) -> None:
    holder = pool(db, "198.18.0.0/30")
    cidr = allocate(db, holder, prefixlen=31)
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    with db.write() as session:
        kept = service.release(
            session, block_id(db, cidr), quarantine=dt.timedelta(hours=1), now=now
        )
        assert kept is not None and kept.status == Status.QUARANTINE.value
    assert allocate(db, holder, prefixlen=31) == "198.18.0.2/31"
    with pytest.raises(Conflict, match="no free /31"):
        allocate(db, holder, prefixlen=31)
    with db.write() as session:
        assert service.sweep_quarantine(session, now + dt.timedelta(minutes=59)) == 0
        assert service.sweep_quarantine(session, now + dt.timedelta(hours=1)) == 1
    assert allocate(db, holder, prefixlen=31) == "198.18.0.0/31"


def test_prefixes_nest_by_containment(db: Database) -> None:
    small = pool(db, "198.18.4.0/24")
    big = pool(db, "198.18.0.0/16")
    inner = pool(db, "198.18.128.0/17")
    with db.read() as session:
        assert service.get(session, small).parent_id == big
        assert service.get(session, inner).parent_id == big
    assert free_space(db, big) == [
        "198.18.0.0/22",
        "198.18.5.0/24",
        "198.18.6.0/23",
        "198.18.8.0/21",
        "198.18.16.0/20",
        "198.18.32.0/19",
        "198.18.64.0/18",
    ]
    with pytest.raises(Conflict, match=r"prefix 198.18.4.0/24 exists already"):
        pool(db, "198.18.4.0/24")
    with db.write() as session:
        service.delete_prefix(session, small)
    assert free_space(db, big) == ["198.18.0.0/17"]
    allocate(db, big, at="198.18.1.0/31")
    with pytest.raises(Conflict, match=r"overlaps 198.18.1.0/31 without containing it"):
        pool(db, "198.18.1.1/32")


def test_deleting_a_pool_that_hands_out_blocks_is_refused(db: Database) -> None:
    holder = pool(db, "198.18.0.0/24")
    allocate(db, holder, prefixlen=31)
    with db.write() as session, pytest.raises(Conflict, match="still holds 1 block"):
        service.delete_prefix(session, holder)
    with db.read() as session, pytest.raises(NotFound, match="metalflow ipam prefix list"):
        service.get(session, "198.51.100.0/24")


@pytest.mark.parametrize("family", [4, 6])
def test_any_sequence_gives_the_reference_index_answers(db: Database, family: int) -> None:
    parent = ipaddress.ip_network("198.18.0.0/24" if family == 4 else "2001:db8::/120")
    reference = FreeIndex(parent)
    holder = pool(db, str(parent))
    rng = random.Random(family)
    held: list[str] = []
    for _ in range(150):
        if held and rng.random() < 0.4:
            cidr = held.pop(rng.randrange(len(held)))
            reference.release(cidr)
            with db.write() as session:
                service.release(session, block_id(db, cidr), quarantine=NO_QUARANTINE)
            continue
        prefixlen = parent.max_prefixlen - rng.choice([0, 1, 1, 2, 3])
        strategy = rng.choice(list(Strategy))
        try:
            expected = str(reference.allocate(prefixlen, strategy))
        except ValueError:
            with pytest.raises(Conflict):
                allocate(db, holder, prefixlen=prefixlen, strategy=strategy)
            continue
        assert allocate(db, holder, prefixlen=prefixlen, strategy=strategy) == expected
        held.append(expected)
        assert free_space(db, holder) == [str(block) for block in reference.free_blocks()]
