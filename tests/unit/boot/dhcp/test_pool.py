"""Pool address choice and the in-memory lease rules, property-tested without a database."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from metalflow.boot.dhcp.leases import DECLINE_HOLD_SECONDS, OFFER_HOLD_SECONDS, LeaseStore
from metalflow.boot.dhcp.network import AddressRange, NetworkConfig
from metalflow.boot.dhcp.pool import pick_address
from metalflow.db.engine import Database

IPv4 = ipaddress.IPv4Address
BASE = int(IPv4("10.0.0.0"))


@st.composite
def pools(draw: st.DrawFn) -> AddressRange:
    first = draw(st.integers(0, 40))
    size = draw(st.integers(1, 24))
    return AddressRange(start=IPv4(BASE + first), end=IPv4(BASE + first + size - 1))


addresses = st.integers(0, 70).map(lambda offset: IPv4(BASE + offset))


def in_pool(pool: AddressRange) -> list[IPv4]:
    return [IPv4(value) for value in range(int(pool.start), int(pool.end) + 1)]


@given(pools(), st.sets(addresses), st.none() | addresses, st.integers(-1000, 1000))
def test_pick_is_a_free_pool_address_whenever_one_exists(
    pool: AddressRange, free: set[IPv4], requested: IPv4 | None, start: int
) -> None:
    picked = pick_address(pool, free.__contains__, requested=requested, start=start)
    if picked is None:
        assert not free.intersection(in_pool(pool))
    else:
        assert picked in pool
        assert picked in free


@given(pools(), st.sets(addresses), addresses, st.integers(-1000, 1000))
def test_pick_honours_a_free_requested_address(
    pool: AddressRange, free: set[IPv4], requested: IPv4, start: int
) -> None:
    picked = pick_address(pool, free.__contains__, requested=requested, start=start)
    if requested in pool and requested in free:
        assert picked == requested


@given(pools(), st.sets(addresses), st.integers(-1000, 1000), st.integers(-5, 5))
def test_pick_scans_from_the_cursor_and_wraps(
    pool: AddressRange, free: set[IPv4], start: int, laps: int
) -> None:
    """The first free address in pool order rotated to begin at `start` (taken modulo size)."""
    ordered = in_pool(pool)
    offset = start % pool.size
    rotated = ordered[offset:] + ordered[:offset]
    expected = next((address for address in rotated if address in free), None)
    assert pick_address(pool, free.__contains__, start=start) == expected
    assert pick_address(pool, free.__contains__, start=start + laps * pool.size) == expected


def test_pick_wraps_past_the_pools_end() -> None:
    pool = AddressRange(start=IPv4("10.0.0.10"), end=IPv4("10.0.0.14"))
    free = {IPv4("10.0.0.11")}
    assert pick_address(pool, free.__contains__, start=3) == IPv4("10.0.0.11")


SUBNET = ipaddress.IPv4Network("10.0.0.0/28")
NETWORK = NetworkConfig(
    subnet=SUBNET,
    gateway=IPv4("10.0.0.1"),
    server_ip=IPv4("10.0.0.2"),
    # The whole subnet: the network, broadcast, gateway and server addresses lie inside it.
    pool=AddressRange(start=IPv4("10.0.0.0"), end=IPv4("10.0.0.15")),
)
RESERVED = frozenset({IPv4("10.0.0.5"), IPv4("10.0.0.9")})
NEVER_GIVEN = RESERVED | {
    IPv4("10.0.0.0"),
    IPv4("10.0.0.1"),
    IPv4("10.0.0.2"),
    IPv4("10.0.0.15"),
}
GIVABLE = frozenset(in_pool(AddressRange(start=IPv4("10.0.0.0"), end=IPv4("10.0.0.15"))))
GIVABLE -= NEVER_GIVEN
MACS = [f"52:54:00:00:00:{n:02x}" for n in range(14)]
"""More clients than the 10 addresses they can get, so the pool runs out."""


def unopenable_database() -> Database:
    """A database any use of would fail: candidate, commit and release must not touch it."""
    return Database("sqlite:////nonexistent/metalflow-tests/leases.db")


class LeaseRules(RuleBasedStateMachine):
    """Clients DISCOVER, REQUEST and RELEASE while time passes; what each was told is modelled
    here and checked against the store's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.store = LeaseStore(unopenable_database(), RESERVED.__contains__)
        self.now = 1_800_000_000.0
        self.offers: dict[str, tuple[IPv4, float]] = {}
        self.leases: dict[str, tuple[IPv4, float]] = {}

    def claims(self) -> dict[str, set[IPv4]]:
        """Addresses each client may use now: its unexpired lease and its newest live offer."""
        held: dict[str, set[IPv4]] = {}
        for claims in (self.offers, self.leases):
            for mac, (address, until) in claims.items():
                if until > self.now:
                    held.setdefault(mac, set()).add(address)
        return held

    def candidate(self, mac: str, requested: IPv4 | None) -> IPv4 | None:
        lease = self.leases.get(mac)
        address = self.store.candidate(NETWORK, mac, requested, self.now)
        if lease is not None and lease[1] > self.now:
            assert address == lease[0], "a client with an unexpired lease keeps its address"
        if address is None:
            others = {a for client, held in self.claims().items() if client != mac for a in held}
            assert others >= GIVABLE, "no address only while every givable one is held"
            return None
        assert address in GIVABLE
        self.offers[mac] = (address, self.now + OFFER_HOLD_SECONDS)
        return address

    @rule(mac=st.sampled_from(MACS), requested=st.none() | st.sampled_from(sorted(GIVABLE)))
    def discover(self, mac: str, requested: IPv4 | None) -> None:
        self.candidate(mac, requested)

    @rule(
        mac=st.sampled_from(MACS),
        requested=st.none() | st.sampled_from(sorted(NEVER_GIVEN | GIVABLE)),
        lease_time=st.integers(60, 600),
        hostname=st.none() | st.text(max_size=3),
    )
    def request(
        self, mac: str, requested: IPv4 | None, lease_time: int, hostname: str | None
    ) -> None:
        address = self.candidate(mac, requested)
        if address is None:
            return
        acks: list[str] = []
        self.store.commit(
            NETWORK, mac, address, lease_time, self.now, hostname, lambda: acks.append(mac)
        )
        assert not acks, "no ACK before the lease is durable"
        del self.offers[mac]
        self.leases[mac] = (address, self.now + lease_time)
        for other, (held, _) in list(self.leases.items()):
            if other != mac and held == address:
                del self.leases[other]
        lease = self.store.lease_of(mac)
        assert lease is not None
        assert (lease.address, lease.expires_at) == self.leases[mac]

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        mac = data.draw(st.sampled_from(sorted(self.leases)))
        address = self.leases.pop(mac)[0]
        assert self.store.release(mac, address)
        assert self.store.lease_of(mac) is None
        assert not self.store.release(mac, address)

    @rule(seconds=st.sampled_from([1.0, 10.0, OFFER_HOLD_SECONDS, 59.0, 120.0, 700.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def no_address_is_held_twice(self) -> None:
        holders: dict[IPv4, str] = {}
        for mac, held in self.claims().items():
            for address in held:
                assert holders.setdefault(address, mac) == mac, f"{address} held twice"

    @invariant()
    def the_store_knows_every_unexpired_lease(self) -> None:
        for mac, (address, until) in self.leases.items():
            if until > self.now:
                lease = self.store.lease_of(mac)
                assert lease is not None
                assert lease.address == address


TestLeaseRules = LeaseRules.TestCase
TestLeaseRules.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


def test_a_client_discovering_again_holds_one_offer_not_many() -> None:
    """Repeated DISCOVERs from one client must not set aside address after address."""
    store = LeaseStore(unopenable_database(), RESERVED.__contains__)
    now = 1_800_000_000.0
    first = store.candidate(NETWORK, MACS[0], None, now)
    again = [store.candidate(NETWORK, MACS[0], requested, now) for requested in sorted(GIVABLE)]
    assert first is not None
    assert again[-1] == max(GIVABLE)
    others = {store.candidate(NETWORK, mac, None, now) for mac in MACS[1:]}
    assert len(others - {None}) == len(GIVABLE) - 1


def test_an_unstorable_hardware_address_gets_no_pool_address() -> None:
    store = LeaseStore(unopenable_database(), RESERVED.__contains__)
    infiniband = ":".join(["aa"] * 16)
    assert store.candidate(NETWORK, infiniband, None, 0.0) is None
    assert store.candidate(NETWORK, "", None, 0.0) is None


def test_no_pool_no_address() -> None:
    store = LeaseStore(unopenable_database(), RESERVED.__contains__)
    network = NetworkConfig(subnet=SUBNET, gateway=IPv4("10.0.0.1"))
    assert store.candidate(network, MACS[0], IPv4("10.0.0.3"), 0.0) is None


def test_a_declined_address_stays_out_of_the_pool_for_a_while() -> None:
    store = LeaseStore(unopenable_database(), RESERVED.__contains__)
    now = 1_800_000_000.0
    address = store.candidate(NETWORK, MACS[0], None, now)
    assert address is not None
    store.commit(NETWORK, MACS[0], address, 3600, now, None, lambda: None)
    assert store.decline(MACS[0], address, now)
    assert store.lease_of(MACS[0]) is None
    soon = [store.candidate(NETWORK, mac, address, now + 1) for mac in MACS[1:]]
    assert address not in soon
    later = now + DECLINE_HOLD_SECONDS + 1
    assert store.candidate(NETWORK, MACS[0], address, later) == address
    assert not store.decline(MACS[1], address, later), "only the holder can decline its lease"
