"""Pool leases on both backends: an ACK only for a durable row, group commit, restart, retry."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import select

from metalflow.boot.dhcp import leases
from metalflow.boot.dhcp.leases import Lease, LeaseStore
from metalflow.boot.dhcp.network import AddressRange, NetworkConfig
from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade

IPv4 = ipaddress.IPv4Address
NETWORK = NetworkConfig(
    subnet=ipaddress.IPv4Network("10.1.0.0/20"),
    gateway=IPv4("10.1.0.1"),
    server_ip=IPv4("10.1.0.2"),
    pool=AddressRange(start=IPv4("10.1.0.10"), end=IPv4("10.1.15.250")),
)
NOW = 1_800_000_000.0
LEASE_TIME = 3600
GUARD_SECONDS = 20.0
"""Only stops a hung writer from hanging the suite; no assertion depends on timing."""


def mac(n: int) -> str:
    return "02:00:" + ":".join(f"{byte:02x}" for byte in n.to_bytes(4, "big"))


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    upgrade(database)
    yield database
    database.dispose()


class Acks:
    """The ACKs `then` released, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, IPv4]] = []

    def to(self, client: str, address: IPv4) -> Callable[[], None]:
        return lambda: self.sent.append((client, address))


def lease(
    store: LeaseStore,
    acks: Acks,
    client: str,
    *,
    now: float = NOW,
    requested: IPv4 | None = None,
    hostname: str | None = None,
) -> IPv4:
    """DISCOVER/REQUEST as the DHCP server does it: the candidate, committed at once."""
    address = store.candidate(NETWORK, client, requested, now)
    assert address is not None
    store.commit(NETWORK, client, address, LEASE_TIME, now, hostname, acks.to(client, address))
    return address


@contextlib.asynccontextmanager
async def writing(store: LeaseStore) -> AsyncIterator[None]:
    writer = asyncio.create_task(store.run())
    await asyncio.sleep(0)
    try:
        yield
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        while not done():
            await asyncio.sleep(0.005)


def rows(db: Database) -> dict[str, tuple[str, str, str | None, float]]:
    with db.read() as session:
        found = session.scalars(select(DhcpLease)).all()
    return {
        row.mac: (row.address, row.subnet, row.hostname, row.expires_at.timestamp())
        for row in found
    }


def as_row(lease: Lease) -> tuple[str, str, str | None, float]:
    return (str(lease.address), str(lease.subnet), lease.hostname, lease.expires_at)


def assert_rows_match(db: Database, store: LeaseStore, clients: list[str]) -> None:
    """The table holds exactly the store's leases of `clients`, expiry to the microsecond."""
    expected = {
        client: as_row(found) for client in clients if (found := store.lease_of(client)) is not None
    }
    stored = rows(db)
    assert stored.keys() == expected.keys()
    for client, row in stored.items():
        assert row[:3] == expected[client][:3]
        assert row[3] == pytest.approx(expected[client][3], abs=1e-5)


def test_an_ack_is_sent_only_once_its_row_is_visible_to_other_sessions(db: Database) -> None:
    store = LeaseStore(db, lambda _: False)
    clients = [mac(n) for n in range(300)]
    visible_at_ack: list[bool] = []

    def check_then_ack(client: str, address: IPv4) -> Callable[[], None]:
        def send() -> None:
            with db.read() as session:
                row = session.get(DhcpLease, client)
            visible_at_ack.append(row is not None and row.address == str(address))

        return send

    async def scenario() -> None:
        async with writing(store):
            for n, client in enumerate(clients):
                address = store.candidate(NETWORK, client, None, NOW)
                assert address is not None
                store.commit(
                    NETWORK,
                    client,
                    address,
                    LEASE_TIME,
                    NOW,
                    f"host-{n}",
                    check_then_ack(client, address),
                )
                if n % 7 == 0:
                    await asyncio.sleep(0)
            assert len(visible_at_ack) < len(clients), "the newest lease is not durable yet"
            await until(lambda: len(visible_at_ack) == len(clients))

    asyncio.run(scenario())
    assert all(visible_at_ack)
    assert len({address_of(store, client) for client in clients}) == len(clients)
    assert_rows_match(db, store, clients)


def test_a_thousand_leases_arriving_together_share_one_transaction(db: Database) -> None:
    store = LeaseStore(db, lambda _: False)
    acks = Acks()
    clients = [mac(n) for n in range(1000)]

    async def scenario() -> None:
        async with writing(store):
            for client in clients:
                lease(store, acks, client)
            await until(lambda: len(acks.sent) == len(clients))

    asyncio.run(scenario())
    assert store.commits == 1
    assert store.committed_leases == len(clients)
    assert_rows_match(db, store, clients)


def test_a_batch_is_bounded_by_max_batch(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "MAX_BATCH", 300)
    store = LeaseStore(db, lambda _: False)
    acks = Acks()
    clients = [mac(n) for n in range(1000)]

    async def scenario() -> None:
        async with writing(store):
            for client in clients:
                lease(store, acks, client)
            await until(lambda: len(acks.sent) == len(clients))

    asyncio.run(scenario())
    assert store.commits == 4
    assert_rows_match(db, store, clients)


def hold_first_write(
    store: LeaseStore, monkeypatch: pytest.MonkeyPatch, *, then_fail: bool = False
) -> tuple[threading.Event, threading.Event]:
    """Make the writer's first transaction wait for `release` (and then fail, if asked);
    `entered` says it is waiting."""
    entered, release = threading.Event(), threading.Event()
    write = store._write

    def held(macs: list[str], leases_: list[Lease]) -> None:
        if not entered.is_set():
            entered.set()
            release.wait()
            if then_fail:
                raise ConnectionError("database went away")
        write(macs, leases_)

    monkeypatch.setattr(store, "_write", held)
    return entered, release


def address_of(store: LeaseStore, client: str) -> IPv4:
    found = store.lease_of(client)
    assert found is not None
    return found.address


def test_leases_arriving_during_a_write_go_into_the_next_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LeaseStore(db, lambda _: False)
    acks = Acks()
    entered, release = hold_first_write(store, monkeypatch)
    clients = [mac(n) for n in range(501)]

    async def scenario() -> None:
        async with writing(store):
            lease(store, acks, clients[0])
            await until(entered.is_set)
            for client in clients[1:]:
                lease(store, acks, client)
            release.set()
            await until(lambda: len(acks.sent) == len(clients))

    asyncio.run(scenario())
    assert store.commits == 2
    assert acks.sent[0][0] == clients[0]
    assert_rows_match(db, store, clients)


def test_after_a_restart_clients_keep_their_addresses_and_others_get_new_ones(
    db: Database,
) -> None:
    before = LeaseStore(db, lambda _: False)
    acks = Acks()
    clients = [mac(n) for n in range(50)]

    async def scenario() -> None:
        async with writing(before):
            for client in clients:
                lease(before, acks, client, hostname=f"node-{client[-2:]}")
            await until(lambda: len(acks.sent) == len(clients))

    asyncio.run(scenario())

    after = LeaseStore(db, lambda _: False)
    after.load()
    assert len(after) == len(clients)
    held = set()
    for client in clients:
        old, new = before.lease_of(client), after.lease_of(client)
        assert old is not None
        assert new is not None
        assert as_row(new)[:3] == as_row(old)[:3]
        assert new.expires_at == pytest.approx(old.expires_at, abs=1e-5)
        assert after.candidate(NETWORK, client, None, NOW + 60) == old.address
        held.add(old.address)
    for n in range(50, 150):
        stranger = mac(n)
        assert after.candidate(NETWORK, stranger, None, NOW + 60) not in held
        assert after.candidate(NETWORK, stranger, min(held), NOW + 60) not in held


def test_an_expired_lease_taken_over_after_a_restart_replaces_the_old_row(
    db: Database,
) -> None:
    first = LeaseStore(db, lambda _: False)
    acks = Acks()
    old_client, new_client = mac(1), mac(2)

    async def take_first() -> None:
        async with writing(first):
            lease(first, acks, old_client)
            await until(lambda: len(acks.sent) == 1)

    asyncio.run(take_first())
    address = rows(db)[old_client][0]

    restarted = LeaseStore(db, lambda _: False)
    restarted.load()
    later = NOW + LEASE_TIME + 1

    async def take_over() -> None:
        async with writing(restarted):
            taken = lease(restarted, acks, new_client, now=later, requested=IPv4(address))
            assert taken == IPv4(address)
            await until(lambda: len(acks.sent) == 2)

    asyncio.run(take_over())
    assert restarted.lease_of(old_client) is None
    assert rows(db).keys() == {new_client}
    assert rows(db)[new_client][0] == address


def test_a_takeover_queued_with_the_expired_lease_it_replaces_is_written(
    db: Database,
) -> None:
    """Both in one batch: the old client's lease must not be written beside the new one (the
    address is unique), and its ACK, promising an address now someone else's, never sent."""
    store = LeaseStore(db, lambda _: False)
    acks = Acks()
    old_client, new_client = mac(1), mac(2)
    address = lease(store, acks, old_client)
    taken = lease(store, acks, new_client, now=NOW + LEASE_TIME + 1, requested=address)
    assert taken == address

    async def scenario() -> None:
        async with writing(store):
            await until(lambda: store.commits == 1)

    asyncio.run(scenario())
    assert acks.sent == [(new_client, address)]
    assert_rows_match(db, store, [old_client, new_client])


def test_release_deletes_the_row_and_frees_the_address(db: Database) -> None:
    store = LeaseStore(db, lambda _: False)
    acks = Acks()
    clients = [mac(n) for n in range(3)]

    async def scenario() -> None:
        async with writing(store):
            for client in clients:
                lease(store, acks, client)
            await until(lambda: store.commits == 1)
            address = address_of(store, clients[1])
            assert store.release(clients[1], address)
            await until(lambda: store.commits == 2)
            assert rows(db).keys() == {clients[0], clients[2]}
            assert lease(store, acks, mac(9), requested=address) == address
            await until(lambda: store.commits == 3)

    asyncio.run(scenario())
    assert_rows_match(db, store, [*clients, mac(9)])


def test_a_failed_write_is_retried_with_everything_queued_meanwhile(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(leases, "RETRY_SECONDS", 0.0)
    reserved: set[IPv4] = set()
    store = LeaseStore(db, reserved.__contains__)
    acks = Acks()
    entered, release = hold_first_write(store, monkeypatch, then_fail=True)
    first, later = [mac(n) for n in range(10)], [mac(n) for n in range(10, 20)]
    renewed, released, moved = first[0], first[1], first[2]

    async def scenario() -> None:
        async with writing(store):
            for client in first:
                lease(store, acks, client)
            await until(entered.is_set)
            for client in later:
                lease(store, acks, client)
            lease(store, acks, renewed, now=NOW + 10)
            assert store.release(released, address_of(store, released))
            old = address_of(store, moved)
            reserved.add(old)
            assert lease(store, acks, moved, now=NOW + 10) != old
            release.set()
            await until(lambda: len(acks.sent) == len(first) + len(later))

    asyncio.run(scenario())
    failed = [r.getMessage() for r in caplog.records if "lease_write_failed" in r.getMessage()]
    assert failed == [f"event=dhcp.lease_write_failed leases={len(first)}"]
    sent = [client for client, _ in acks.sent]
    assert sent.count(renewed) == 2
    assert released not in sent
    assert [address for client, address in acks.sent if client == moved] == [
        address_of(store, moved)
    ]
    assert set(sent) == set(first + later) - {released}
    assert_rows_match(db, store, first + later)


def test_one_failing_ack_does_not_stop_the_writer(db: Database) -> None:
    store = LeaseStore(db, lambda _: False)
    acks = Acks()

    def broken() -> None:
        raise OSError("socket closed")

    async def scenario() -> None:
        async with writing(store):
            address = store.candidate(NETWORK, mac(0), None, NOW)
            assert address is not None
            store.commit(NETWORK, mac(0), address, LEASE_TIME, NOW, None, broken)
            lease(store, acks, mac(1))
            await until(lambda: len(acks.sent) == 1)
            lease(store, acks, mac(2))
            await until(lambda: len(acks.sent) == 2)

    asyncio.run(scenario())
    assert_rows_match(db, store, [mac(0), mac(1), mac(2)])


def test_hostnames_the_column_cannot_hold_are_made_to_fit(db: Database) -> None:
    """A NUL-terminated or over-long option 12 would otherwise fail its batch on every retry
    (PostgreSQL), holding back every other client's ACK."""
    store = LeaseStore(db, lambda _: False)
    acks = Acks()

    async def scenario() -> None:
        async with writing(store):
            lease(store, acks, mac(0), hostname="pxe-client\x00")
            lease(store, acks, mac(1), hostname="n" * 255)
            lease(store, acks, mac(2), hostname="\x00")
            await until(lambda: len(acks.sent) == 3)

    asyncio.run(scenario())
    stored = rows(db)
    assert stored[mac(0)][2] == "pxe-client"
    assert stored[mac(1)][2] == "n" * 253
    assert stored[mac(2)][2] is None
