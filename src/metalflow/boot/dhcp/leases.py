"""Dynamic-pool leases: answered from memory, made durable before the ACK by group commit.

An ACK for a pool address is sent only once its lease is committed, so a restart never forgets
an address a client holds. Commits are batched: while one transaction is being written, every
lease that arrives queues for the next one, so under load one commit carries hundreds of leases
(as ISC dhcpd's delayed-ack does) instead of one commit per lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from anyio import to_thread
from sqlalchemy import Table, select

from metalflow.boot.dhcp.network import AddressRange, NetworkConfig
from metalflow.boot.dhcp.pool import pick_address
from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.db.engine import Database

log = logging.getLogger("metalflow.boot.dhcp")
IPv4 = ipaddress.IPv4Address
OFFER_HOLD_SECONDS = 30.0
"""How long an offered pool address stays set aside for the client it was offered to."""
DECLINE_HOLD_SECONDS = 600.0
"""How long an address a client declined stays out of the pool."""
MAX_DECLINED = 10_000
MAX_BATCH = 2000
"""Leases per transaction: bounded so one transaction never holds the database for long."""
GATHER_SECONDS = 0.005
"""How long the writer lets leases gather before a commit: under load one commit then carries
many leases instead of the writer committing back to back for a few each."""
_LEASE_COLUMNS = ("mac", "address", "subnet", "expires_at", "hostname", "updated_at")
_LEASE_COLUMN_TYPES = ("varchar", "varchar", "varchar", "timestamptz", "varchar", "timestamptz")
"""PostgreSQL's types of _LEASE_COLUMNS, for the arrays a batch is inserted from."""
RETRY_SECONDS = 1.0
"""Pause after a failed lease write before the same leases are written again."""
MAC_LENGTH = 17
"""dhcp_leases.mac holds an Ethernet MAC; a longer hardware address could never be stored."""
HOSTNAME_LENGTH = 253
"""dhcp_leases.hostname's length: a longer name from the client is cut to fit."""


@dataclass(slots=True)
class Lease:
    """One pool lease. Slotted, not frozen (see DhcpPacket); replaced, never changed."""

    mac: str
    address: IPv4
    subnet: ipaddress.IPv4Network
    expires_at: float
    """Seconds since the epoch (wall clock), as stored."""
    hostname: str | None = None


@dataclass(slots=True)
class _Offer:
    mac: str
    until: float


@dataclass(slots=True)
class _Ack:
    """An ACK waiting for the lease of `address` to be durable."""

    address: IPv4
    send: Callable[[], None]


@dataclass(slots=True)
class _Pool:
    """Per network: what it never leases (as integers) and where the next scan starts."""

    network: NetworkConfig
    never_leased: frozenset[int]
    first: int
    last: int
    cursor: int = 0


class LeaseStore:
    """Pool leases of every network; `is_reserved` says which addresses inventory owns.

    Inside, addresses are keyed as integers: hashing an IPv4Address runs Python code (it
    hashes its hex string), and a DISCOVER looks up half a dozen keys.
    """

    def __init__(self, db: Database, is_reserved: Callable[[IPv4], bool]) -> None:
        self.db = db
        self.is_reserved = is_reserved
        self._by_mac: dict[str, Lease] = {}
        self._by_address: dict[int, Lease] = {}
        # One offer per address and per MAC (a client's newest offer replaces its older one),
        # so both maps stay within the pools' sizes however often clients DISCOVER.
        self._offers: dict[int, _Offer] = {}
        self._offered: dict[str, int] = {}
        self._declined: dict[int, float] = {}
        self._pools: dict[int, _Pool] = {}
        # MACs whose row must be brought to their in-memory lease (or deleted), with the ACKs
        # waiting for it. The row is written from the lease held when the batch starts, so a
        # lease superseded while queued (moved, released, taken over after expiry) is never
        # written and its ACK never sent.
        self._queue: dict[str, list[_Ack]] = {}
        self._wake = asyncio.Event()
        self.commits = 0
        self.committed_leases = 0

    def __len__(self) -> int:
        return len(self._by_mac)

    def load(self) -> None:
        with self.db.read() as session:
            rows = session.scalars(select(DhcpLease)).all()
        for row in rows:
            lease = Lease(
                mac=row.mac,
                address=IPv4(row.address),
                subnet=ipaddress.IPv4Network(row.subnet),
                expires_at=row.expires_at.timestamp(),
                hostname=row.hostname,
            )
            self._by_mac[lease.mac] = lease
            self._by_address[int(lease.address)] = lease

    def lease_of(self, mac: str) -> Lease | None:
        return self._by_mac.get(mac)

    def _pool(self, network: NetworkConfig, pool: AddressRange) -> _Pool:
        """Keyed by the network's identity (the entry holds it): hashing a NetworkConfig
        hashes every field."""
        state = self._pools.get(id(network))
        if state is None or state.network is not network:
            subnet = network.subnet
            fixed = (network.server_ip, network.gateway, subnet.network_address)
            never = frozenset(int(a) for a in (*fixed, subnet.broadcast_address) if a is not None)
            state = _Pool(network, never, int(pool.start), int(pool.end))
            self._pools[id(network)] = state
        return state

    def _is_free(self, key: int, mac: str, state: _Pool, now: float) -> bool:
        if key in state.never_leased:
            return False
        lease = self._by_address.get(key)
        if lease is not None and lease.mac != mac and lease.expires_at > now:
            return False
        if self._declined.get(key, 0.0) > now:
            return False
        offer = self._offers.get(key)
        if offer is not None and offer.mac != mac and offer.until > now:
            return False
        return not self.is_reserved(IPv4(key))

    def candidate(
        self, network: NetworkConfig, mac: str, requested: IPv4 | None, now: float
    ) -> IPv4 | None:
        """The address this client gets now: its current lease, else the requested address,
        else its earlier offer, else a free pool address; held for it for OFFER_HOLD_SECONDS.
        None when the pool is exhausted or the MAC could not be stored."""
        pool = network.pool
        if pool is None or not mac or len(mac) > MAC_LENGTH:
            return None
        state = self._pool(network, pool)
        lease = self._by_mac.get(mac)
        key = next(
            (
                k
                for k in preferred(
                    lease, requested, self._offered.get(mac), state.first, state.last
                )
                if self._is_free(k, mac, state, now)
            ),
            None,
        )
        if key is None:
            picked = pick_address(
                pool,
                lambda address: self._is_free(int(address), mac, state, now),
                start=state.cursor,
            )
            if picked is None:
                return None
            key = int(picked)
            state.cursor = key - state.first + 1
        self._hold(mac, key, now + OFFER_HOLD_SECONDS)
        return IPv4(key)

    def _hold(self, mac: str, key: int, until: float) -> None:
        self._drop_offer(mac)
        previous = self._offers.get(key)
        if previous is not None:
            self._drop_offer(previous.mac)
        self._offers[key] = _Offer(mac, until)
        self._offered[mac] = key

    def _drop_offer(self, mac: str) -> None:
        key = self._offered.pop(mac, None)
        if key is not None:
            del self._offers[key]

    def commit(
        self,
        network: NetworkConfig,
        mac: str,
        address: IPv4,
        lease_time: int,
        now: float,
        hostname: str | None,
        then: Callable[[], None],
    ) -> None:
        """Take the lease in memory at once; call `then` when it is durable."""
        key = int(address)
        old = self._by_mac.get(mac)
        if old is not None and old.address != address:
            del self._by_address[int(old.address)]
        displaced = self._by_address.get(key)
        if displaced is not None and displaced.mac != mac:
            del self._by_mac[displaced.mac]
            self._enqueue(displaced.mac, None)
        lease = Lease(mac, address, network.subnet, now + lease_time, _storable(hostname))
        self._by_mac[mac] = lease
        self._by_address[key] = lease
        self._drop_offer(mac)
        offer = self._offers.get(key)
        if offer is not None:
            self._drop_offer(offer.mac)
        self._enqueue(mac, _Ack(address, then))

    def release(self, mac: str, address: IPv4) -> bool:
        lease = self._by_mac.get(mac)
        if lease is None or lease.address != address:
            return False
        del self._by_mac[mac]
        del self._by_address[int(address)]
        self._enqueue(mac, None)
        return True

    def held_address(self, network: NetworkConfig, mac: str, now: float) -> IPv4 | None:
        """The address this client holds from us on this network (a lease, else a live offer),
        allocating nothing: what a REQUEST is checked against."""
        pool = network.pool
        if pool is None:
            return None
        key = self._offered.get(mac)
        offer = self._offers.get(key) if key is not None else None
        state = self._pool(network, pool)
        return held(self._by_mac.get(mac), key, offer, state.first, state.last, now)

    def forget_offer(self, mac: str) -> None:
        """The client chose another server: its offered address is free again."""
        self._drop_offer(mac)

    def decline(self, mac: str, address: IPv4, now: float) -> bool:
        """The client found the address in use (RFC 2131 §4.3.3): free its lease, and keep the
        address from everyone for DECLINE_HOLD_SECONDS, since some other host holds it."""
        if not self.release(mac, address):
            return False
        if len(self._declined) >= MAX_DECLINED:
            self._declined = {a: until for a, until in self._declined.items() if until > now}
        self._declined[int(address)] = now + DECLINE_HOLD_SECONDS
        return True

    def _enqueue(self, mac: str, ack: _Ack | None) -> None:
        acks = self._queue.setdefault(mac, [])
        if ack is not None:
            acks.append(ack)
        self._wake.set()

    def _write(self, macs: list[str], leases: list[Lease]) -> None:
        """Replace the rows of `macs`, and any row holding one of their addresses, by `leases`.

        Plain driver statements (the timestamps through the column type's own bind processor,
        so both databases store what the ORM reads back): the writer shares the GIL, and on a
        one-core server the core, with the packet loop, and SQLAlchemy's per-parameter
        processing and the compiling of IN lists were most of its cost. SQLite's INSERT OR
        REPLACE drops the rows a new one collides with (same MAC or same address) itself, the
        rows going to executemany in-process. PostgreSQL gets two statements whatever the batch
        size, the keys and the columns as arrays: row by row, the backend's per-statement work
        on the same core was the ceiling."""
        table = cast(Table, DhcpLease.__table__)
        addresses = [str(lease.address) for lease in leases]
        with self.db.write() as session:
            connection = session.connection()
            dialect = connection.dialect
            timestamp = table.c.expires_at.type.bind_processor(dialect) or _unchanged
            now = timestamp(dt.datetime.now(dt.UTC))
            subnets: dict[ipaddress.IPv4Network, str] = {}
            rows = [
                (
                    lease.mac,
                    address,
                    subnets.get(lease.subnet)
                    or subnets.setdefault(lease.subnet, str(lease.subnet)),
                    timestamp(dt.datetime.fromtimestamp(lease.expires_at, dt.UTC)),
                    lease.hostname,
                    now,
                )
                for lease, address in zip(leases, addresses, strict=True)
            ]
            columns = ", ".join(_LEASE_COLUMNS)
            if dialect.name == "postgresql":
                connection.exec_driver_sql(
                    f"DELETE FROM {table.name} WHERE mac = ANY(%s) OR address = ANY(%s)",
                    (macs, addresses),
                )
                if rows:
                    arrays = ", ".join(f"%s::{kind}[]" for kind in _LEASE_COLUMN_TYPES)
                    connection.exec_driver_sql(
                        f"INSERT INTO {table.name} ({columns}) SELECT * FROM unnest({arrays})",
                        tuple(list(column) for column in zip(*rows, strict=True)),
                    )
                return
            leased = {lease.mac for lease in leases}
            gone = [(mac,) for mac in macs if mac not in leased]
            if gone:
                connection.exec_driver_sql(f"DELETE FROM {table.name} WHERE mac = ?", gone)
            if rows:
                markers = ", ".join("?" * len(_LEASE_COLUMNS))
                connection.exec_driver_sql(
                    f"INSERT OR REPLACE INTO {table.name} ({columns}) VALUES ({markers})", rows
                )

    async def run(self) -> None:
        """Write queued leases, one transaction per batch, then release their ACKs."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_SECONDS)
            self._wake.clear()
            macs = list(itertools.islice(self._queue, MAX_BATCH))
            acks = {mac: self._queue.pop(mac) for mac in macs}
            if self._queue:
                self._wake.set()
            written = {mac: self._by_mac.get(mac) for mac in macs}
            leases = [lease for lease in written.values() if lease is not None]
            try:
                await to_thread.run_sync(self._write, macs, leases)
            except Exception:
                log.exception("event=dhcp.lease_write_failed leases=%d", len(macs))
                retry = {mac: acks[mac] + self._queue.pop(mac, []) for mac in macs}
                self._queue = retry | self._queue
                self._wake.set()
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.commits += 1
            self.committed_leases += len(macs)
            for mac in macs:
                self._send_acks(mac, written[mac], acks[mac])

    async def drain(self) -> None:
        """Write what is still queued, without waiting to gather (shutdown: the writer task is
        gone and the sockets are closed, so no ACK is sent)."""
        while self._queue:
            macs = list(itertools.islice(self._queue, MAX_BATCH))
            for mac in macs:
                del self._queue[mac]
            leases = [lease for mac in macs if (lease := self._by_mac.get(mac)) is not None]
            try:
                await to_thread.run_sync(self._write, macs, leases)
            except Exception:
                log.exception("event=dhcp.lease_write_failed leases=%d at=shutdown", len(macs))
                return

    def _send_acks(self, mac: str, written: Lease | None, acks: list[_Ack]) -> None:
        """Send the ACKs the written lease makes true, unless the client has moved on since:
        an ACK for an address it no longer holds could hand that address out twice."""
        for ack in acks_to_send(written, self._by_mac.get(mac), acks):
            try:
                ack.send()
            except Exception:
                log.exception("event=dhcp.lease_ack_failed mac=%s", mac)


def preferred(
    lease: Lease | None, requested: IPv4 | None, offered: int | None, first: int, last: int
) -> list[int]:
    """The addresses a DISCOVER's client is offered before any other, best first, as integers:
    its current lease, the address it asks for (option 50), its earlier offer; only those in
    the pool's range [first, last]. Whether each is free is the store's to say."""
    keys = (
        int(lease.address) if lease else None,
        int(requested) if requested is not None else None,
        offered,
    )
    return [key for key in keys if key is not None and first <= key <= last]


def held(
    lease: Lease | None,
    offered: int | None,
    offer: _Offer | None,
    first: int,
    last: int,
    now: float,
) -> IPv4 | None:
    """The address a REQUEST is checked against: the client's unexpired lease in this pool's
    range, else its live offer there; never a new one."""
    if lease is not None and lease.expires_at > now and first <= int(lease.address) <= last:
        return lease.address
    if offered is None or offer is None or offer.until <= now or not first <= offered <= last:
        return None
    return IPv4(offered)


def acks_to_send(written: Lease | None, held: Lease | None, acks: list[_Ack]) -> list[_Ack]:
    """The ACKs a written lease makes true: none when the client has moved on since (released,
    moved or lost the address while the write was under way), since an ACK for an address it no
    longer holds could hand that address out twice; else those for the written address."""
    if written is None or held is None or held.address != written.address:
        return []
    return [ack for ack in acks if ack.address == written.address]


def _unchanged(value: object) -> object:
    return value


def _storable(hostname: str | None) -> str | None:
    """The client's hostname as the column can hold it: PostgreSQL rejects NUL characters (some
    clients NUL-terminate option 12) and names past the column's length, and one such row would
    fail every retry of its batch."""
    if hostname is None:
        return None
    printable = "".join(char for char in hostname if char.isprintable())
    return printable[:HOSTNAME_LENGTH] or None
