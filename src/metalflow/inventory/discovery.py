"""Discovery, the one unauthenticated registration: what an unknown machine's report means, and
who may send one. Pure: no I/O, the clock passed in.

A discovery boot (`metalflow up --discovery`) brings a machine that is in no inventory into the
install environment; its agent sends its hardware attributes, and the machine enters the
inventory in state `new`, as MAAS enlistment and Ironic inspection do. The attributes are free
JSON from the machine, so every field is optional here and anything malformed is left out
instead of refused: the interface the machine booted from is enough to register it.

Anything on the provisioning network can send a report, so only the booting MAC becomes an
interface (claims its MAC); the other NICs reported stay facts in `attributes`. Who may
report is bounded by source network and by token buckets per source address and overall.
The buckets are written here rather than taken from `limits` or `pyrate-limiter`: both read
the wall clock themselves (no clock to pass in and property-test against) and keep one entry
per key for as long as its window lasts, where these keep none past a full bucket.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from metalflow.inventory.schemas import normalize_mac

NAME_PREFIX = "discovered-"
MAX_REPORTED_MACS = 64
MAX_DISKS = 256

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RateRefusal = Literal["rate_address", "rate_overall"]


@dataclass(frozen=True)
class DiscoveredMachine:
    name: str
    mac: str
    """The interface the machine booted from: the only one registered."""
    reported_macs: tuple[str, ...]
    """The other NICs' MACs as reported, each once: facts, claiming nothing."""
    disks: tuple[dict[str, Any], ...]
    """As `MachineSpec.disks` stores them: {"device": "/dev/...", "size_bytes": N}."""
    arch: str
    uefi: bool


def discovered_name(mac: str) -> str:
    """A stable name from the booting MAC: discovering the same machine twice finds it again."""
    return NAME_PREFIX + mac.replace(":", "")


def _mac_or_none(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return normalize_mac(value)
    except ValueError:
        return None


def _entries(attributes: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, list):
            return [entry for entry in value if isinstance(entry, dict)]
    return []


def _disk(entry: dict[str, Any]) -> dict[str, Any] | None:
    device = entry.get("device") or entry.get("path") or entry.get("name")
    if not isinstance(device, str) or not device or "/" in device.removeprefix("/dev/"):
        return None
    size = entry.get("size_bytes", entry.get("size"))
    disk: dict[str, Any] = {"device": device if device.startswith("/dev/") else f"/dev/{device}"}
    disk["size_bytes"] = size if isinstance(size, int) and size >= 0 else None
    return disk


def read_discovery(mac: str, attributes: dict[str, Any]) -> DiscoveredMachine:
    """`mac` is the normalised MAC the agent booted from."""
    reported: list[str] = []
    for entry in _entries(attributes, "nics", "interfaces"):
        other = _mac_or_none(entry.get("mac"))
        if (
            other is not None
            and other != mac
            and other not in reported
            and len(reported) < MAX_REPORTED_MACS
        ):
            reported.append(other)
    disks = [disk for entry in _entries(attributes, "disks") if (disk := _disk(entry))]
    arch = attributes.get("arch")
    uefi = attributes.get("uefi")
    return DiscoveredMachine(
        name=discovered_name(mac),
        mac=mac,
        reported_macs=tuple(reported),
        disks=tuple(disks[:MAX_DISKS]),
        arch=arch if arch in ("x86_64", "aarch64") else "x86_64",
        uefi=uefi if isinstance(uefi, bool) else True,
    )


def caller_address(host: str | None) -> str | None:
    """The caller's address as metalflow stores addresses (an IPv4-mapped IPv6 peer, as a
    dual-stack socket reports it, as IPv4); None when it is not an address."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def network_allows(address: str | None, networks: Sequence[IPNetwork]) -> bool:
    """No networks means any caller; with some, only an address inside one of them."""
    if not networks:
        return True
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip.version == network.version and ip in network for network in networks)


def mac_mismatch(mac: str, caller: str | None, handed_out: Iterable[tuple[str, str]]) -> str | None:
    """Why `mac` cannot be the MAC the caller booted from, or None when nothing says otherwise.

    `handed_out` are the (MAC, address) pairs metalflow itself gave (live DHCP leases,
    inventory reservations) naming the caller's address or `mac`. A machine booted by
    metalflow's DHCP calls from the address it was given, so either pair disagreeing means
    the body names someone else's MAC. With no such pair (proxy mode, a foreign DHCP server),
    the body's MAC is all there is to go by.
    """
    for other_mac, address in handed_out:
        if address == caller and other_mac != mac:
            return (
                f"metalflow gave {caller} to {other_mac}, not {mac}; discover with the MAC"
                " the machine booted from"
            )
        if other_mac == mac and address != caller:
            return (
                f"metalflow gave {mac} the address {address}, but this request came from"
                f" {caller}; discover from the machine that booted with that MAC"
            )
    return None


@dataclass(frozen=True, slots=True)
class Rate:
    per_minute: int
    """Also the burst: a full bucket holds a minute's worth."""

    def wait(self, tokens: float) -> float:
        """Seconds until a bucket holding `tokens` holds one."""
        return max(0.0, (1.0 - tokens) * 60.0 / self.per_minute)


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: float


def refilled(bucket: Bucket | None, rate: Rate, now: float) -> Bucket:
    """The bucket as of `now` (a new one is full); a clock that steps back refills nothing."""
    if bucket is None:
        return Bucket(float(rate.per_minute), now)
    if now <= bucket.at:
        return bucket
    tokens = bucket.tokens + (now - bucket.at) * rate.per_minute / 60.0
    return Bucket(min(float(rate.per_minute), tokens), now)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RateRefusal
    retry_after: float
    """Seconds until the same caller, asking nothing else in between, is admitted."""


class DiscoveryGate:
    """Token buckets per source address and overall, shared by the threads serving requests.

    A caller takes a token from both or from neither, so one busy address never spends the
    overall budget it is refused. An address's bucket is kept only once it has been admitted
    (which the overall bucket bounds) and is dropped again when full, so the table stays within
    two minutes' worth of the overall rate however many addresses call.
    """

    def __init__(self, per_address: Rate, overall: Rate) -> None:
        self.per_address = per_address
        self.overall = overall
        self.max_tracked = 2 * overall.per_minute
        self._lock = threading.Lock()
        self._addresses: dict[str, Bucket] = {}
        self._total: Bucket | None = None

    def __len__(self) -> int:
        return len(self._addresses)

    def admit(self, address: str, now: float) -> Refused | None:
        with self._lock:
            mine = refilled(self._addresses.get(address), self.per_address, now)
            total = refilled(self._total, self.overall, now)
            if mine.tokens < 1 or total.tokens < 1:
                wait = max(self.per_address.wait(mine.tokens), self.overall.wait(total.tokens))
                reason: RateRefusal = "rate_address" if mine.tokens < 1 else "rate_overall"
                return Refused(reason, wait)
            self._addresses[address] = Bucket(mine.tokens - 1, mine.at)
            self._total = Bucket(total.tokens - 1, total.at)
            if len(self._addresses) > self.max_tracked:
                self._forget_full(now)
            return None

    def _forget_full(self, now: float) -> None:
        full = float(self.per_address.per_minute)
        self._addresses = {
            address: bucket
            for address, bucket in self._addresses.items()
            if refilled(bucket, self.per_address, now).tokens < full
        }


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; rounding down would invite a retry that is refused."""
    return str(max(1, math.ceil(seconds)))
