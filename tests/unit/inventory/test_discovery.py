"""Discovery's pure parts: any report is read, never refused; who may report is bounded."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from metalflow.inventory.discovery import (
    MAX_REPORTED_MACS,
    DiscoveryGate,
    Rate,
    caller_address,
    mac_mismatch,
    network_allows,
    read_discovery,
    retry_after_header,
)
from metalflow.inventory.schemas import normalize_mac

BOOT_MAC = "52:54:00:12:34:56"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
macs = st.from_regex(r"\A[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}\Z")
reports = st.fixed_dictionaries(
    {},
    optional={
        "nics": st.lists(
            st.fixed_dictionaries({}, optional={"mac": macs | json_values}) | json_values,
            max_size=80,
        ),
        "disks": st.lists(
            st.fixed_dictionaries(
                {},
                optional={"name": st.text(max_size=12) | json_values, "size_bytes": json_values},
            )
            | json_values,
            max_size=10,
        ),
        "arch": json_values | st.sampled_from(["x86_64", "aarch64"]),
        "uefi": json_values,
    },
)


@given(reports)
def test_any_report_registers_the_booting_interface_first(report: dict[str, Any]) -> None:
    found = read_discovery(BOOT_MAC, report)
    assert (found.name, found.mac) == ("discovered-525400123456", BOOT_MAC)
    assert BOOT_MAC not in found.reported_macs
    assert len(set(found.reported_macs)) == len(found.reported_macs) <= MAX_REPORTED_MACS
    assert all(normalize_mac(mac) == mac for mac in found.reported_macs)
    assert all(disk["device"].startswith("/dev/") for disk in found.disks)
    assert found.arch in ("x86_64", "aarch64")


def test_an_agent_report_becomes_nics_disks_arch_and_firmware() -> None:
    report = {
        "arch": "aarch64",
        "uefi": False,
        "nics": [
            {"name": "eth0", "mac": "52:54:00:12:34:56"},
            {"name": "eth1", "mac": "52-54-00-AB-CD-EF"},
            {"name": "bogus", "mac": "not a mac"},
        ],
        "disks": [
            {"name": "vda", "size_bytes": 4 * 2**30, "model": "QEMU"},
            {"name": "nvme0n1", "size_bytes": -1},
            {"name": "../etc"},
        ],
    }
    found = read_discovery(BOOT_MAC, report)
    assert (found.mac, found.reported_macs) == (BOOT_MAC, ("52:54:00:ab:cd:ef",))
    assert found.disks == (
        {"device": "/dev/vda", "size_bytes": 4 * 2**30},
        {"device": "/dev/nvme0n1", "size_bytes": None},
    )
    assert (found.arch, found.uefi) == ("aarch64", False)


def test_sixty_four_reported_nics_register_only_the_booting_one() -> None:
    nics = [{"mac": f"52:54:00:00:01:{i:02x}"} for i in range(64)]
    found = read_discovery(BOOT_MAC, {"nics": [{"mac": BOOT_MAC}, *nics]})
    assert found.mac == BOOT_MAC
    assert len(found.reported_macs) == 64


# --- the booting MAC against what metalflow handed out ---------------------------------------

CALLER = "192.0.2.50"
other_macs = (
    st.binary(min_size=6, max_size=6)
    .map(lambda raw: ":".join(f"{byte:02x}" for byte in raw))
    .filter(lambda mac: mac != BOOT_MAC)
)
addresses = st.ip_addresses(v=4).map(str).filter(lambda address: address != CALLER)


def test_nothing_handed_out_leaves_the_body_mac_to_go_by() -> None:
    assert mac_mismatch(BOOT_MAC, CALLER, []) is None
    assert mac_mismatch(BOOT_MAC, None, []) is None


@given(st.lists(st.tuples(other_macs, addresses), max_size=5))
def test_the_callers_own_lease_and_unrelated_pairs_agree(unrelated: list[tuple[str, str]]) -> None:
    assert mac_mismatch(BOOT_MAC, CALLER, [*unrelated, (BOOT_MAC, CALLER)]) is None
    assert mac_mismatch(BOOT_MAC, CALLER, unrelated) is None


@given(other_macs)
def test_an_address_leased_to_another_mac_is_refused_naming_both(other: str) -> None:
    message = mac_mismatch(BOOT_MAC, CALLER, [(other, CALLER)])
    assert message is not None
    assert CALLER in message and other in message and BOOT_MAC in message


@given(addresses)
def test_a_mac_leased_to_another_address_is_refused_naming_it(address: str) -> None:
    message = mac_mismatch(BOOT_MAC, CALLER, [(BOOT_MAC, address)])
    assert message is not None
    assert address in message and CALLER in message


# --- networks --------------------------------------------------------------------------------


def test_callers_are_read_as_stored_addresses() -> None:
    assert caller_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert caller_address("2001:db8::1") == "2001:db8::1"
    assert caller_address("testclient") is None
    assert caller_address(None) is None


def test_no_networks_means_any_caller_and_some_means_only_theirs() -> None:
    allowed = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")]
    assert network_allows("198.18.0.1", []) and network_allows(None, [])
    assert network_allows("192.0.2.200", allowed) and network_allows("2001:db8::5", allowed)
    assert not network_allows("198.18.0.1", allowed)
    assert not network_allows("2001:db9::5", allowed)
    assert not network_allows(None, allowed)


# --- rate limits -----------------------------------------------------------------------------

requests = st.lists(
    st.tuples(st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3"]), st.floats(0, 20)),
    max_size=120,
)
rates = st.integers(1, 12)


def _run(gate: DiscoveryGate, calls: list[tuple[str, float]]) -> list[tuple[str, float, bool]]:
    now, answers = 0.0, []
    for address, step in calls:
        now += step
        answers.append((address, now, gate.admit(address, now) is None))
    return answers


def _within(admitted: list[float], rate: Rate) -> bool:
    """Between any two admitted calls, at most a full bucket plus what refilled in between."""
    return all(
        j - i + 1 <= rate.per_minute + (admitted[j] - admitted[i]) * rate.per_minute / 60 + 1e-9
        for i in range(len(admitted))
        for j in range(i, len(admitted))
    )


@given(requests, rates, rates)
def test_no_address_and_no_total_exceed_their_rate(
    calls: list[tuple[str, float]], per_address: int, overall: int
) -> None:
    gate = DiscoveryGate(Rate(per_address), Rate(overall))
    answers = _run(gate, calls)
    assert _within([now for _, now, ok in answers if ok], Rate(overall))
    for address in {address for address, _ in calls}:
        mine = [now for caller, now, ok in answers if ok and caller == address]
        assert _within(mine, Rate(per_address))


@given(requests, rates, rates, st.sampled_from(["192.0.2.1", "192.0.2.9"]))
def test_a_refused_caller_is_admitted_once_its_retry_after_has_passed(
    calls: list[tuple[str, float]], per_address: int, overall: int, address: str
) -> None:
    gate = DiscoveryGate(Rate(per_address), Rate(overall))
    now = _run(gate, calls)[-1][1] if calls else 0.0
    refused = gate.admit(address, now)
    if refused is not None:
        assert int(retry_after_header(refused.retry_after)) >= refused.retry_after > 0
        assert gate.admit(address, now + refused.retry_after + 1e-6) is None


def test_a_busy_address_is_refused_without_spending_the_others_budget() -> None:
    gate = DiscoveryGate(Rate(2), Rate(3))
    answers = [gate.admit("192.0.2.1", 0.0) for _ in range(10)]
    assert answers[:2] == [None, None]
    assert {refused.reason for refused in answers[2:] if refused is not None} == {"rate_address"}
    assert gate.admit("192.0.2.2", 0.0) is None
    refused = gate.admit("192.0.2.3", 0.0)
    assert refused is not None and refused.reason == "rate_overall"


@given(st.lists(st.floats(0.5, 5), min_size=200, max_size=300), rates)
def test_callers_from_ever_new_addresses_keep_the_table_bounded(
    steps: list[float], overall: int
) -> None:
    gate = DiscoveryGate(Rate(1), Rate(overall))
    now = 0.0
    for n, step in enumerate(steps):
        now += step
        gate.admit(f"2001:db8::{n:x}", now)
        assert len(gate) <= gate.max_tracked
