"""A tiny real OS disk image, the one `metalflow sandbox` installs and the end-to-end tests watch.

The image is what metalflow's agent writes to a VM's disk (image2disk); the VM then boots it.
One MBR disk with one active FAT16 partition of type 0xEF boots under both BIOS (syslinux) and
UEFI (systemd-boot at \\EFI\\BOOT\\BOOTX64.EFI); both load the same Debian cloud kernel and a
busybox initramfs whose /init reports on ttyS0 and powers the VM off (shared/notes/test-os-image.md
has the recipe and the measurements). Everything is built in files (mkfs.vfat -C, mtools, sfdisk
on a file): no mount, no loop device, no root. The Debian packages are fetched and unpacked, and
the initramfs written, by the install environment's own pipeline (metalflow.installenv: debs,
modules, cpio, busybox and udhcpc's lease hook); only the disk layout and /init are this module's.

Lines the test OS prints on the serial console (one per line):
  OSIMG-BOOTED cmdline=...                 after the virtio modules are loaded
  OSIMG-MARKER <contents>                  /metalflow-marker.txt at the partition's root, if any
  OSIMG-NO-MARKER device=... | OSIMG-NO-BOOT-PARTITION
  OSIMG-DHCP-FAILED ...                    no NIC, or no lease within osimg.dhcp_timeout seconds
  OSIMG-PHONE-HOME-OK hostname=H mac=M ip=I | OSIMG-PHONE-HOME-FAILED step=metadata|post url=U
  OSIMG-POWEROFF                           right before `poweroff -f`
Kernel command line flags: osimg.md=BASE (metadata base URL, default http://DHCP-SERVER-ID:50061;
hostname from BASE/2009-04-04/meta-data/hostname), osimg.ph=URL (default BASE/phone-home, gets a
JSON POST {hostname, mac, ip}), osimg.dhcp_timeout=SECONDS (default 10).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from metalflow.installenv import builder, cpio, debs, init, modules, rootfs
from metalflow.installenv.errors import InstallEnvError
from metalflow.sandbox.vm import QEMU, firmware_args, machine_args

# Fixed values so that the same inputs give the same bytes.
SOURCE_DATE_EPOCH = 1735689600  # 2025-01-01T00:00:00Z
VOLUME_ID = "7E570001"
DISK_ID = 0x7E570001
VOLUME_LABEL = "TESTOS"
MIB = 1024 * 1024
PARTITION_START = MIB  # 1 MiB, sector 2048, as `mcopy -i image@@1M` expects
BASE_CMDLINE = "console=ttyS0 quiet panic=5"
MARKER_FILE = "metalflow-marker.txt"
RAW_NAME = "metalflow-test-os.raw"
# -19 gains 1.3 MB (the kernel is LZ4 already) for ~10 s more on two busy CPUs.
ZSTD_LEVEL = 12
STALE_IMAGE_SECONDS = 7 * 24 * 3600
RETIRED_CACHE_ENTRIES = ("pkgs",)
"""What earlier recipes kept in the cache and this one no longer reads (unpacked packages)."""

ARCH = debs.ARCHES["x86_64"]
KERNEL_METAPACKAGE = ARCH.kernels["cloud"]
PACKAGES = (builder.BUSYBOX_PACKAGE, "syslinux", "syslinux-common", "systemd-boot-efi")
LEASE_FILE = "/run/lease"
"""Where udhcpc's lease hook leaves the address and server id for /init."""
# Loaded in this order (dependencies first). The cloud kernel has virtio only as modules.
CORE_MODULES = (
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "nls_iso8859_1",
)
# Only loaded when no /dev/vda1 shows up: a disk on virtio-scsi or IDE is /dev/sda.
DISK_FALLBACK_MODULES = ("virtio_scsi", "sd_mod", "ata_piix")

# Host tools -> the Debian package that has them.
HOST_TOOLS = {
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mattrib": "mtools",
    "sfdisk": "fdisk",
    "zstd": "zstd",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
}
# Their versions go into the cache key: a different mkfs or mtools may lay out other bytes.
HOST_PACKAGES = ("dosfstools", "mtools", "fdisk", "zstd")


class MissingPrerequisite(RuntimeError):
    """Something the host must provide is absent; the message names the Debian package."""


class BuildError(RuntimeError):
    """A build step failed; the message carries the step's stderr."""


@dataclass(frozen=True)
class OsImage:
    """The built image: a raw disk and its zstd copy, with the digests tests compare against."""

    raw: Path
    zst: Path
    raw_sha256: str
    zst_sha256: str
    raw_size: int
    zst_size: int
    kernel_release: str
    cmdline: str
    build_seconds: float  # of the build that made it, which may have been an earlier run


@dataclass(frozen=True)
class _Package:
    """A package at apt's candidate version, with the SHA256 apt's index gives its .deb."""

    name: str
    version: str
    architecture: str
    sha256: str

    @property
    def deb(self) -> debs.Package:
        return debs.Package(self.name, self.version, self.architecture)


# --- host tools -------------------------------------------------------------------------------


def _which(tool: str) -> str | None:
    """Like shutil.which, but also looks in the sbin directories, where mkfs.vfat lives."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(tool, path=path)


def require_tool(tool: str, package: str) -> str:
    """The tool's path, or MissingPrerequisite naming the package to install."""
    found = _which(tool)
    if found is None:
        raise MissingPrerequisite(f"{tool} not found: install the Debian package {package}")
    return found


def _host_tools() -> dict[str, str]:
    return {tool: require_tool(tool, package) for tool, package in HOST_TOOLS.items()}


def _build_env() -> dict[str, str]:
    """Fixed time, zone and locale: FAT stores local times, mtools honours SOURCE_DATE_EPOCH."""
    env = dict(os.environ)
    env.update(
        SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH),
        TZ="UTC",
        LC_ALL="C",
        MTOOLS_SKIP_CHECK="1",
    )
    return env


def _run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    stdin: bytes | None = None,
) -> bytes:
    """Run one build step and return its stdout; a failure raises with the step's stderr."""
    proc = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        input=stdin,
        env=_build_env(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        command = " ".join(str(arg) for arg in argv)
        stderr = proc.stderr.decode(errors="replace").strip()
        raise BuildError(f"`{command}` failed with exit code {proc.returncode}: {stderr}")
    return proc.stdout


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


# --- Debian packages ---------------------------------------------------------------------------


def _apt_fingerprint() -> str:
    """What apt's candidate versions depend on: its lists, its configuration, dpkg's status."""
    entries: list[str] = []
    for top in (Path("/var/lib/apt/lists"), Path("/etc/apt"), Path("/var/lib/dpkg/status")):
        for path in sorted([top, *top.rglob("*")] if top.is_dir() else [top]):
            if path.is_file():
                info = path.stat()
                entries.append(f"{path}\0{info.st_size}\0{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _resolve_packages(cache_dir: Path) -> list[_Package]:
    """The packages to use, remembered per apt state and recipe (apt-cache takes ~1 s a call)."""
    fingerprint = hashlib.sha256(
        (_apt_fingerprint() + json.dumps([KERNEL_METAPACKAGE, *PACKAGES])).encode()
    ).hexdigest()
    remembered = cache_dir / "resolved.json"
    if remembered.is_file():
        data = json.loads(remembered.read_text())
        if data.get("fingerprint") == fingerprint:
            return [_Package(**package) for package in data["packages"]]
    packages = _ask_apt()
    data = {"fingerprint": fingerprint, "packages": [asdict(package) for package in packages]}
    remembered.write_text(json.dumps(data, indent=2) + "\n")
    return packages


def _show(names: Sequence[str]) -> dict[str, dict[str, str]]:
    try:
        shown = debs.show(names, ARCH)
    except InstallEnvError as exc:
        raise MissingPrerequisite(str(exc)) from exc
    missing = [name for name in names if name not in shown or "SHA256" not in shown[name]]
    if missing:
        raise MissingPrerequisite(f"apt has no candidate for {missing} (run `apt-get update`?)")
    return shown


def _ask_apt() -> list[_Package]:
    """The kernel package behind the metapackage, then the others, at apt's candidate versions."""
    meta = _show([KERNEL_METAPACKAGE])[KERNEL_METAPACKAGE]
    try:
        kernel = debs.real_kernel_package(meta.get("Depends", ""), KERNEL_METAPACKAGE)
    except InstallEnvError as exc:
        raise BuildError(str(exc)) from exc
    names = [kernel, *PACKAGES]
    shown = _show(names)
    return [
        _Package(
            name,
            shown[name]["Version"],
            shown[name].get("Architecture", ARCH.debian),
            shown[name]["SHA256"],
        )
        for name in names
    ]


def _fetch(cache_dir: Path, packages: Sequence[_Package], root: Path) -> None:
    """Download the packages into the cache (each checked against apt's SHA256), unpack to root."""
    try:
        paths = debs.download([package.deb for package in packages], ARCH, cache_dir / "debs")
    except InstallEnvError as exc:
        raise MissingPrerequisite(f"cannot download the test OS's packages: {exc}") from exc
    for package, path in zip(packages, paths, strict=True):
        if _sha256(path) != package.sha256:
            path.unlink()
            raise BuildError(f"{path.name} does not match apt's SHA256 {package.sha256}; retry")
    try:
        debs.extract(paths, root)
    except InstallEnvError as exc:
        raise BuildError(str(exc)) from exc


def _modules(modules_dir: Path) -> tuple[list[cpio.Entry], list[str], list[str]]:
    """The module files at usr/lib/modules/NAME.ko, and the core and disk-fallback load orders."""
    try:
        core, files = modules.resolve_tree(modules_dir, CORE_MODULES)
        every, _ = modules.resolve_tree(modules_dir, (*CORE_MODULES, *DISK_FALLBACK_MODULES))
    except InstallEnvError as exc:
        raise BuildError(str(exc)) from exc
    absent = [*every.missing, *every.missing_deps]
    if absent:
        raise BuildError(f"the kernel in {modules_dir} lacks the modules {', '.join(absent)}")
    fallback = list(every.order[len(core.order) :])
    entries = [cpio.file(f"usr/lib/modules/{name}.ko", files[name]) for name in every.order]
    return entries, list(core.order), fallback


# --- initramfs ---------------------------------------------------------------------------------

INIT = r"""#!/bin/sh
# The metalflow test OS: show that the disk booted, print the boot partition's marker file,
# phone home over DHCP, then power off. Every outcome is one OSIMG-* line on the console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
CMDLINE=$(cat /proc/cmdline)

load_modules() {
    for module in "$@"; do
        insmod "/lib/modules/$module.ko" || echo "OSIMG-INSMOD-FAILED $module"
    done
}

load_modules @CORE_MODULES@
echo "OSIMG-BOOTED cmdline=$CMDLINE"

MD=
PH=
DHCP_TIMEOUT=10
set -f
for arg in $CMDLINE; do
    case "$arg" in
        osimg.md=*) MD=${arg#osimg.md=} ;;
        osimg.ph=*) PH=${arg#osimg.ph=} ;;
        osimg.dhcp_timeout=*) DHCP_TIMEOUT=${arg#osimg.dhcp_timeout=} ;;
    esac
done
set +f
case "$DHCP_TIMEOUT" in
    '' | *[!0-9]*) DHCP_TIMEOUT=10 ;;
esac

# first_block_device SECONDS DEVICE...: print the first DEVICE that appears within SECONDS.
first_block_device() {
    tries=$(($1 * 10))
    shift
    while [ "$tries" -gt 0 ]; do
        for dev in "$@"; do
            if [ -b "$dev" ]; then
                echo "$dev"
                return 0
            fi
        done
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

show_marker() {
    dev=$(first_block_device 2 /dev/vda1 /dev/sda1)
    if [ -z "$dev" ]; then
        load_modules @DISK_FALLBACK_MODULES@
        dev=$(first_block_device 5 /dev/vda1 /dev/sda1)
    fi
    if [ -z "$dev" ] || ! mount -t vfat -o ro "$dev" /boot-partition; then
        echo "OSIMG-NO-BOOT-PARTITION"
        return
    fi
    if [ -f /boot-partition/@MARKER_FILE@ ]; then
        echo "OSIMG-MARKER $(cat /boot-partition/@MARKER_FILE@)"
    else
        echo "OSIMG-NO-MARKER device=$dev"
    fi
    umount /boot-partition
}

phone_home() {
    iface=
    for path in /sys/class/net/*; do
        if [ "${path##*/}" != lo ] && [ -e "$path" ]; then
            iface=${path##*/}
            break
        fi
    done
    if [ -z "$iface" ]; then
        echo "OSIMG-DHCP-FAILED reason=no-nic"
        return
    fi
    ip link set lo up
    ip link set "$iface" up
    timeout $((DHCP_TIMEOUT + 5)) udhcpc -f -q -n -i "$iface" -s @UDHCPC_SCRIPT@ \
        -t "$DHCP_TIMEOUT" -T 1
    if [ ! -f @LEASE_FILE@ ]; then
        echo "OSIMG-DHCP-FAILED iface=$iface timeout=$DHCP_TIMEOUT"
        return
    fi
    . @LEASE_FILE@
    mac=$(cat "/sys/class/net/$iface/address")
    [ -n "$MD" ] || MD="http://$LEASE_SERVER:50061"
    [ -n "$PH" ] || PH="$MD/phone-home"
    url="$MD/2009-04-04/meta-data/hostname"
    # busybox 1.35's `wget -T` segfaults: bound it with timeout instead.
    if ! hostname=$(timeout 10 wget -q -O - "$url"); then
        echo "OSIMG-PHONE-HOME-FAILED step=metadata url=$url"
        return
    fi
    hostname=$(printf '%s' "$hostname" | head -n 1 | tr -cd 'A-Za-z0-9._-')
    json=$(printf '{"hostname":"%s","mac":"%s","ip":"%s"}' "$hostname" "$mac" "$LEASE_IP")
    if timeout 10 wget -q -O /dev/null --header "Content-Type: application/json" \
        --post-data "$json" "$PH"; then
        echo "OSIMG-PHONE-HOME-OK hostname=$hostname mac=$mac ip=$LEASE_IP"
    else
        echo "OSIMG-PHONE-HOME-FAILED step=post url=$PH"
    fi
}

show_marker
phone_home
echo "OSIMG-POWEROFF"
poweroff -f
while :; do sleep 60; done
"""


def _init_script(core: Sequence[str], fallback: Sequence[str]) -> str:
    return (
        INIT.replace("@CORE_MODULES@", " ".join(core))
        .replace("@DISK_FALLBACK_MODULES@", " ".join(fallback))
        .replace("@MARKER_FILE@", MARKER_FILE)
        .replace("@UDHCPC_SCRIPT@", init.UDHCPC_SCRIPT)
        .replace("@LEASE_FILE@", LEASE_FILE)
    )


def _write_initrd(root: Path, release: str, initrd: Path) -> None:
    """The initramfs: busybox, /dev/console, the modules and /init, as installenv writes one."""
    module_entries, core, fallback = _modules(root / "lib/modules" / release)
    try:
        busybox = builder.busybox_entries(root, lease_file=LEASE_FILE)
    except InstallEnvError as exc:
        raise BuildError(str(exc)) from exc
    entries = [
        *(cpio.directory(name) for name in ("proc", "sys", "run", "boot-partition")),
        cpio.directory("tmp", 0o1777),
        *(cpio.symlink(name, f"usr/{name}") for name in rootfs.MERGED),
        cpio.char_device("dev/console", 5, 1, 0o600),
        cpio.file("etc/resolv.conf", b""),
        *busybox,
        *module_entries,
        cpio.file("init", _init_script(core, fallback).encode(), 0o755),
    ]
    with initrd.open("wb") as out:
        builder.write_compressed(entries, out, builder.Compression.GZIP)


# --- the disk ----------------------------------------------------------------------------------


def _boot_configs(cmdline: str) -> dict[str, str]:
    """Partition path -> contents of the syslinux and systemd-boot configurations."""
    return {
        "syslinux.cfg": (
            "DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n"
            f"  KERNEL /vmlinuz\n  APPEND initrd=/initrd.img {cmdline}\n"
        ),
        "loader/loader.conf": "timeout 0\ndefault test.conf\n",
        "loader/entries/test.conf": (
            f"title metalflow test OS\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n"
        ),
    }


def _make_disk(
    tools: Mapping[str, str],
    work: Path,
    *,
    kernel: Path,
    initrd: Path,
    syslinux: Path,
    mbr: Path,
    bootx64: Path,
    cmdline: str,
) -> Path:
    """The hybrid disk: MBR + mbr.bin, one active FAT16 0xEF partition with both loaders."""
    payload = sum(path.stat().st_size for path in (kernel, initrd, bootx64)) + MIB // 4
    partition_mib = -(-(payload + MIB) // MIB)
    fat = work / "partition.fat"
    _run(
        [
            tools["mkfs.vfat"],
            "-C",
            "-F",
            "16",
            "--invariant",  # fixed times and IDs; before -i, which it would override
            "-i",
            VOLUME_ID,
            "-n",
            VOLUME_LABEL,
            fat,
            str(partition_mib * 1024),
        ]
    )
    copies = {kernel: "::/vmlinuz", initrd: "::/initrd.img", bootx64: "::/EFI/BOOT/BOOTX64.EFI"}
    for name, text in _boot_configs(cmdline).items():
        config = work / name.replace("/", "_")
        config.write_text(text)
        copies[config] = f"::/{name}"
    _run([tools["mmd"], "-i", fat, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"])
    for source, target in copies.items():
        _run([tools["mcopy"], "-i", fat, source, target])
    _run([syslinux, "--install", fat])

    disk = work / RAW_NAME
    with disk.open("wb") as f:
        f.truncate(PARTITION_START + partition_mib * MIB + MIB)
    sectors = partition_mib * MIB // 512
    layout = (
        f"label: dos\nlabel-id: {DISK_ID:#010x}\nunit: sectors\n"
        f"start={PARTITION_START // 512}, size={sectors}, type=ef, bootable\n"
    )
    _run([tools["sfdisk"], "-q", "--no-reread", "--no-tell-kernel", disk], stdin=layout.encode())
    with disk.open("r+b") as out, fat.open("rb") as src:
        out.write(mbr.read_bytes()[:440])
        out.seek(PARTITION_START)
        shutil.copyfileobj(src, out, MIB)
    return disk


# --- cache and entry point ---------------------------------------------------------------------


def _prune(cache_dir: Path, packages: Sequence[_Package], current: Path) -> None:
    """Drop what this build no longer needs: every kernel update or recipe change leaves some.

    Downloaded packages other than the current ones go at once, as do the entries earlier
    recipes kept; images that no run used for a week go too, and so do leftovers of builds that
    were killed midway.
    """
    wanted = {package.deb.deb_name for package in packages}
    for stale in (cache_dir / "debs").glob("*.deb"):
        if stale.name not in wanted:
            _remove(stale)
    for retired in RETIRED_CACHE_ENTRIES:
        _remove(cache_dir / retired)
    os.utime(current / "manifest.json")
    cutoff = time.time() - STALE_IMAGE_SECONDS
    for image in (cache_dir / "images").iterdir():
        if image != current and (image / "manifest.json").stat().st_mtime < cutoff:
            _remove(image)
    for leftover in cache_dir.glob(".build-*"):
        _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """One builder at a time per cache directory (parallel test runs may share it)."""
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _host_versions(tools: Mapping[str, str]) -> dict[str, str]:
    proc = subprocess.run(
        [tools["dpkg-query"], "-W", "-f", "${Package}=${Version}\n", *HOST_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _cache_key(packages: Sequence[_Package], host: Mapping[str, str], cmdline: str) -> str:
    material = {
        "recipe": _sha256(Path(__file__)),
        "installenv": builder.builder_digest(),
        "packages": {p.name: p.sha256 for p in packages},
        "host": dict(host),
        "cmdline": cmdline,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]


def _cached(directory: Path) -> OsImage | None:
    """The image in directory if its manifest still matches the files' bytes."""
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    image = OsImage(**{**data, "raw": directory / data["raw"], "zst": directory / data["zst"]})
    for path, size, digest in (
        (image.raw, image.raw_size, image.raw_sha256),
        (image.zst, image.zst_size, image.zst_sha256),
    ):
        if not path.is_file() or path.stat().st_size != size or _sha256(path) != digest:
            return None
    return image


def build_os_image(cache_dir: Path, *, extra_cmdline: str = "") -> OsImage:
    """Build the test OS image into cache_dir, or return the cached one built from the same inputs.

    The key covers this recipe and installenv's, the Debian packages' digests, the host tools'
    versions and the command line, so a rerun is fast and a changed input rebuilds. Needs apt
    lists that know the packages (no root); downloads go into cache_dir/debs.
    """
    tools = _host_tools()
    cmdline = f"{BASE_CMDLINE} {extra_cmdline}".strip()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir):
        packages = _resolve_packages(cache_dir)
        key = _cache_key(packages, _host_versions(tools), cmdline)
        final = cache_dir / "images" / key
        cached = _cached(final)
        if cached is not None:
            _prune(cache_dir, packages, final)
            return cached
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".build-"))
        try:
            root = work / "root"
            _fetch(cache_dir, packages, root)
            (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
            release = vmlinuz.name.removeprefix("vmlinuz-")
            initrd = work / "initrd.img"
            _write_initrd(root, release, initrd)
            raw = _make_disk(
                tools,
                work,
                kernel=vmlinuz,
                initrd=initrd,
                syslinux=root / "usr/bin/syslinux",
                mbr=root / "usr/lib/syslinux/mbr/mbr.bin",
                bootx64=root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
                cmdline=cmdline,
            )
            out = work / "out"
            out.mkdir()
            raw = raw.replace(out / RAW_NAME)
            zst = out / f"{RAW_NAME}.zst"
            # A fixed thread count, so that any machine writes the same bytes.
            _run([tools["zstd"], "-q", f"-{ZSTD_LEVEL}", "-T2", "--no-progress", raw, "-o", zst])
            image = OsImage(
                raw=raw,
                zst=zst,
                raw_sha256=_sha256(raw),
                zst_sha256=_sha256(zst),
                raw_size=raw.stat().st_size,
                zst_size=zst.stat().st_size,
                kernel_release=release,
                cmdline=cmdline,
                build_seconds=round(time.monotonic() - started, 2),
            )
            manifest = {**asdict(image), "raw": raw.name, "zst": zst.name}
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            out.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        built = _cached(final)
        if built is None:
            raise BuildError(f"the image just built in {final} does not match its manifest")
        _prune(cache_dir, packages, final)
        return built


# --- booting it --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """How a VM run ended: QEMU's exit code (None if it was killed at the timeout) and its log."""

    returncode: int | None
    seconds: float
    log: str

    @property
    def powered_off(self) -> bool:
        """The test OS reached its poweroff and QEMU exited by itself."""
        return self.returncode == 0 and "OSIMG-POWEROFF" in self.log


def boot_disk(
    disk: Path,
    workdir: Path,
    *,
    uefi: bool,
    timeout: float = 120,
    network: Sequence[str] = ("-nic", "none"),
    disk_bus: str = "virtio",
    firmware_log: bool = False,
) -> Boot:
    """Boot disk in QEMU (TCG, no reboot) until it exits or timeout; kill it at the timeout.

    disk_bus is "virtio" (virtio-blk, /dev/vda) or "ide" (/dev/sda). QEMU may write to disk.
    """
    qemu = require_tool(QEMU, "qemu-system-x86")
    log = workdir / f"serial-{'uefi' if uefi else 'bios'}-{time.monotonic_ns()}.log"
    if disk_bus == "virtio":
        drive = [
            "-drive",
            f"file={disk},format=raw,if=none,id=d0",
            "-device",
            "virtio-blk-pci,drive=d0",
        ]
    elif disk_bus == "ide":
        drive = ["-drive", f"file={disk},format=raw,if=ide"]
    else:
        raise ValueError(f"unknown disk bus {disk_bus!r}")
    argv = [
        *machine_args(log, 512, qemu),
        "-no-reboot",
        *firmware_args(workdir, uefi=uefi, firmware_log=firmware_log),
        *drive,
        *network,
    ]
    started = time.monotonic()
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout)
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            returncode = None
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace") if log.exists() else ""
    if stderr:
        text += "\n--- qemu stderr ---\n" + stderr.decode(errors="replace")
    return Boot(returncode, round(seconds, 2), text)
