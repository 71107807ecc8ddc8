"""Plan matching: a machine built from a rule's minimums is in the plan; raising any minimum past
what the machine has, or losing an attribute the rule asks about, makes it miss, and the reason
names that attribute."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from metalflow.cloud.matching import (
    GIB,
    Arch,
    DiskRule,
    DiskType,
    Rule,
    disk_type,
    evaluate,
    first_match,
)

disk_rules = st.builds(
    DiskRule,
    type=st.none() | st.sampled_from(list(DiskType)),
    min_size_gib=st.integers(min_value=0, max_value=4000),
    count=st.integers(min_value=1, max_value=4),
)
rules = st.builds(
    Rule,
    arch=st.none() | st.sampled_from(list(Arch)),
    cpu_cores_min=st.none() | st.integers(min_value=1, max_value=256),
    cpu_model=st.none() | st.sampled_from(["EPYC", "Xeon", "Ampere"]),
    memory_min_gib=st.none() | st.integers(min_value=1, max_value=2048),
    disks=st.lists(disk_rules, max_size=3),
    nic_count_min=st.none() | st.integers(min_value=1, max_value=4),
    nic_speed_min_mbps=st.none() | st.sampled_from([1000, 10000, 25000]),
)


def disk(index: int, wanted: DiskRule) -> dict[str, Any]:
    """A disk that meets `wanted` exactly: its type and its minimum size."""
    kind = wanted.type or DiskType.SSD
    name = f"nvme{index}n1" if kind is DiskType.NVME else f"sd{chr(ord('a') + index)}"
    size = int(wanted.min_size_gib * GIB)
    return {"name": name, "size_bytes": size, "rotational": kind is DiskType.HDD}


def machine_of(rule: Rule) -> dict[str, Any]:
    """The attributes the agent would report for a machine with exactly the rule's minimums."""
    slots = [wanted for wanted in rule.disks for _ in range(wanted.count)]
    nics = rule.nic_count_min or 1
    return {
        "arch": {Arch.X86_64: "x86_64", Arch.ARM64: "aarch64", None: "x86_64"}[rule.arch],
        "cpu": {"model": f"CPU {rule.cpu_model or 'any'} 8-Core", "cores": rule.cpu_cores_min or 1},
        "memory_bytes": int((rule.memory_min_gib or 1) * GIB),
        "disks": [disk(index, wanted) for index, wanted in enumerate(slots)],
        "nics": [
            {"mac": f"52:54:00:00:00:{index:02x}", "speed_mbps": rule.nic_speed_min_mbps or 1000}
            for index in range(nics)
        ],
    }


@given(rules)
def test_a_machine_with_the_minimums_matches(rule: Rule) -> None:
    found = evaluate(rule, machine_of(rule))
    assert found.matches, found.reasons


RAISES = {
    "cpu_cores": lambda rule: rule.model_copy(
        update={"cpu_cores_min": (rule.cpu_cores_min or 1) + 1}
    ),
    "memory": lambda rule: rule.model_copy(
        update={"memory_min_gib": (rule.memory_min_gib or 1) + 1}
    ),
    "nics": lambda rule: rule.model_copy(update={"nic_count_min": (rule.nic_count_min or 1) + 1}),
    "disks[0]": lambda rule: rule.model_copy(
        update={
            "disks": [
                rule.disks[0].model_copy(update={"min_size_gib": rule.disks[0].min_size_gib + 1}),
                *rule.disks[1:],
            ]
        }
    ),
}


@given(rules, st.sampled_from(sorted(RAISES)))
def test_raising_a_minimum_past_the_machine_misses_naming_it(rule: Rule, attribute: str) -> None:
    if attribute == "disks[0]" and not rule.disks:
        rule = rule.model_copy(update={"disks": [DiskRule(min_size_gib=10)]})
    attributes = machine_of(rule)
    raised = RAISES[attribute](rule)
    found = evaluate(raised, attributes)
    assert not found.matches
    # Disk requirements share the disks: which of them goes without is the matching's choice.
    group = attribute.split("[")[0]
    assert group in {miss.attribute.split("[")[0] for miss in found.misses}
    assert any(group.replace("_", " ") in reason for reason in found.reasons)


ASKED_BY = {
    "arch": ("arch", Rule(arch=Arch.X86_64)),
    "cpu": ("cpu_cores", Rule(cpu_cores_min=1)),
    "memory_bytes": ("memory", Rule(memory_min_gib=1)),
    "disks": ("disks", Rule(disks=[DiskRule()])),
    "nics": ("nics", Rule(nic_count_min=1)),
}


@given(rules, st.sampled_from(sorted(ASKED_BY)))
def test_a_missing_attribute_never_matches_and_says_so(rule: Rule, key: str) -> None:
    attribute, asking = ASKED_BY[key]
    merged = rule.model_copy(
        update={name: getattr(asking, name) for name in asking.model_fields_set}
    )
    attributes = machine_of(merged)
    del attributes[key]
    found = evaluate(merged, attributes)
    assert not found.matches
    assert any("not reported" in reason for reason in found.reasons)
    assert attribute in {miss.attribute for miss in found.misses}


@given(rules)
def test_a_machine_that_reported_nothing_matches_no_plan(rule: Rule) -> None:
    found = evaluate(rule, {})
    assert found.reasons == ["no hardware reported yet (the agent reports it when it boots)"]


def test_arm64_and_x86_64_plans_take_their_own_machines() -> None:
    arm = machine_of(Rule(arch=Arch.ARM64))
    x86 = machine_of(Rule(arch=Arch.X86_64))
    plans = [("a-arm", Rule(arch=Arch.ARM64)), ("b-x86", Rule(arch=Arch.X86_64))]
    assert first_match(plans, arm) == "a-arm"
    assert first_match(plans, x86) == "b-x86"
    assert evaluate(Rule(arch=Arch.ARM64), x86).reasons == ["arch x86_64 is not arm64"]


def test_the_first_plan_in_order_wins_and_none_when_none_matches() -> None:
    attributes = machine_of(Rule(cpu_cores_min=8))
    plans = [("big", Rule(cpu_cores_min=16)), ("mid", Rule(cpu_cores_min=8)), ("any", Rule())]
    assert first_match(plans, attributes) == "mid"
    assert first_match(plans[:1], attributes) is None


def test_one_disk_never_serves_two_requirements() -> None:
    """A greedy pass would give the big NVMe to the small requirement and miss the big one."""
    rule = Rule(disks=[DiskRule(type=DiskType.NVME, min_size_gib=100), DiskRule(min_size_gib=1000)])
    attributes = {
        "disks": [
            {"name": "nvme0n1", "size_bytes": 2000 * GIB, "rotational": False},
            {"name": "nvme1n1", "size_bytes": 200 * GIB, "rotational": False},
        ]
    }
    assert evaluate(rule, attributes).matches
    attributes["disks"].pop()
    found = evaluate(rule, attributes)
    assert [miss.attribute for miss in found.misses] == ["disks[1]"]
    assert "0 of 1 disk(s) of any type with at least 1000 GiB" in found.reasons[0]


def test_reasons_say_what_the_machine_has() -> None:
    rule = Rule(cpu_model="EPYC", memory_max_gib=32, nic_speed_min_mbps=10000, cpu_cores_max=4)
    attributes = {
        "cpu": {"model": "Intel Xeon E-2278G", "cores": 8},
        "memory_bytes": 64 * GIB,
        "nics": [{"mac": "52:54:00:00:00:01", "speed_mbps": 1000}],
    }
    assert evaluate(rule, attributes).reasons == [
        "cpu cores 8 is above the maximum 4",
        "cpu model 'Intel Xeon E-2278G' does not match 'EPYC'",
        "memory 64.0 GiB is above the maximum 32",
        "nics: 0 NIC(s) at 10000 Mb/s or faster, 1 wanted (speeds reported: [1000])",
    ]


def test_disk_types_from_what_the_kernel_reports() -> None:
    assert disk_type({"name": "nvme0n1", "rotational": False}) is DiskType.NVME
    assert disk_type({"name": "sda", "rotational": True}) is DiskType.HDD
    assert disk_type({"name": "vda", "rotational": False}) is DiskType.SSD


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu_cores_min": 8, "cpu_cores_max": 4}, "cpu_cores minimum 8 is above its maximum 4"),
        ({"cpu_model": "EPYC("}, "is not a regular expression"),
        ({"memory": 4}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_are_refused_naming_the_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        Rule.model_validate(fields)


reported_disks = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["sda", "sdb", "nvme0n1", "vda"]),
            "size_bytes": st.sampled_from([0, 100 * GIB, 500 * GIB, 2000 * GIB]),
            "rotational": st.booleans(),
        }
    ),
    max_size=4,
)
small_disk_rules = st.lists(
    st.builds(
        DiskRule,
        type=st.none() | st.sampled_from(list(DiskType)),
        min_size_gib=st.sampled_from([0, 100, 500, 2000]),
        count=st.integers(min_value=1, max_value=2),
    ),
    min_size=1,
    max_size=3,
)


def fits(wanted: DiskRule, found: dict[str, Any]) -> bool:
    size_ok = found["size_bytes"] >= wanted.min_size_gib * GIB
    return size_ok and (wanted.type is None or disk_type(found) is wanted.type)


@given(small_disk_rules, reported_disks)
def test_disks_match_exactly_when_some_assignment_of_distinct_disks_exists(
    wanted: list[DiskRule], found: list[dict[str, Any]]
) -> None:
    """Against brute force: every way of giving each required disk its own reported disk."""
    slots = [rule for rule in wanted for _ in range(rule.count)]
    possible = any(
        all(fits(slot, found[index]) for slot, index in zip(slots, chosen, strict=True))
        for chosen in itertools.permutations(range(len(found)), len(slots))
    )
    assert evaluate(Rule(disks=wanted), {"disks": found}).matches == possible
