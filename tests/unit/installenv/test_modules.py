"""Module metadata, closure and load order, on synthetic modinfo data."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.installenv import modules
from metalflow.installenv.errors import InstallEnvError
from metalflow.installenv.modules import ModInfo
from tests.unit.installenv.elfbuild import make_elf

VIRTIO = {
    "virtio_ring": ModInfo("virtio_ring"),
    "virtio": ModInfo("virtio"),
    "virtio_pci_modern_dev": ModInfo("virtio_pci_modern_dev"),
    "virtio_pci_legacy_dev": ModInfo("virtio_pci_legacy_dev"),
    "virtio_pci": ModInfo(
        "virtio_pci", ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio")
    ),
    "failover": ModInfo("failover"),
    "net_failover": ModInfo("net_failover", ("failover",)),
    "virtio_net": ModInfo("virtio_net", ("virtio_ring", "virtio", "net_failover")),
    "virtio_blk": ModInfo("virtio_blk", ("virtio", "virtio_ring")),
    "virtio_scsi": ModInfo("virtio_scsi", ("scsi_mod", "virtio_ring", "virtio")),
}


def test_parse_modinfo() -> None:
    section = (
        b"license=GPL\0alias=pci:v00001AF4d*\0alias=virtio:d00000001v*\0"
        b"depends=virtio_ring,net-failover\0name=virtio_net\0vermagic=6.1\0"
    )
    info = modules.parse_modinfo(section, "fallback")
    assert info == ModInfo("virtio_net", ("virtio_ring", "net_failover"))


def test_parse_modinfo_without_name_or_depends_uses_the_file_name() -> None:
    assert modules.parse_modinfo(b"license=GPL\0depends=\0", "nls_iso8859_1") == ModInfo(
        "nls_iso8859_1"
    )


def test_read_modinfo_from_ko_and_ko_xz(tmp_path: Path) -> None:
    data = make_elf({".modinfo": b"depends=fat\0name=vfat\0", ".text": b"\x90" * 8})
    (tmp_path / "vfat.ko").write_bytes(data)
    (tmp_path / "nls_iso8859-1.ko.xz").write_bytes(lzma.compress(make_elf({".modinfo": b""})))
    assert modules.read_modinfo(tmp_path / "vfat.ko") == ModInfo("vfat", ("fat",))
    assert modules.read_modinfo(tmp_path / "nls_iso8859-1.ko.xz") == ModInfo("nls_iso8859_1")
    assert set(modules.scan(tmp_path)) == {"vfat", "nls_iso8859_1"}


def test_parse_builtin() -> None:
    text = "kernel/fs/ext4/ext4.ko\nkernel/drivers/nvme/host/nvme-core.ko\n\n"
    assert modules.parse_builtin(text) == {"ext4", "nvme_core"}


VIRTIO_ORDER = (
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
)
"""The load order of the cloud kernel's virtio modules (../shared/notes/netboot-lab.md)."""


def test_virtio_load_order_matches_the_lab_notes() -> None:
    result = modules.resolve(["virtio_pci", "virtio_net", "virtio_blk"], VIRTIO, [])
    assert result.order == VIRTIO_ORDER
    assert result.missing == () and result.builtin == ()


def test_builtin_and_missing_modules() -> None:
    result = modules.resolve(["nvme", "ahci", "virtio_blk"], VIRTIO, ["nvme"])
    assert result.order == ("virtio", "virtio_ring", "virtio_blk")
    assert result.builtin == ("nvme",)
    assert result.missing == ("ahci",)


def test_a_module_whose_dependency_exists_nowhere_is_left_out() -> None:
    result = modules.resolve(["virtio_scsi", "virtio_blk"], VIRTIO, [])
    assert "virtio_scsi" not in result.order
    assert result.missing_deps == {"virtio_scsi": ("scsi_mod",)}
    assert result.order[-1] == "virtio_blk"
    assert modules.resolve(["virtio_scsi"], VIRTIO, ["scsi_mod"]).order[-1] == "virtio_scsi"


def test_dash_and_underscore_are_the_same_name() -> None:
    available = {"nls_iso8859_1": ModInfo("nls_iso8859_1")}
    assert modules.resolve(["nls_iso8859-1"], available, []).order == ("nls_iso8859_1",)


def test_cycles_are_an_error() -> None:
    available = {"a": ModInfo("a", ("b",)), "b": ModInfo("b", ("c",)), "c": ModInfo("c", ("a",))}
    with pytest.raises(InstallEnvError, match="cycle: a -> b -> c -> a"):
        modules.resolve(["a"], available, [])


def test_wanted_modules_per_flavour() -> None:
    assert "e1000e" in modules.wanted_modules("generic")
    assert "e1000e" not in modules.wanted_modules("cloud")
    assert "virtio_net" in modules.wanted_modules("cloud")


@st.composite
def dags(draw: st.DrawFn) -> dict[str, ModInfo]:
    """Random acyclic dependency graphs: module i may depend only on modules j < i."""
    count = draw(st.integers(min_value=1, max_value=15))
    graph = {}
    for index in range(count):
        deps = draw(st.lists(st.integers(0, index - 1), unique=True)) if index else []
        graph[f"m{index}"] = ModInfo(f"m{index}", tuple(f"m{d}" for d in deps))
    return graph


def closure(graph: dict[str, ModInfo], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(graph[name].depends)
    return seen


@given(dags(), st.data())
def test_order_is_the_closure_with_dependencies_first(
    graph: dict[str, ModInfo], data: st.DataObject
) -> None:
    wanted = data.draw(st.lists(st.sampled_from(sorted(graph)), max_size=5))
    order = modules.resolve(wanted, graph, []).order
    assert set(order) == closure(graph, wanted)
    assert len(order) == len(set(order))
    position = {name: index for index, name in enumerate(order)}
    for name in order:
        assert all(position[dep] < position[name] for dep in graph[name].depends)


def test_resolve_tree_reads_an_unpacked_modules_directory(tmp_path: Path) -> None:
    release = tmp_path / "lib/modules/6.1.0-1-cloud-amd64"
    drivers = release / "kernel/drivers"
    drivers.mkdir(parents=True)
    (drivers / "virtio_blk.ko").write_bytes(make_elf({".modinfo": b"depends=virtio\0"}))
    (drivers / "virtio.ko").write_bytes(make_elf({".modinfo": b""}))
    (release / "modules.builtin").write_text("kernel/drivers/nvme/host/nvme.ko\n")
    resolution, files = modules.resolve_tree(release, ["virtio_blk", "nvme", "ahci"])
    assert resolution.order == ("virtio", "virtio_blk")
    assert resolution.builtin == ("nvme",)
    assert resolution.missing == ("ahci",)
    assert files == {"virtio": drivers / "virtio.ko", "virtio_blk": drivers / "virtio_blk.ko"}
