"""Original, for mutation checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy import delete, insert, or_, select

from metalflow.boot.dhcp.network import NetworkConfig
from metalflow.boot.dhcp.pool import pick_address
from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.db.engine import Database

log = logging.getLogger("metalflow.boot.dhcp")
IPv4 = ipaddress.IPv4Address
OFFER_HOLD_SECONDS = 30.0
MAX_BATCH = 2000
RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Lease:
    mac: str
    address: IPv4
    subnet: ipaddress.IPv4Network
    expires_at: float
    hostname: str | None = None


@dataclass
class _Write:
    lease: Lease | None
    mac: str
    done: list[Callable[[], None]]


class LeaseStore:
    def __init__(self, db: Database, is_reserved: Callable[[IPv4], bool]) -> None:
        self.db = db
        self.is_reserved = is_reserved
        self._by_mac: dict[str, Lease] = {}
        self._by_address: dict[IPv4, Lease] = {}
        self._offers: dict[IPv4, tuple[str, float]] = {}
        self._cursor: dict[ipaddress.IPv4Network, int] = {}
        self._queue: dict[str, _Write] = {}
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
            self._by_address[lease.address] = lease

    def lease_of(self, mac: str) -> Lease | None:
        return self._by_mac.get(mac)

    def _is_free_for(self, mac, network, now):
        taken = {network.server_ip, network.gateway, network.subnet.network_address}
        taken.add(network.subnet.broadcast_address)

        def is_free(address: IPv4) -> bool:
            if address in taken or self.is_reserved(address):
                return False
            lease = self._by_address.get(address)
            if lease is not None and lease.mac != mac and lease.expires_at > now:
                return False
            offer = self._offers.get(address)
            return offer is None or offer[0] == mac or offer[1] <= now

        return is_free

    def candidate(self, network, mac, requested, now):
        pool = network.pool
        if pool is None:
            return None
        is_free = self._is_free_for(mac, network, now)
        lease = self._by_mac.get(mac)
        if lease is not None and lease.address in pool and is_free(lease.address):
            address = lease.address
        else:
            start = self._cursor.get(network.subnet, 0)
            address = pick_address(pool, is_free, requested=requested, start=start)
            if address is not None:
                self._cursor[network.subnet] = int(address) - int(pool.start) + 1
        if address is not None:
            self._offers[address] = (mac, now + OFFER_HOLD_SECONDS)
            if len(self._offers) > 2 * pool.size:
                self._offers = {a: o for a, o in self._offers.items() if o[1] > now}
        return address

    def commit(self, network, mac, address, lease_time, now, hostname, then):
        old = self._by_mac.get(mac)
        if old is not None and old.address != address:
            self._by_address.pop(old.address, None)
        lease = Lease(mac, address, network.subnet, now + lease_time, hostname)
        displaced = self._by_address.get(address)
        if displaced is not None and displaced.mac != mac:
            self._by_mac.pop(displaced.mac, None)
        self._by_mac[mac] = lease
        self._by_address[address] = lease
        self._offers.pop(address, None)
        self._enqueue(mac, lease, then)

    def release(self, mac, address):
        lease = self._by_mac.get(mac)
        if lease is None or lease.address != address:
            return False
        del self._by_mac[mac]
        self._by_address.pop(address, None)
        self._enqueue(mac, None, None)
        return True

    def _enqueue(self, mac, lease, then):
        write = self._queue.get(mac)
        if write is None:
            write = self._queue[mac] = _Write(lease, mac, [])
        else:
            write.lease = lease
        if then is not None:
            write.done.append(then)
        self._wake.set()

    def _write(self, batch):
        macs = [write.mac for write in batch]
        leases = [write.lease for write in batch if write.lease is not None]
        addresses = [str(lease.address) for lease in leases]
        with self.db.write() as session:
            session.execute(
                delete(DhcpLease).where(
                    or_(DhcpLease.mac.in_(macs), DhcpLease.address.in_(addresses))
                )
            )
            if leases:
                now = dt.datetime.now(dt.UTC)
                session.execute(
                    insert(DhcpLease),
                    [
                        {
                            "mac": lease.mac,
                            "address": str(lease.address),
                            "subnet": str(lease.subnet),
                            "expires_at": dt.datetime.fromtimestamp(lease.expires_at, dt.UTC),
                            "hostname": lease.hostname,
                            "updated_at": now,
                        }
                        for lease in leases
                    ],
                )

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = list(itertools.islice(self._queue.values(), MAX_BATCH))
            for write in batch:
                del self._queue[write.mac]
            if self._queue:
                self._wake.set()
            try:
                await to_thread.run_sync(self._write, batch)
            except Exception:
                log.exception("event=dhcp.lease_write_failed leases=%d", len(batch))
                for write in batch:
                    newer = self._queue.get(write.mac)
                    if newer is None:
                        self._queue[write.mac] = write
                    else:
                        newer.done[:0] = write.done
                self._wake.set()
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.commits += 1
            self.committed_leases += len(batch)
            for write in batch:
                for callback in write.done:
                    callback()
