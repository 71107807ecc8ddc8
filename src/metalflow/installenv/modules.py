"""Which kernel modules go into the initramfs, and the order /init loads them in.

Each `.ko` names its dependencies in the `depends=` field of its `.modinfo` ELF section, so the
closure and a deps-first order come from the files themselves: no `depmod` or `modprobe` is needed
at build time or boot time (/init runs `insmod` with full paths). Looked at: `kmod` (PyPI, a
Cython binding built against the kmod headers) and `kmodpy` (PyPI, a ctypes wrapper of libkmod):
both need libkmod on the build host and work on installed, depmod'ed module trees; reading
`.modinfo` with `elf.py` is a few lines. Debian 12 ships plain `.ko` files; `.ko.xz` (Debian 13)
is read with the stdlib `lzma`.
"""

from __future__ import annotations

import lzma
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metalflow.installenv import elf
from metalflow.installenv.errors import InstallEnvError

MODULE_SUFFIXES = (".ko", ".ko.xz")

STORAGE = ("virtio_blk", "virtio_scsi", "sd_mod", "nvme")
NETWORK = ("virtio_net",)
BUS = ("virtio_pci",)
FILESYSTEMS = ("vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii", "nls_utf8", "ext4")
"""vfat mounts fail (EINVAL) without the kernel's default iocharset: ascii in Debian's kernels."""
PHYSICAL = ("ahci", "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "mlx5_core", "tg3")
"""Drivers of real servers: Debian's generic kernel has them, the cloud kernel does not."""


def wanted_modules(flavour: str) -> tuple[str, ...]:
    """The modules asked for; their dependencies are added by `resolve`."""
    base = BUS + NETWORK + STORAGE + FILESYSTEMS
    return base + PHYSICAL if flavour == "generic" else base


def normalise(name: str) -> str:
    """The kernel treats '-' and '_' in module names as the same; use '_'."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class ModInfo:
    name: str
    depends: tuple[str, ...] = ()


def parse_modinfo(section: bytes, fallback_name: str) -> ModInfo:
    """Parse the NUL-separated `key=value` strings of a `.modinfo` section."""
    name = fallback_name
    depends: tuple[str, ...] = ()
    for record in section.split(b"\0"):
        key, sep, value = record.decode("utf-8", "replace").partition("=")
        if not sep:
            continue
        if key == "name":
            name = value
        elif key == "depends":
            depends = tuple(normalise(dep) for dep in value.split(",") if dep)
    return ModInfo(normalise(name), depends)


def module_stem(path: Path) -> str:
    name = path.name
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            return normalise(name[: -len(suffix)])
    raise ValueError(f"not a kernel module file: {path}")


def read_modinfo(path: Path) -> ModInfo:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        data = lzma.decompress(data)
    section = elf.section_data(data, ".modinfo")
    return parse_modinfo(section or b"", module_stem(path))


def parse_builtin(text: str) -> frozenset[str]:
    """Names from `modules.builtin` (one `kernel/.../name.ko` a line)."""
    return frozenset(module_stem(Path(line.strip())) for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class Resolution:
    order: tuple[str, ...]
    """Modules to load, each after all of its dependencies."""
    builtin: tuple[str, ...] = ()
    """Wanted or depended on, but built into the kernel: nothing to load."""
    missing: tuple[str, ...] = ()
    """Wanted, but neither a module file nor built in (this kernel lacks the driver)."""
    missing_deps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Module -> dependencies that exist nowhere; such a module cannot load and is left out."""


def resolve(
    wanted: Sequence[str], available: Mapping[str, ModInfo], builtin: Iterable[str]
) -> Resolution:
    """The transitive closure of `wanted` in load order (depth first, dependencies in listed order).

    A dependency cycle is an error: the kernel could not load such modules either.
    """
    built_in = frozenset(builtin)
    order: list[str] = []
    done: set[str] = set()
    seen_builtin: list[str] = []
    missing: list[str] = []
    broken: dict[str, tuple[str, ...]] = {}

    def visit(name: str, path: tuple[str, ...]) -> bool:
        """Add `name` after its deps; False if it cannot be loaded."""
        if name in done:
            return True
        if name in broken:
            return False
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise InstallEnvError(f"kernel module dependency cycle: {cycle}")
        info = available.get(name)
        if info is None:
            if name in built_in:
                if name not in seen_builtin:
                    seen_builtin.append(name)
                return True
            return False
        absent = tuple(dep for dep in info.depends if not visit(dep, (*path, name)))
        if absent:
            broken[name] = absent
            return False
        done.add(name)
        order.append(name)
        return True

    for name in (normalise(item) for item in wanted):
        if name not in available and name not in built_in:
            missing.append(name)
        else:
            visit(name, ())
    return Resolution(tuple(order), tuple(seen_builtin), tuple(missing), broken)


def scan(modules_dir: Path) -> dict[str, tuple[Path, ModInfo]]:
    """Every module file under `lib/modules/<version>/kernel`, by module name."""
    found: dict[str, tuple[Path, ModInfo]] = {}
    for path in sorted(modules_dir.rglob("*.ko*")):
        if path.name.endswith(MODULE_SUFFIXES):
            info = read_modinfo(path)
            found[info.name] = (path, info)
    return found


def resolve_tree(modules_dir: Path, wanted: Sequence[str]) -> tuple[Resolution, dict[str, Path]]:
    """`resolve` over an unpacked `lib/modules/<version>` tree, and each module's file."""
    found = scan(modules_dir / "kernel")
    builtin_file = modules_dir / "modules.builtin"
    builtin = parse_builtin(builtin_file.read_text()) if builtin_file.is_file() else frozenset()
    resolution = resolve(wanted, {name: info for name, (_, info) in found.items()}, builtin)
    return resolution, {name: path for name, (path, _) in found.items()}
