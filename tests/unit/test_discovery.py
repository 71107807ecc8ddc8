"""Reading an unknown machine's report as inventory: any JSON is read, never refused."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from metalflow.inventory.discovery import MAX_INTERFACES, read_discovery
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
    assert found.name == "discovered-525400123456"
    assert found.macs[0] == BOOT_MAC
    assert len(set(found.macs)) == len(found.macs) <= MAX_INTERFACES
    assert all(normalize_mac(mac) == mac for mac in found.macs)
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
    assert found.macs == (BOOT_MAC, "52:54:00:ab:cd:ef")
    assert found.disks == (
        {"device": "/dev/vda", "size_bytes": 4 * 2**30},
        {"device": "/dev/nvme0n1", "size_bytes": None},
    )
    assert (found.arch, found.uefi) == ("aarch64", False)
