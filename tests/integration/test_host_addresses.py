"""Per-host addresses on both databases, through ipam.hosts: what a machine assigned to a
project gets in its metro, that asking again gives nothing, release into quarantine, a missing
pool refused with nothing written, and the machine index serving what was given."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.errors import Conflict
from metalflow.events import Event, persist
from metalflow.index.store import load_views
from metalflow.inventory.tables import Interface, Machine
from metalflow.ipam import hosts, service
from metalflow.ipam.hostplan import HostSizes
from metalflow.ipam.tables import IpBlock, Kind, Status
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.tables import Project

PACKET = HostSizes(public4=31, private4=31, public6=127, project_private4=25, project_public6=56)
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
PROJECT_A, PROJECT_B = "a" * 32, "b" * 32


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True)
    database = Database(settings.database_url, before_commit=[persist])
    upgrade(database)
    yield database
    database.dispose()


def pools(db: Database, metro: str = "am6", *, kinds: tuple[str, ...] = ("p4", "v4", "p6")) -> None:
    specs = {
        "p4": service.PrefixSpec("198.51.100.0/24", Kind.PUBLIC, metro),
        "v4": service.PrefixSpec("10.70.0.0/16", Kind.PRIVATE, metro),
        "p6": service.PrefixSpec("2001:db8::/48", Kind.PUBLIC, metro),
    }
    with db.write() as session:
        for kind in kinds:
            service.create_prefix(session, specs[kind])


def give(
    db: Database, machine_id: str, project_id: str = PROJECT_A, metro: str = "am6"
) -> list[str]:
    with db.write() as session:
        given = hosts.give_host_addresses(session, machine_id, project_id, metro, PACKET)
        return [block.cidr for block in given]


def held(db: Database, machine_id: str) -> list[str]:
    with db.read() as session:
        return [
            block.cidr for block in hosts.addresses_of(session, [machine_id]).get(machine_id, [])
        ]


def block_count(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(IpBlock)) or 0


def machine(db: Database, name: str, mac: str, ip: str | None = None) -> str:
    machine_id = uuid.uuid4().hex
    with db.write() as session:
        session.add(
            Machine(
                id=machine_id,
                name=name,
                state="ready",
                interfaces=[Interface(position=0, mac=mac, ip=ip, netmask="255.255.255.0")],
            )
        )
    return machine_id


def test_a_machine_gets_a_public_and_private_31_and_a_127_and_its_project_a_25_and_a_56(
    db: Database,
) -> None:
    pools(db)

    assert give(db, "m1") == ["198.51.100.0/31", "10.70.0.0/31", "2001:db8::/127"]

    with db.read() as session:
        project_blocks = service.list_prefixes(session, project_id=PROJECT_A, status=Status.POOL)
        assert [(b.cidr, b.kind, b.metro) for b in project_blocks] == [
            ("10.70.0.0/25", "private", "am6"),
            ("2001:db8::/56", "public", "am6"),
        ]
        blocks = hosts.addresses_of(session, ["m1"])["m1"]
        assert {(b.status, b.machine_id, b.project_id) for b in blocks} == {
            ("assignment", "m1", PROJECT_A)
        }


def test_giving_again_gives_nothing_new(db: Database) -> None:
    pools(db)
    first = give(db, "m1")
    count = block_count(db)

    assert give(db, "m1") == []
    assert block_count(db) == count
    assert held(db, "m1") == sorted(first, key=lambda cidr: (":" in cidr, cidr))


def test_machines_of_one_project_share_its_blocks_and_another_project_gets_its_own(
    db: Database,
) -> None:
    pools(db)
    give(db, "m1")

    assert give(db, "m2") == ["198.51.100.2/31", "10.70.0.2/31", "2001:db8::2/127"]
    assert give(db, "m3", PROJECT_B) == [
        "198.51.100.4/31",
        "10.70.0.128/31",
        "2001:db8:0:100::/127",
    ]


def test_a_full_project_block_makes_the_project_another(db: Database) -> None:
    pools(db)
    sizes = HostSizes(31, 30, 127, 30, 56)
    with db.write() as session:
        hosts.give_host_addresses(session, "m1", PROJECT_A, "am6", sizes)
    with db.write() as session:
        [_, private, _] = hosts.give_host_addresses(session, "m2", PROJECT_A, "am6", sizes)
        assert (private.cidr, service.get(session, private.parent_id or "").cidr) == (
            "10.70.0.4/30",
            "10.70.0.4/30",
        )


def test_released_addresses_go_into_quarantine_and_the_machine_gets_fresh_ones(
    db: Database,
) -> None:
    pools(db)
    first = give(db, "m1")

    with db.write() as session:
        assert hosts.release_host_addresses(session, "m1", NOW, quarantine=HOUR) == 3

    assert held(db, "m1") == []
    with db.read() as session:
        quarantined = service.list_prefixes(session, status=Status.QUARANTINE)
        assert sorted(b.cidr for b in quarantined) == sorted(first)
        assert {(b.machine_id, b.quarantine_until) for b in quarantined} == {(None, NOW + HOUR)}
    assert give(db, "m1") == ["198.51.100.2/31", "10.70.0.2/31", "2001:db8::2/127"]
    with db.write() as session:
        assert hosts.release_host_addresses(session, "m9", NOW, quarantine=HOUR) == 0


@pytest.mark.parametrize(
    ("present", "message"),
    [
        (
            ("p4", "p6"),
            "metro am6 has no private IPv4 pool: add one with `metalflow ipam prefix create CIDR"
            " --kind private --metro am6` (an IPv4 CIDR)",
        ),
        (
            ("v4",),
            "metro am6 has no public IPv4 pool: add one with `metalflow ipam prefix create CIDR"
            " --kind public --metro am6` (an IPv4 CIDR); metro am6 has no public IPv6 pool",
        ),
    ],
)
def test_a_metro_without_a_pool_is_a_conflict_and_nothing_is_written(
    db: Database, present: tuple[str, ...], message: str
) -> None:
    pools(db, kinds=present)
    count = block_count(db)

    with pytest.raises(Conflict) as caught:
        give(db, "m1")

    assert message in caught.value.message and caught.value.field == "metro"
    assert block_count(db) == count
    with pytest.raises(Conflict, match="metro ny5 has no public IPv4 pool"):
        give(db, "m1", metro="ny5")


def test_a_full_metro_pool_is_named_with_its_use(db: Database) -> None:
    with db.write() as session:
        service.create_prefix(session, service.PrefixSpec("198.51.100.0/31", Kind.PUBLIC, "am6"))
    pools(db, kinds=("v4", "p6"))
    give(db, "m1")

    with pytest.raises(
        Conflict,
        match=r"every public IPv4 pool of metro am6 \(198.51.100.0/31\) is too full for a /31",
    ):
        give(db, "m2")
    assert held(db, "m2") == []


def test_a_machine_without_a_metro_is_told_to_set_spec_metro(db: Database) -> None:
    pools(db)

    with pytest.raises(
        Conflict, match=r"stands in no metro.*set spec.metro in its manifest"
    ) as caught:
        give(db, "m1", metro="")

    assert caught.value.field == "metro"


def test_an_elastic_address_and_the_provisioning_address_are_not_per_host_ones(
    db: Database,
) -> None:
    pools(db)
    with db.write() as session:
        owner = tenancy.create_user(session, "ada@example.test", "Ada")
        organization = tenancy.create_organization(session, "acme", owner.id)
        session.add(Project(id=PROJECT_A, organization_id=organization.id, name="web"))
        eip = service.create_prefix(
            session,
            service.PrefixSpec(
                "203.0.113.8/29", Kind.PUBLIC, "am6", project_id=PROJECT_A, byo=True
            ),
        )
        service.allocate(session, eip.id, prefixlen=32, machine_id="m1")
        service.create_prefix(
            session, service.PrefixSpec("172.30.0.0/24", Kind.PRIVATE, "am6", provisioning=True)
        )
        hosts.provisioning_address(session, "m1", metro="am6")

    assert give(db, "m1") == ["198.51.100.0/31", "10.70.0.0/31", "2001:db8::/127"]
    with db.write() as session:
        assert hosts.release_host_addresses(session, "m1", NOW, quarantine=HOUR) == 3
    assert held(db, "m1") == ["172.30.0.2/32", "203.0.113.8/32"]
    with db.write() as session:
        released = hosts.release_host_addresses(
            session, "m1", NOW, quarantine=HOUR, with_provisioning=True
        )
    assert (released, held(db, "m1")) == (1, ["203.0.113.8/32"])


def test_a_provisioning_address_skips_the_network_and_gateway_and_stays_the_machines(
    db: Database,
) -> None:
    with db.write() as session:
        assert hosts.provisioning_address(session, "m1") is None
        service.create_prefix(
            session, service.PrefixSpec("172.30.0.0/24", Kind.PRIVATE, provisioning=True)
        )
        service.create_prefix(session, service.PrefixSpec("172.31.0.0/24", Kind.PRIVATE))

    addresses = []
    for machine_id in ("m1", "m2", "m1"):
        with db.write() as session:
            found = hosts.provisioning_address(session, machine_id, metro="am6")
            assert found is not None
            addresses.append((found.cidr, found.machine_id))
    assert addresses == [("172.30.0.2/32", "m1"), ("172.30.0.3/32", "m2"), ("172.30.0.2/32", "m1")]
    with db.read() as session:
        [block] = hosts.addresses_of(session, ["m2"])["m2"]
        assert hosts.provisioning_fields(session, block) == (
            "172.30.0.3",
            "255.255.255.0",
            "172.30.0.1",
        )
    with db.read() as session:
        kept = service.list_prefixes(session, status=Status.ASSIGNMENT)
        unused = [(b.cidr, b.description) for b in kept if b.machine_id is None]
    assert unused == [
        ("172.30.0.0/32", "172.30.0.0 is not a host address of 172.30.0.0/24: never handed out"),
        ("172.30.0.1/32", "172.30.0.1 is not a host address of 172.30.0.0/24: never handed out"),
    ]


def test_a_metros_sizes_come_from_the_settings(db: Database, settings: Settings) -> None:
    pools(db)
    tuned = settings.model_copy(update={"ipam_metro_sizes": {"am6": {"public4": 32}}})

    with db.write() as session:
        given = hosts.give_host_addresses(
            session, "m1", PROJECT_A, "am6", hosts.host_sizes(tuned, "am6")
        )

    assert [block.cidr for block in given] == ["198.51.100.0/32", "10.70.0.0/31", "2001:db8::/127"]


def test_the_index_serves_what_was_given_and_each_change_names_the_machine(db: Database) -> None:
    pools(db)
    machine_id = machine(db, "web1", "52:54:00:00:5e:01", "192.0.2.11")
    give(db, machine_id)

    with db.read() as session:
        [view] = load_views(session, [machine_id])
        kinds = list(session.scalars(select(Event.kind).where(Event.machine_id == machine_id)))
    assert view.instance is not None
    assert [(a.address, a.gateway, a.cidr, a.public) for a in view.instance.addresses] == [
        ("198.51.100.1", "198.51.100.0", 31, True),
        ("2001:db8::1", "2001:db8::", 127, True),
        ("10.70.0.1", "10.70.0.0", 31, False),
    ]
    assert kinds == ["ipam.host.assigned"]

    with db.write() as session:
        hosts.release_host_addresses(session, machine_id, NOW, quarantine=HOUR)
    with db.read() as session:
        [view] = load_views(session)
        kinds = list(session.scalars(select(Event.kind).where(Event.machine_id == machine_id)))
    assert view.instance is not None
    assert [a.address for a in view.instance.addresses] == ["192.0.2.11"]
    assert kinds == ["ipam.host.assigned", "ipam.host.released"]


def test_machines_of_one_project_assigned_at_once_share_one_project_block(db: Database) -> None:
    """Each would carve the project's first /25 and /56 on its own; the pool's lock makes the
    first carve them and the others take from them."""
    pools(db)
    machines = [f"m{number}" for number in range(8)]
    start = threading.Barrier(len(machines))
    failures: list[BaseException] = []

    def assign(machine_id: str) -> None:
        start.wait()
        try:
            give(db, machine_id)
        except BaseException as exc:  # reported below, with the machine
            failures.append(exc)

    workers = [threading.Thread(target=assign, args=(m,)) for m in machines]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert failures == []
    with db.read() as session:
        project_blocks = service.list_prefixes(session, project_id=PROJECT_A, status=Status.POOL)
        assert [block.cidr for block in project_blocks] == ["10.70.0.0/25", "2001:db8::/56"]
        given = hosts.addresses_of(session, machines)
    assert all(len(given[m]) == 3 for m in machines)
    assert len({block.cidr for blocks in given.values() for block in blocks}) == 3 * len(machines)
