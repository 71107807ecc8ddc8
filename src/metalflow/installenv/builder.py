"""Builds `<data_dir>/installenv/<arch>-<flavour>/{vmlinuz,initrd.img}` from Debian packages.

A build is skipped when its inputs are unchanged: the versions apt would fetch of every package
the last build used, the agent zipapp's hash and the hash of this builder's own source files. The
outputs are written to temporary files and renamed, and the stamp recording the inputs is written
last, so an interrupted build is never taken for a finished one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import os
import py_compile
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from metalflow.installenv import agent, cpio, debs, elf, init, modules, python, rootfs, tools
from metalflow.installenv.errors import InstallEnvError

log = logging.getLogger(__name__)

BUSYBOX_PACKAGE = "busybox-static"
CA_PACKAGE = "ca-certificates"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
STAMP = "build.json"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"


class Compression(StrEnum):
    GZIP = "gzip"
    XZ = "xz"
    """xz with CRC32 checks: the kernel's xz decoder knows no CRC64 or SHA-256."""


DEFAULT_COMPRESSION = {"cloud": Compression.GZIP, "generic": Compression.XZ}
"""gzip unpacks ~4x faster under emulation (cloud: 12.4 MB); the generic kernel's NIC drivers
push a gzip initrd past the 15 MB budget, xz keeps it at 12 MB (real hardware unpacks xz fast)."""


@dataclass(frozen=True)
class BuildResult:
    kernel_path: Path
    initrd_path: Path
    size_bytes: int
    """Size of the compressed initrd."""
    kernel_bytes: int
    kernel_version: str
    packages: dict[str, str]
    """Debian package -> version, of everything in the build."""
    modules: tuple[str, ...]
    """Kernel modules /init loads, in order."""
    compression: Compression
    warnings: tuple[str, ...] = ()
    cached: bool = False
    seconds: float = 0.0
    inputs: str = field(default="", repr=False)
    """Hash of the inputs the rebuild decision compares (not of the output: the stdlib bytecode
    is not byte-stable across builder processes, as marshal output depends on refcounts)."""


def builder_digest() -> str:
    """Hash of this package's source files: a change to the builder forces a rebuild."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def inputs_digest(
    packages: dict[str, str], agent_zip: bytes, compression: Compression, builder: str
) -> str:
    document = {
        "packages": dict(sorted(packages.items())),
        "agent": hashlib.sha256(agent_zip).hexdigest(),
        "compression": compression.value,
        "builder": builder,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def build(
    data_dir: Path,
    kernel: str = "cloud",
    arch: str = "x86_64",
    agent_package: Path | None = None,
    force: bool = False,
    compression: Compression | None = None,
) -> BuildResult:
    """Build (or reuse) the install environment; `agent_package` is the `metalflow/agent` dir.

    `compression` defaults to the flavour's DEFAULT_COMPRESSION.
    """
    started = time.monotonic()
    target = debs.arch_info(arch, kernel)
    compression = compression or DEFAULT_COMPRESSION[kernel]
    debs.check_arch_available(target)
    agent_dir = agent_package or agent.default_agent_dir()
    agent_zip = agent.build_zipapp(agent_dir)
    base = Path(data_dir) / "installenv"
    out_dir = base / f"{target.name}-{kernel}"
    builder = builder_digest()

    metapackage = target.kernels[kernel]
    previous = _load_stamp(out_dir)
    known = debs.show([metapackage, *(previous.packages if previous else ())], target)
    if metapackage not in known:
        raise InstallEnvError(f"apt knows no package {metapackage}; run apt-get update")
    kernel_name = debs.real_kernel_package(known[metapackage].get("Depends", ""), metapackage)
    if previous is not None and not force and set(previous.packages) <= set(known):
        versions = {name: known[name]["Version"] for name in previous.packages}
        unchanged = kernel_name in versions and previous.inputs == inputs_digest(
            versions, agent_zip, compression, builder
        )
        if unchanged:
            return _with_time(previous, started, cached=True)

    base.mkdir(parents=True, exist_ok=True)
    with _staging(base) as staging:
        names = [
            kernel_name,
            BUSYBOX_PACKAGE,
            CA_PACKAGE,
            *python.PYTHON_PACKAGES,
            *tools.packages(),
        ]
        packages = _fetch(names, target, base / "cache" / "debs", staging)
        result = _assemble(
            staging, packages, target, kernel, (agent_dir, agent_zip), compression, builder, out_dir
        )
    return _with_time(result, started, cached=False)


def built(data_dir: Path, arch: str = "x86_64") -> BuildResult | None:
    """The finished build `metalflow up` serves when no --kernel/--initrd is given: the cloud
    flavour's, else the generic one's. Reads only the stamps: no apt, no rebuild check."""
    for kernel in DEFAULT_COMPRESSION:
        found = _load_stamp(Path(data_dir) / "installenv" / f"{arch}-{kernel}")
        if found is not None:
            return found
    return None


def _with_time(result: BuildResult, started: float, *, cached: bool) -> BuildResult:
    return BuildResult(
        **{
            **asdict(result),
            "cached": cached,
            "seconds": round(time.monotonic() - started, 2),
        }
    )


@contextmanager
def _staging(base: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=base))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(names: list[str], target: debs.Arch, cache: Path, staging: Path) -> dict[str, str]:
    """Download and unpack `names`, then the library packages their ELF files need."""
    root = staging / "root"
    packages = debs.candidates(names, target)
    debs.extract(debs.download(list(packages.values()), target, cache), root)
    while True:
        _, missing = _libraries(root, target)
        wanted = sorted({python.SONAME_PACKAGES[s] for s in missing if s in python.SONAME_PACKAGES})
        unknown = sorted(s for s in missing if s not in python.SONAME_PACKAGES)
        if unknown:
            raise InstallEnvError(
                f"no Debian package known for the shared libraries {', '.join(unknown)}; add"
                " them to SONAME_PACKAGES in metalflow/installenv/python.py"
            )
        new = [name for name in wanted if name not in packages]
        if not new:
            if missing:
                raise InstallEnvError(
                    f"the packages {', '.join(wanted)} do not provide {', '.join(sorted(missing))}"
                )
            return {pkg.name: pkg.version for pkg in packages.values()}
        more = debs.candidates(new, target)
        packages.update(more)
        debs.extract(debs.download(list(more.values()), target, cache), root)


def _load_stamp(out_dir: Path) -> BuildResult | None:
    """The last build's result, if its stamp is readable and its outputs are there."""
    try:
        stamp = json.loads((out_dir / STAMP).read_text())
        previous = BuildResult(
            **{
                **stamp,
                "kernel_path": out_dir / KERNEL_NAME,
                "initrd_path": out_dir / INITRD_NAME,
                "modules": tuple(stamp["modules"]),
                "warnings": tuple(stamp["warnings"]),
                "compression": Compression(stamp["compression"]),
            }
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if previous.kernel_path.is_file() and previous.initrd_path.is_file():
        return previous
    return None


def _libraries(root: Path, target: debs.Arch) -> tuple[dict[str, str], set[str]]:
    """soname -> staging path of every library the kept ELF files need, and the unresolved."""
    search = [f"lib/{target.triplet}", f"usr/lib/{target.triplet}", "lib", "usr/lib"]

    def needed_of(relative: str) -> list[str]:
        real = rootfs.resolve_in_root(root, PurePosixPath(relative))
        return elf.needed(real.read_bytes()) if real is not None else []

    def find(soname: str) -> str | None:
        for directory in search:
            candidate = f"{directory}/{soname}"
            if rootfs.resolve_in_root(root, PurePosixPath(candidate)) is not None:
                return candidate
        return None

    return python.resolve_sonames(_elf_roots(root), needed_of, find)


def _python_root(root: Path) -> Path:
    return root / "usr" / "lib" / f"python{python.PYTHON_VERSION}"


def _elf_roots(root: Path) -> list[str]:
    """The interpreter, the extension modules that stay after pruning and the action tools."""
    stdlib = _python_root(root)
    roots = [f"usr/bin/python{python.PYTHON_VERSION}"]
    if (stdlib / "lib-dynload").is_dir():
        for path in sorted((stdlib / "lib-dynload").iterdir()):
            if python.keep_stdlib(PurePosixPath(path.relative_to(stdlib).as_posix())):
                roots.append(path.relative_to(root).as_posix())
    roots += [found.as_posix() for _, found in _located_tools(root) if found is not None]
    return roots


def _located_tools(root: Path) -> list[tuple[tools.Tool, PurePosixPath | None]]:
    return [
        (tool, tools.locate(tool, lambda path: rootfs.resolve_in_root(root, path) is not None))
        for tool in tools.TOOLS
    ]


def _tool_entries(root: Path) -> list[cpio.Entry]:
    entries: list[cpio.Entry] = []
    for tool, found in _located_tools(root):
        entry = (
            None if found is None else _file_entry(root, found, f"{tools.INSTALL_DIR}/{tool.name}")
        )
        if entry is None:
            raise InstallEnvError(
                f"the package {tool.package} has no {tool.name}; delete the cache and retry"
            )
        entries.append(entry)
        entries += [
            cpio.symlink(f"{tools.INSTALL_DIR}/{alias}", tool.name) for alias in tool.aliases
        ]
    return entries


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib" / "modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise InstallEnvError(f"expected one kernel in the kernel package, found {versions}")
    return versions[0]


def _module_entries(
    root: Path, version: str, flavour: str
) -> tuple[list[cpio.Entry], list[str], list[str]]:
    """The module files to pack, their /init paths in load order, and warnings."""
    resolution, files = modules.resolve_tree(
        root / "lib" / "modules" / version, modules.wanted_modules(flavour)
    )
    warnings = [
        f"kernel {version} has no module {name} (not built in either); left out"
        for name in resolution.missing
    ]
    warnings += [
        f"module {name} needs {', '.join(deps)}, which kernel {version} lacks; left out"
        for name, deps in resolution.missing_deps.items()
    ]
    entries: list[cpio.Entry] = []
    paths: list[str] = []
    for name in resolution.order:
        source = files[name]
        inside = rootfs.initramfs_path(PurePosixPath(source.relative_to(root).as_posix()))
        entries.append(cpio.file(inside, source))
        paths.append("/" + inside)
    return entries, paths, warnings


def _skeleton() -> list[cpio.Entry]:
    entries = [cpio.directory(name) for name in ("proc", "sys", "run", "root", "usr/sbin")]
    entries.append(cpio.directory("tmp", 0o1777))
    entries += [cpio.symlink(name, f"usr/{name}") for name in rootfs.MERGED]
    entries += [
        cpio.char_device("dev/console", 5, 1, 0o600),
        cpio.char_device("dev/null", 1, 3, 0o666),
        cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        cpio.file("etc/group", b"root:x:0:\n"),
        cpio.file("etc/hostname", b"metalflow-installenv\n"),
        cpio.file("etc/resolv.conf", b""),
    ]
    return entries


def busybox_entries(root: Path, lease_file: str | None = None) -> list[cpio.Entry]:
    """busybox from the unpacked root, its applet links and udhcpc's lease hook.

    `lease_file` is passed to `init.render_udhcpc_script` (the sandbox's test OS reads it).
    """
    busybox = root / "bin" / "busybox"
    if not busybox.is_file():
        raise InstallEnvError(f"{BUSYBOX_PACKAGE} has no /bin/busybox; delete the cache and retry")
    entries = [cpio.file("usr/bin/busybox", busybox, 0o755)]
    entries += [cpio.symlink(f"usr/bin/{name}", "busybox") for name in init.BUSYBOX_APPLETS]
    entries.append(
        cpio.file(
            init.UDHCPC_SCRIPT.lstrip("/"), init.render_udhcpc_script(lease_file).encode(), 0o755
        )
    )
    return entries


def _ca_entries(root: Path) -> list[cpio.Entry]:
    """The CA bundle `update-ca-certificates` would write, where OpenSSL looks for it."""
    certificates = sorted((root / "usr/share/ca-certificates/mozilla").glob("*.crt"))
    if not certificates:
        raise InstallEnvError(f"{CA_PACKAGE} has no certificates; delete the cache and retry")
    bundle = b"".join(path.read_bytes().rstrip(b"\n") + b"\n" for path in certificates)
    return [
        cpio.file(CA_BUNDLE, bundle),
        cpio.symlink("usr/lib/ssl/cert.pem", f"/{CA_BUNDLE}"),
        cpio.symlink("usr/lib/ssl/certs", "/etc/ssl/certs"),
    ]


def _file_entry(root: Path, relative: PurePosixPath, inside: str) -> cpio.Entry | None:
    """A regular file (symlinks dereferenced inside the root), keeping the executable bit."""
    real = rootfs.resolve_in_root(root, relative)
    if real is None or not real.is_file():
        return None
    mode = 0o755 if real.stat().st_mode & stat.S_IXUSR else 0o644
    return cpio.file(inside, real, mode)


def _python_entries(
    root: Path, libraries: dict[str, str], target: debs.Arch, scratch: Path
) -> list[cpio.Entry]:
    stdlib = _python_root(root)
    exe = f"usr/bin/python{python.PYTHON_VERSION}"
    entries = [cpio.file(exe, root / exe, 0o755)]
    entries.append(cpio.symlink("usr/bin/python3", f"python{python.PYTHON_VERSION}"))
    precompile = python.can_precompile()
    if not precompile:
        log.warning(
            "installenv: the stdlib ships as source: this builder runs Python %d.%d, not %s",
            *sys.version_info[:2],
            python.PYTHON_VERSION,
        )
    for path in sorted(stdlib.rglob("*")):
        relative = PurePosixPath(path.relative_to(stdlib).as_posix())
        if path.is_dir() or not python.keep_stdlib(relative):
            continue
        prefix = f"usr/lib/python{python.PYTHON_VERSION}"
        source = PurePosixPath(path.relative_to(root).as_posix())
        if precompile and relative.suffix == ".py":
            compiled = _compile(root, source, scratch / python.bytecode_name(relative), prefix)
            if compiled is not None:
                entries.append(cpio.file(f"{prefix}/{python.bytecode_name(relative)}", compiled))
                continue
        entry = _file_entry(root, source, f"{prefix}/{relative}")
        if entry is not None:
            entries.append(entry)
    for soname, found in sorted(libraries.items()):
        inside = f"usr/lib/{target.triplet}/{soname}"
        entry = _file_entry(root, PurePosixPath(found), inside)
        if entry is not None:
            entries.append(entry)
    loader = elf.interpreter((root / exe).read_bytes())
    if loader is None:
        raise InstallEnvError(f"{exe} names no program interpreter")
    entries.append(_loader_entry(root, loader, libraries, target))
    return entries


def _compile(root: Path, source: PurePosixPath, out: Path, prefix: str) -> Path | None:
    """Bytecode of one stdlib file (hash-based, never checked against a source), or None."""
    real = rootfs.resolve_in_root(root, source)
    if real is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        py_compile.compile(
            str(real),
            cfile=str(out),
            dfile=f"/{prefix}/{source.relative_to(prefix)}",
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError as exc:
        log.warning("installenv: %s stays source: %s", source, exc.msg)
        return None
    return out


def _loader_entry(
    root: Path, loader: str, libraries: dict[str, str], target: debs.Arch
) -> cpio.Entry:
    """The dynamic loader at its PT_INTERP path: a link to the copy libc's DT_NEEDED brought in."""
    inside = rootfs.initramfs_path(PurePosixPath(loader))
    real = rootfs.resolve_in_root(root, PurePosixPath(loader))
    if real is None:
        raise InstallEnvError(f"the dynamic loader {loader} is not in libc6")
    soname = PurePosixPath(loader).name
    copy = libraries.get(soname)
    if copy is not None and rootfs.resolve_in_root(root, PurePosixPath(copy)) == real:
        return cpio.symlink(inside, f"/usr/lib/{target.triplet}/{soname}")
    return cpio.file(inside, real, 0o755)


def _assemble(
    staging: Path,
    packages: dict[str, str],
    target: debs.Arch,
    flavour: str,
    agent_sources: tuple[Path, bytes],
    compression: Compression,
    builder: str,
    out_dir: Path,
) -> BuildResult:
    root = staging / "root"
    agent_dir, agent_zip = agent_sources
    shipped = (
        agent.build_zipapp(agent_dir, bytecode_under=init.AGENT_PATH)
        if python.can_precompile()
        else agent_zip
    )
    version = _kernel_version(root)
    libraries, _ = _libraries(root, target)
    module_entries, module_paths, warnings = _module_entries(root, version, flavour)
    for warning in warnings:
        log.warning("installenv: %s", warning)
    entries = [
        *_skeleton(),
        *busybox_entries(root),
        *_ca_entries(root),
        *_python_entries(root, libraries, target, staging / "bytecode"),
        *_tool_entries(root),
        *module_entries,
        cpio.file("init", init.render_init(init.InitConfig(module_paths)).encode(), 0o755),
        cpio.file(init.AGENT_PATH.lstrip("/"), shipped),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel_path = out_dir / KERNEL_NAME
    initrd_path = out_dir / INITRD_NAME
    with _atomic(initrd_path) as out:
        write_compressed(entries, out, compression)
    with _atomic(kernel_path) as out, (root / "boot" / f"vmlinuz-{version}").open("rb") as src:
        shutil.copyfileobj(src, out)
    result = BuildResult(
        kernel_path=kernel_path,
        initrd_path=initrd_path,
        size_bytes=initrd_path.stat().st_size,
        kernel_bytes=kernel_path.stat().st_size,
        kernel_version=version,
        packages=packages,
        modules=tuple(Path(p).name.split(".")[0] for p in module_paths),
        compression=compression,
        warnings=tuple(warnings),
        inputs=inputs_digest(packages, agent_zip, compression, builder),
    )
    stamp = {**asdict(result), "kernel_path": KERNEL_NAME, "initrd_path": INITRD_NAME}
    with _atomic(out_dir / STAMP) as out:
        out.write(json.dumps(stamp, indent=2, sort_keys=True).encode())
    return result


def write_compressed(entries: list[cpio.Entry], out: BinaryIO, compression: Compression) -> None:
    if compression is Compression.XZ:
        with lzma.LZMAFile(out, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) as xz:
            cpio.write(entries, xz)
    else:
        with gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
            cpio.write(entries, gz)


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at `path` complete, or not at all."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
