"""Plan matching (pure): does a machine's discovered hardware meet a plan's rule, and if not, why.

The attributes are what the agent's hello and discovery report (agent/hardware.py `collect`):
`arch` (platform.machine()), `cpu` {model, sockets, cores, threads}, `memory_bytes` (MemTotal,
a little below the installed size: write memory minimums a few percent under the DIMMs' total),
`disks` [{name, size_bytes, rotational}] and `nics` [{mac, speed_mbps}]. A disk is `nvme` when
its kernel name says so, else `hdd` when rotational, else `ssd`. The CPU count is physical cores
over all sockets. `aarch64` and `arm64` are one architecture.

Read by hand beside MAAS's and Ironic's inspection rules (both match on the same facts); a miss
names every attribute at fault, not only the first, so `metalflow plan check` explains a
near miss in one look. Disk requirements are matched to distinct disks (a bipartite matching),
so two rules never count one disk twice and their order does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GIB = 1 << 30
ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class Arch(StrEnum):
    X86_64 = "x86_64"
    ARM64 = "arm64"


class DiskType(StrEnum):
    HDD = "hdd"
    SSD = "ssd"
    NVME = "nvme"


class DiskRule(BaseModel):
    """`count` distinct disks of `type` (any type when None), each at least `min_size_gib`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: DiskType | None = None
    min_size_gib: float = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1, le=64)


class Rule(BaseModel):
    """What a plan's machines have; an unset field asks nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Arch | None = None
    cpu_cores_min: int | None = Field(default=None, ge=1)
    cpu_cores_max: int | None = Field(default=None, ge=1)
    cpu_model: str | None = Field(
        default=None,
        max_length=200,
        description="a regular expression searched in the CPU model, case-insensitive",
    )
    memory_min_gib: float | None = Field(default=None, ge=0)
    memory_max_gib: float | None = Field(default=None, ge=0)
    disks: list[DiskRule] = Field(default_factory=list, max_length=16)
    nic_count_min: int | None = Field(default=None, ge=1, le=64)
    nic_speed_min_mbps: int | None = Field(
        default=None, ge=1, description="NICs count only at this link speed or faster"
    )

    @field_validator("cpu_model")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"{value!r} is not a regular expression ({exc}); e.g. 'EPYC 7402P'"
                ) from None
        return value

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        for name, low, high in (
            ("cpu_cores", self.cpu_cores_min, self.cpu_cores_max),
            ("memory", self.memory_min_gib, self.memory_max_gib),
        ):
            if low is not None and high is not None and low > high:
                raise ValueError(f"{name} minimum {low} is above its maximum {high}; swap them")
        return self


@dataclass(frozen=True)
class Miss:
    """One requirement a machine does not meet: `attribute` names it (arch, cpu_cores,
    cpu_model, memory, disks[N], nics, or attributes when nothing was reported)."""

    attribute: str
    reason: str


@dataclass(frozen=True)
class Match:
    misses: tuple[Miss, ...]

    @property
    def matches(self) -> bool:
        return not self.misses

    @property
    def reasons(self) -> list[str]:
        return [miss.reason for miss in self.misses]


def disk_type(disk: Mapping[str, Any]) -> DiskType:
    if str(disk.get("name") or "").startswith("nvme"):
        return DiskType.NVME
    return DiskType.HDD if disk.get("rotational") else DiskType.SSD


def _number(value: Any) -> float | None:
    """A reported number; booleans and text are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _range(
    attribute: str, what: str, value: float | None, low: float | None, high: float | None
) -> list[Miss]:
    if low is None and high is None:
        return []
    if value is None:
        return [Miss(attribute, f"{what}: not reported")]
    shown = _gib(value) if attribute == "memory" else f"{value:g}"
    if low is not None and value < (low * GIB if attribute == "memory" else low):
        return [Miss(attribute, f"{what} {shown} is below the minimum {low:g}")]
    if high is not None and value > (high * GIB if attribute == "memory" else high):
        return [Miss(attribute, f"{what} {shown} is above the maximum {high:g}")]
    return []


def _arch(rule: Rule, attributes: Mapping[str, Any]) -> list[Miss]:
    if rule.arch is None:
        return []
    reported = attributes.get("arch")
    if not isinstance(reported, str):
        return [Miss("arch", "arch: not reported")]
    arch = ARCH_ALIASES.get(reported, reported)
    if arch != rule.arch.value:
        return [Miss("arch", f"arch {reported} is not {rule.arch.value}")]
    return []


def _cpu(rule: Rule, attributes: Mapping[str, Any]) -> list[Miss]:
    cpu = attributes.get("cpu")
    cpu = cpu if isinstance(cpu, Mapping) else {}
    misses = _range(
        "cpu_cores",
        "cpu cores",
        _number(cpu.get("cores")),
        rule.cpu_cores_min,
        rule.cpu_cores_max,
    )
    if rule.cpu_model is not None:
        model = cpu.get("model")
        if not isinstance(model, str):
            misses.append(Miss("cpu_model", "cpu model: not reported"))
        elif not re.search(rule.cpu_model, model, re.IGNORECASE):
            reason = f"cpu model {model!r} does not match {rule.cpu_model!r}"
            misses.append(Miss("cpu_model", reason))
    return misses


def _entries(attributes: Mapping[str, Any], key: str) -> list[Mapping[str, Any]] | None:
    value = attributes.get(key)
    if not isinstance(value, list):
        return None
    return [entry for entry in value if isinstance(entry, Mapping)]


def _fits(rule: DiskRule, disk: Mapping[str, Any]) -> bool:
    size = _number(disk.get("size_bytes"))
    if size is None or size < rule.min_size_gib * GIB:
        return False
    return rule.type is None or disk_type(disk) is rule.type


def _assign(slots: Sequence[DiskRule], disks: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """For each slot the disk it gets (Kuhn's augmenting paths), None when none is left."""
    owner: list[int | None] = [None] * len(disks)

    def augment(slot: int, seen: set[int]) -> bool:
        for index, disk in enumerate(disks):
            if index in seen or not _fits(slots[slot], disk):
                continue
            seen.add(index)
            holder = owner[index]
            if holder is None or augment(holder, seen):
                owner[index] = slot
                return True
        return False

    for slot in range(len(slots)):
        augment(slot, set())
    given: list[int | None] = [None] * len(slots)
    for index, holder in enumerate(owner):
        if holder is not None:
            given[holder] = index
    return given


def _disks(rule: Rule, attributes: Mapping[str, Any]) -> list[Miss]:
    if not rule.disks:
        return []
    disks = _entries(attributes, "disks")
    if disks is None:
        return [Miss("disks", "disks: not reported")]
    slots = [wanted for wanted in rule.disks for _ in range(wanted.count)]
    given = _assign(slots, disks)
    misses = []
    start = 0
    for number, wanted in enumerate(rule.disks):
        got = sum(1 for slot in given[start : start + wanted.count] if slot is not None)
        start += wanted.count
        if got < wanted.count:
            kind = wanted.type.value if wanted.type else "any type"
            misses.append(
                Miss(
                    f"disks[{number}]",
                    f"disks[{number}]: {got} of {wanted.count} disk(s) of {kind} with at least"
                    f" {wanted.min_size_gib:g} GiB (the machine has {_inventory(disks)})",
                )
            )
    return misses


def _inventory(disks: Sequence[Mapping[str, Any]]) -> str:
    if not disks:
        return "no disks"
    return ", ".join(
        f"{disk.get('name', '?')} {disk_type(disk).value}"
        f" {_gib(_number(disk.get('size_bytes')) or 0)}"
        for disk in disks
    )


def _nics(rule: Rule, attributes: Mapping[str, Any]) -> list[Miss]:
    if rule.nic_count_min is None and rule.nic_speed_min_mbps is None:
        return []
    nics = _entries(attributes, "nics")
    if nics is None:
        return [Miss("nics", "nics: not reported")]
    speed = rule.nic_speed_min_mbps
    counted = [
        nic for nic in nics if speed is None or (_number(nic.get("speed_mbps")) or 0) >= speed
    ]
    wanted = rule.nic_count_min or 1
    if len(counted) >= wanted:
        return []
    at = f" at {speed} Mb/s or faster" if speed is not None else ""
    return [
        Miss(
            "nics",
            f"nics: {len(counted)} NIC(s){at}, {wanted} wanted (speeds reported:"
            f" {[nic.get('speed_mbps') for nic in nics]})",
        )
    ]


NOT_REPORTED = Miss("attributes", "no hardware reported yet (the agent reports it when it boots)")


def evaluate(rule: Rule, attributes: Mapping[str, Any]) -> Match:
    """Whether a machine with these discovered attributes is of the rule's plan, with every
    requirement it misses; a machine that reported nothing matches no plan."""
    if not attributes:
        return Match((NOT_REPORTED,))
    return Match(
        tuple(
            _arch(rule, attributes)
            + _cpu(rule, attributes)
            + _range(
                "memory",
                "memory",
                _number(attributes.get("memory_bytes")),
                rule.memory_min_gib,
                rule.memory_max_gib,
            )
            + _disks(rule, attributes)
            + _nics(rule, attributes)
        )
    )


def first_match(rules: Sequence[tuple[str, Rule]], attributes: Mapping[str, Any]) -> str | None:
    """The key of the first rule the attributes match (plans are passed in slug order)."""
    for key, rule in rules:
        if evaluate(rule, attributes).matches:
            return key
    return None
