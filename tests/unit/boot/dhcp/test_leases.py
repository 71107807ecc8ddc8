"""The lease store's decisions, without a database: which address, which lease, which ACKs."""

from __future__ import annotations

import ipaddress
from typing import cast

from metalflow.boot.dhcp.leases import (
    DECLINE_HOLD_SECONDS,
    OFFER_HOLD_SECONDS,
    Lease,
    LeaseStore,
    _Ack,
    _Offer,
    acks_to_send,
    held,
    preferred,
)
from metalflow.boot.dhcp.network import AddressRange, NetworkConfig
from metalflow.db.engine import Database

IP = ipaddress.IPv4Address
SUBNET = ipaddress.IPv4Network("192.0.2.0/24")
NETWORK = NetworkConfig(
    subnet=SUBNET,
    server_ip=IP("192.0.2.1"),
    pool=AddressRange(start=IP("192.0.2.100"), end=IP("192.0.2.102")),
)
FIRST, LAST = int(IP("192.0.2.100")), int(IP("192.0.2.102"))
MAC_A, MAC_B = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
NOW = 1_000_000.0


def lease(address: str, mac: str = MAC_A, expires_at: float = NOW + 600) -> Lease:
    return Lease(mac, IP(address), SUBNET, expires_at)


def store(reserved: frozenset[str] = frozenset()) -> LeaseStore:
    """A store whose decisions never reach the database (only commits are written)."""
    return LeaseStore(cast(Database, None), lambda address: str(address) in reserved)


def test_preferred_is_lease_then_requested_then_offer_within_the_range() -> None:
    keys = preferred(lease("192.0.2.101"), IP("192.0.2.102"), FIRST, FIRST, LAST)
    assert keys == [FIRST + 1, FIRST + 2, FIRST]
    outside = preferred(lease("192.0.2.50"), IP("198.18.0.1"), None, FIRST, LAST)
    assert outside == []


def test_held_is_the_live_lease_else_the_live_offer() -> None:
    offer = _Offer(MAC_A, NOW + 10)
    assert held(lease("192.0.2.101"), FIRST, offer, FIRST, LAST, NOW) == IP("192.0.2.101")
    expired = lease("192.0.2.101", expires_at=NOW)
    assert held(expired, FIRST, offer, FIRST, LAST, NOW) == IP("192.0.2.100")
    assert held(expired, FIRST, _Offer(MAC_A, NOW), FIRST, LAST, NOW) is None
    assert held(lease("192.0.2.50"), None, None, FIRST, LAST, NOW) is None
    assert held(None, LAST + 1, offer, FIRST, LAST, NOW) is None


def test_acks_go_out_only_for_the_address_still_held() -> None:
    sent: list[str] = []
    ack = _Ack(IP("192.0.2.100"), lambda: sent.append("a"))
    stale = _Ack(IP("192.0.2.101"), lambda: sent.append("b"))
    written = lease("192.0.2.100")
    assert acks_to_send(written, written, [ack, stale]) == [ack]
    assert acks_to_send(written, lease("192.0.2.101"), [ack, stale]) == []
    assert acks_to_send(written, None, [ack]) == []
    assert acks_to_send(None, written, [ack]) == []
    assert sent == []


def test_a_discover_is_held_an_address_that_no_other_client_gets() -> None:
    leases = store()
    first = leases.candidate(NETWORK, MAC_A, None, NOW)
    second = leases.candidate(NETWORK, MAC_B, first, NOW)
    assert first is not None and second is not None and first != second
    assert leases.candidate(NETWORK, MAC_A, None, NOW + 1) == first
    assert leases.held_address(NETWORK, MAC_A, NOW + 1) == first
    assert leases.held_address(NETWORK, MAC_A, NOW + 1 + OFFER_HOLD_SECONDS) is None


def test_reserved_and_fixed_addresses_are_never_offered() -> None:
    leases = store(reserved=frozenset({"192.0.2.100", "192.0.2.101"}))
    assert leases.candidate(NETWORK, MAC_A, None, NOW) == IP("192.0.2.102")
    assert leases.candidate(NETWORK, MAC_B, None, NOW) is None


def test_a_forgotten_offer_is_free_for_the_next_client() -> None:
    leases = store()
    offered = leases.candidate(NETWORK, MAC_A, None, NOW)
    leases.forget_offer(MAC_A)
    assert leases.held_address(NETWORK, MAC_A, NOW) is None
    assert leases.candidate(NETWORK, MAC_B, offered, NOW) == offered


def test_a_declined_address_stays_out_of_the_pool_for_a_while() -> None:
    leases = store()
    address = IP("192.0.2.100")
    leases.commit(NETWORK, MAC_A, address, 600, NOW, None, lambda: None)
    assert leases.decline(MAC_A, address, NOW)
    assert not leases.decline(MAC_A, address, NOW)
    assert leases.candidate(NETWORK, MAC_B, address, NOW) != address
    later = NOW + DECLINE_HOLD_SECONDS + 1
    assert leases.candidate(NETWORK, "52:54:00:00:00:0c", address, later) == address


def test_a_committed_lease_is_what_a_request_is_checked_against() -> None:
    leases = store()
    address = IP("192.0.2.101")
    leases.commit(NETWORK, MAC_A, address, 600, NOW, "web\x001", lambda: None)
    assert leases.held_address(NETWORK, MAC_A, NOW + 599) == address
    assert leases.held_address(NETWORK, MAC_A, NOW + 600) is None
    held_lease = leases.lease_of(MAC_A)
    assert held_lease is not None and held_lease.hostname == "web1"
    assert not leases.release(MAC_B, address)
    assert leases.release(MAC_A, address)
    assert leases.lease_of(MAC_A) is None
