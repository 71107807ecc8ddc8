"""Debian packages: which kernel package a flavour means, download once into a cache, unpack.

Packages are fetched with `apt-get download` (the host's sources and keys, no root) and unpacked
with `dpkg-deb -x`, never installed. A cached `.deb` is reused when its file name (package, version,
architecture, as apt names it) is already in the cache.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metalflow.installenv.errors import InstallEnvError


@dataclass(frozen=True)
class Arch:
    """A machine architecture as metalflow names it, and what Debian calls its parts."""

    name: str
    debian: str
    triplet: str
    kernels: dict[str, str]
    """Kernel flavour -> Debian's metapackage for it."""


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        "x86_64",
        "amd64",
        "x86_64-linux-gnu",
        {"cloud": "linux-image-cloud-amd64", "generic": "linux-image-amd64"},
    ),
    "arm64": Arch("arm64", "arm64", "aarch64-linux-gnu", {"generic": "linux-image-arm64"}),
}


def arch_info(arch: str, flavour: str) -> Arch:
    """The architecture, checked against the kernel flavour asked for."""
    info = ARCHES.get(arch)
    if info is None:
        raise InstallEnvError(
            f"--arch {arch!r} is not supported; use one of: {', '.join(sorted(ARCHES))}"
        )
    if flavour not in info.kernels:
        raise InstallEnvError(
            f"--kernel {flavour!r} does not exist for --arch {arch}; use one of:"
            f" {', '.join(sorted(info.kernels))}"
        )
    return info


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str

    @property
    def deb_name(self) -> str:
        """The file name `apt-get download` writes (':' of an epoch is URL-quoted)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


def error_line(stderr: str) -> str:
    """The line worth showing of a failed apt or dpkg run: its first `E:` line, else its last."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "dpkg-deb: error"))]
    return (errors or lines or ["(no output)"])[0 if errors else -1]


def _run(argv: Sequence[str], what: str, fix: str, cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise InstallEnvError(
            f"{argv[0]} not found: {what} needs it; install it (apt-get install"
            f" {'apt' if argv[0].startswith('apt') else 'dpkg'})"
        )
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = error_line(proc.stderr)
        raise InstallEnvError(f"{what} failed: {' '.join(argv)}: {detail}; {fix}")
    return proc.stdout


def check_arch_available(arch: Arch) -> None:
    """apt can fetch another architecture's packages only when dpkg is told about it."""
    fix = "check that dpkg works on this host"
    native = _run(["dpkg", "--print-architecture"], "checking the host architecture", fix).strip()
    if arch.debian == native:
        return
    foreign = _run(["dpkg", "--print-foreign-architectures"], "checking architectures", fix)
    if arch.debian not in foreign.split():
        raise InstallEnvError(
            f"--arch {arch.name} cannot be built on this {native} host: apt has no {arch.debian}"
            f" packages; run `dpkg --add-architecture {arch.debian} && apt-get update`, or use"
            f" --arch {next(a.name for a in ARCHES.values() if a.debian == native)}"
        )


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """`apt-cache show` output: blank-line separated `Key: value` stanzas."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
                current = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    return stanzas


def real_kernel_package(depends: str, metapackage: str) -> str:
    """The `linux-image-<abi>-<flavour>` package a metapackage's `Depends:` names."""
    for alternative in depends.split(","):
        name = alternative.split("|")[0].split("(")[0].strip()
        if name.startswith("linux-image-") and name[12:13].isdigit():
            return name
    raise InstallEnvError(
        f"{metapackage} depends on no linux-image-<version> package (Depends: {depends!r});"
        " run apt-get update"
    )


def show(names: Sequence[str], arch: Arch) -> dict[str, dict[str, str]]:
    """apt's candidate stanza of each package it knows (one `apt-cache show`: it takes a second).

    Unknown names are left out of the result (apt-cache fails only when it knows none of them).
    """
    qualified = [f"{name}:{arch.debian}" for name in names]
    out = _run(
        ["apt-cache", "show", "--no-all-versions", *qualified],
        "looking up packages",
        "run apt-get update (and check the names exist in this Debian release)",
    )
    found: dict[str, dict[str, str]] = {}
    for stanza in parse_stanzas(out):
        name = stanza.get("Package", "")
        if name in names and "Version" in stanza:
            found.setdefault(name, stanza)
    return found


def candidates(names: Sequence[str], arch: Arch) -> dict[str, Package]:
    """The version apt would download of each package; all must exist."""
    found = show(names, arch)
    missing = [name for name in names if name not in found]
    if missing:
        raise InstallEnvError(f"apt knows no package {', '.join(missing)}; run apt-get update")
    return {
        name: Package(name, stanza["Version"], stanza.get("Architecture", arch.debian))
        for name, stanza in found.items()
    }


def download(packages: Sequence[Package], arch: Arch, cache: Path) -> list[Path]:
    """The `.deb` of each package, downloading only those not yet in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = [pkg for pkg in packages if not (cache / pkg.deb_name).is_file()]
    if todo:
        _run(
            ["apt-get", "download", *(f"{p.name}:{arch.debian}={p.version}" for p in todo)],
            "apt-get download",
            "run apt-get update (the package index may be out of date) and check the network",
            cwd=cache,
        )
    paths = [cache / pkg.deb_name for pkg in packages]
    absent = [path.name for path in paths if not path.is_file()]
    if absent:
        raise InstallEnvError(
            f"apt-get download did not write {', '.join(absent)} into {cache}; run apt-get update"
        )
    return paths


def extract(debs: Sequence[Path], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(
            ["dpkg-deb", "-x", str(deb), str(root)],
            f"unpacking {deb.name}",
            f"delete {deb} and build again",
        )
