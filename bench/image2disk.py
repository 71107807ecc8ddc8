#!/usr/bin/env python3
"""image2disk benchmark: metalflow's built-in action vs `curl | zstd -dc | dd`, same image and disk.

Measured: the wall time (and CPU time) to stream one zstd-compressed image over HTTP from
127.0.0.1, decompress it and write it to a target, ending with an fsync, by three sides:

- `metalflow`: `metalflow.agent.actions.image.image2disk(ctx)` called in this process with a
  Context built as tests/integration/test_agent.py builds one (IMG_URL, DEST_DISK,
  COMPRESSED=true, CHECKSUM=sha256:<digest of the compressed file>, the bytes the action hashes).
  The action hashes the download whether CHECKSUM is set or not (without it, it logs the digest),
  so a run without CHECKSUM would differ by one string compare and is not measured;
- `pipeline`: `curl -s URL | zstd -dc | dd of=TARGET bs=4M oflag=direct conv=fsync`
  (`oflag=direct` left out when the target refuses O_DIRECT, or with --no-direct: then dd
  writes through the page cache like image2disk does); it checks nothing;
- `pipeline+sha256`: the same with `tee >(sha256sum >FILE)` after curl, and the digest compared
  afterwards: the work image2disk does, so this is the like-for-like comparison.

The image (--size MiB: 1/4 random bytes, 1/4 zeros, 1/2 log-like text, in 4 MiB runs) is
compressed with `zstd -3 -T0` and served by `python -m http.server` in its own process, so its CPU
is not charged to the measured process. The target is a file pre-sized to image + 16 MiB
(image2disk takes the disk size from lseek(SEEK_END)), a loop device on such a file (--loop,
root) or --target. Before every run the image area is overwritten with 0xA5 bytes, flushed and
dropped from the page cache (that file's pages only), untimed: every run then overwrites
allocated blocks as on a real disk, and a side that skips a region cannot pass the check that
follows every run: the target's first image-size bytes must have the raw image's SHA-256.
The machine is shared and dropping the whole page cache would disturb everyone else, so the
sides alternate within each round (the order rotates every round) and the median and min of
--rounds runs are reported. CPU: this process's RUSAGE_SELF + RUSAGE_CHILDREN deltas for
image2disk (and its `zstd -dc` child), the RUSAGE_CHILDREN delta for the pipelines (bash and
all it waited for), and the HTTP server's from /proc. Nothing is
pinned to a CPU: each side's processes share the machine's CPUs the same way. Only 127.0.0.1
is contacted; only the processes and loop device this script created are stopped/detached.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dhcp import SetupError, log, need, raise_on_sigterm, sh  # bench/dhcp.py (same directory)
from fleet import cpu_seconds

import metalflow
from metalflow.agent.actions import image as image_module
from metalflow.agent.actions.base import ActionError, Context
from metalflow.agent.system import System

MIB = 1 << 20
BLOCK = 4 * MIB
SLACK = 16 * MIB  # target size beyond the image: image2disk also zeroes the last MiB
IMAGE_NAME = "image.raw.zst"
SIDES = ("metalflow", "pipeline", "pipeline+sha256")
WORDS = (  # the vocabulary of the text part of the image
    "kernel systemd eth0 link up down dhcp lease renewed mounted /var/lib/metalflow started"
    " stopped worker request GET POST 200 404 ms bytes cpu0 cpu1 disk sda1 ext4 journal commit"
    " error warning info debug session user root cron backup rotated"
)


class RunFailed(Exception):
    """One side's run went wrong (exit status, timeout, wrong bytes on the target)."""


@dataclass
class Target:
    path: str
    size: int
    description: str
    direct: bool


@dataclass
class Run:
    seconds: float
    cpu: float
    server_cpu: float


@dataclass
class Side:
    name: str
    command: str
    runs: list[Run] = field(default_factory=list)
    error: str = ""

    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    def best(self) -> float:
        return min(r.seconds for r in self.runs)


def text_block(rng: random.Random) -> bytes:
    """1 MiB of syslog-like lines: compressible like real text, not a trivial repetition."""
    vocabulary = WORDS.split()
    lines: list[str] = []
    length = 0
    while length < MIB:
        stamp = f"Nov {rng.randint(1, 30):2} {rng.randint(0, 23):02}:{rng.randint(0, 59):02}"
        words = " ".join(rng.choices(vocabulary, k=rng.randint(4, 12)))
        line = f"{stamp}:{rng.randint(0, 59):02} node{rng.randint(0, 99):02} {words}\n"
        lines.append(line)
        length += len(line)
    return "".join(lines).encode()[:MIB]


def make_image(workdir: Path, size_mib: int) -> tuple[Path, str, str]:
    """Generate the raw image straight into `zstd -3 -T0` (the raw bytes never touch the disk);
    return the compressed file, the raw image's SHA-256 and the compressed file's."""
    rng = random.Random(2026)
    texts = [text_block(rng) for _ in range(16)]
    path = workdir / IMAGE_NAME
    raw = hashlib.sha256()
    with path.open("wb") as out:
        zstd = subprocess.Popen(
            [need("zstd", "zstd"), "-3", "-T0", "-q", "-c"], stdin=subprocess.PIPE, stdout=out
        )
        assert zstd.stdin is not None
        for index in range(size_mib):
            kind = (index // 4) % 4
            if kind == 0:
                block = os.urandom(MIB)
            elif kind == 2:
                block = bytes(MIB)
            else:
                block = texts[index % len(texts)]
            raw.update(block)
            zstd.stdin.write(block)
        zstd.stdin.close()
        if zstd.wait():
            raise SetupError(f"zstd -3 -T0 failed ({zstd.returncode})")
    return path, raw.hexdigest(), sha256_of(str(path), path.stat().st_size)


def sha256_of(path: str, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as source:
        while length > 0 and (chunk := source.read(min(BLOCK, length))):
            digest.update(chunk)
            length -= len(chunk)
    return digest.hexdigest()


def accepts_o_direct(path: str) -> bool:
    """Whether dd's oflag=direct would work here (tmpfs, for one, refuses O_DIRECT)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


def filesystem(path: str) -> str:
    found = sh("findmnt", "-n", "-o", "FSTYPE", "-T", path, check=False).stdout.strip()
    return found or "?"


def open_target(args: argparse.Namespace, workdir: Path, image_size: int) -> tuple[Target, str]:
    """The target, and the loop device to detach afterwards ("" when none was attached)."""
    wanted = image_size + SLACK
    loop = ""
    if args.target:
        path = args.target
        if not os.path.exists(path):
            raise SetupError(f"--target {path} does not exist")
        if not (os.path.isfile(path) or re.fullmatch(r"/dev/loop\d+", os.path.realpath(path))):
            raise SetupError(f"--target {path}: give a regular file or a /dev/loopN device")
        kind = "loop device" if path.startswith("/dev/") else "file"
    else:
        backing = workdir / "target.img"
        with backing.open("wb") as out:
            out.truncate(wanted)
        path, kind = str(backing), "file"
        if args.loop:
            loop = sh("losetup", "--find", "--show", path).stdout.strip()
            path, kind = loop, f"loop device, backing file on {filesystem(str(backing))}"
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if size < image_size + 2 * MIB:
        raise SetupError(f"target {path} has {size} bytes; it needs at least {wanted}")
    direct = accepts_o_direct(path) and not args.no_direct
    where = filesystem(path) if kind == "file" else kind
    description = f"{path} ({size / MIB:.0f} MiB, {where})"
    return Target(path, size, description, direct), loop


def scribble(target: Target, image_size: int) -> None:
    """Overwrite the image area with 0xA5, flush it and drop this target's cached pages, so
    each run starts from the same state and only its own writes can make the check pass."""
    pattern = b"\xa5" * BLOCK
    fd = os.open(target.path, os.O_WRONLY)
    try:
        for offset in range(0, image_size, BLOCK):
            view = memoryview(pattern)[: min(BLOCK, image_size - offset)]
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def start_server(directory: Path, log_path: Path) -> tuple[subprocess.Popen[str], int]:
    """`python -m http.server` on 127.0.0.1, on a port the kernel picks (read from its banner)."""
    argv = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"]
    with log_path.open("w") as errors:
        server = subprocess.Popen(
            [*argv, "--directory", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,  # Ctrl-C reaches this script only; it stops the server
        )
    assert server.stdout is not None
    banner = server.stdout.readline()
    found = re.search(r" port (\d+) ", banner)
    if found is None:
        stop(server)
        raise SetupError(f"http.server did not start: {banner!r} {log_path.read_text()[-500:]}")
    return server, int(found.group(1))


def stop(process: subprocess.Popen[str]) -> None:
    """Stop one process this script started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


def cpu_time(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_metalflow(url: str, target: Target, digest: str, image_size: int) -> tuple[float, float]:
    """One image2disk call, as a workflow runs it (with CHECKSUM); (wall s, CPU s)."""
    lines: list[str] = []
    env = {
        "IMG_URL": url,
        "DEST_DISK": target.path,
        "COMPRESSED": "true",
        "CHECKSUM": f"sha256:{digest}",
    }
    ctx = Context(env=env, log=lines.append, system=System(), action="image2disk")
    cpu_before = cpu_time(resource.RUSAGE_SELF) + cpu_time(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        image_module.image2disk(ctx)
    except ActionError as error:
        raise RunFailed(f"image2disk failed: {error}") from None
    elapsed = time.perf_counter() - started
    cpu = cpu_time(resource.RUSAGE_SELF) + cpu_time(resource.RUSAGE_CHILDREN) - cpu_before
    if f"sha256 verified: {digest}" not in lines or f"wrote {image_size} bytes" not in lines[-1]:
        raise RunFailed(f"image2disk did not verify or wrote another size: {lines[-3:]}")
    return elapsed, cpu


def pipeline_command(url: str, target: Target, sum_file: Path | None) -> str:
    """The shell pipeline; with `sum_file`, tee also feeds sha256sum (waited for by `wait $!`)."""
    flags = "bs=4M oflag=direct conv=fsync" if target.direct else "bs=4M conv=fsync"
    dd = f"dd of={shlex.quote(target.path)} {flags}"
    curl = f"curl -s {shlex.quote(url)}"
    if sum_file is None:
        return f"{curl} | zstd -dc | {dd}"
    return f"{curl} | tee >(sha256sum >{shlex.quote(str(sum_file))}) | zstd -dc | {dd} && wait $!"


def run_pipeline(
    command: str, sum_file: Path | None, digest: str, timeout: float
) -> tuple[float, float]:
    """`bash -c` the pipeline (with pipefail, so any stage's failure counts); (wall s, CPU s)."""
    cpu_before = cpu_time(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        ["bash", "-c", f"set -o pipefail; {command}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops all of its stages
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except BaseException:  # timeout or Ctrl-C: stop curl, zstd, dd and bash, not just bash
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    elapsed = time.perf_counter() - started
    cpu = cpu_time(resource.RUSAGE_CHILDREN) - cpu_before
    if process.returncode:
        raise RunFailed(f"pipeline exited {process.returncode}: {stderr.strip()[-300:]}")
    if sum_file is not None:
        found = sum_file.read_text().split()
        if not found or found[0] != digest:
            raise RunFailed(f"sha256sum of the download is {found[:1]}, expected {digest}")
    return elapsed, cpu


def measure(
    sides: dict[str, Side],
    runners: dict[str, Callable[[], tuple[float, float]]],
    args: argparse.Namespace,
    target: Target,
    raw_digest: str,
    server: subprocess.Popen[str],
) -> None:
    """Every side once per round, in an order rotated each round, so that a noisy minute on
    the shared machine does not always hit the same side (or always the first one)."""
    image_size = args.size * MIB
    names = list(sides)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            side = sides[name]
            if side.error:
                continue
            scribble(target, image_size)
            server_before = cpu_seconds(server.pid) or 0.0
            try:
                seconds, cpu = runners[name]()
                if sha256_of(target.path, image_size) != raw_digest:
                    raise RunFailed("the target's first image-size bytes differ from the image")
            except (RunFailed, subprocess.TimeoutExpired) as error:
                side.error = str(error)
                log(f"round {round_ + 1}/{args.rounds} {name}: FAILED: {error}")
                continue
            server_cpu = (cpu_seconds(server.pid) or 0.0) - server_before
            side.runs.append(Run(seconds, cpu, server_cpu))
            log(
                f"round {round_ + 1}/{args.rounds} {name:16} {seconds:7.2f} s"
                f" {args.size / seconds:7.1f} MiB/s  cpu {cpu:6.2f} s"
                f"  server cpu {server_cpu:5.2f} s"
            )
            if server.poll() is not None:
                raise SetupError("the HTTP server exited during the run")


def ratio_lines(sides: dict[str, Side]) -> list[str]:
    """metalflow / each pipeline, on the median and on the best time (>1: metalflow slower)."""
    mine = sides.get("metalflow")
    out: list[str] = []
    if mine is None or not mine.runs:
        return out
    for name in ("pipeline", "pipeline+sha256"):
        theirs = sides.get(name)
        if theirs is None or not theirs.runs:
            continue
        out.append(
            f"ratio (metalflow / {name}, median wall time): {mine.median() / theirs.median():.2f}x"
        )
        out.append(f"ratio (metalflow / {name}, min wall time): {mine.best() / theirs.best():.2f}x")
    return out


def report(
    sides: dict[str, Side], args: argparse.Namespace, compressed: int, target: Target
) -> str:
    mib = args.size
    out = [
        "",
        f"image2disk benchmark: {mib} MiB raw image, {compressed / MIB:.1f} MiB zstd -3"
        f" ({mib * MIB / compressed:.2f}x), {args.rounds} rounds, sides alternating",
        "=" * 96,
        f"{'side':17}{'median s':>9}{'min s':>8}{'max s':>8}{'MiB/s med':>11}{'MiB/s best':>12}"
        f"{'cpu s med':>11}{'cpu/wall':>10}{'srv cpu s':>11}",
    ]
    for side in sides.values():
        if not side.runs:
            out.append(f"{side.name:17}FAILED: {side.error}")
            continue
        median, best = side.median(), side.best()
        cpu = statistics.median(r.cpu for r in side.runs)
        server_cpu = statistics.median(r.server_cpu for r in side.runs)
        out.append(
            f"{side.name:17}{median:>9.2f}{best:>8.2f}{max(r.seconds for r in side.runs):>8.2f}"
            f"{mib / median:>11.1f}{mib / best:>12.1f}{cpu:>11.2f}{cpu / median:>10.2f}"
            f"{server_cpu:>11.2f}"
        )
        if side.error:
            out.append(f"{'':17}(later run FAILED: {side.error})")
    out.append("")
    out.extend(ratio_lines(sides))
    out.append("")
    out.append(f"image2disk's zstd decoder: {shutil.which('zstd')} -dc subprocess")
    out.append(f"target: {target.description}; written from a 0xA5-filled state each run")
    for side in sides.values():
        out.append(f"  {side.name:16} {side.command}")
    out.append(
        "cpu s: metalflow = this process + its children (zstd), pipelines = bash and its"
        " children; srv cpu s = the http.server process"
    )
    out.append("versions: " + versions())
    out.append("=" * 96)
    return "\n".join(out)


def versions() -> str:
    found = [f"Python {sys.version.split()[0]}", f"metalflow {metalflow.__version__}"]
    for name, argv, pattern in (
        ("curl", ["curl", "--version"], r"curl (\S+)"),
        ("zstd", ["zstd", "-V"], r"v(\d+\.\d+\.\d+)"),
        ("dd (coreutils)", ["dd", "--version"], r"dd \(coreutils\) (\S+)"),
    ):
        match = re.search(pattern, sh(*argv, check=False).stdout)
        found.append(f"{name} {match.group(1) if match else '?'}")
    return "; ".join(found)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=512, help="raw image size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--target", help="write to this pre-sized file or /dev/loopN instead (it is overwritten)"
    )
    where.add_argument(
        "--loop", action="store_true", help="attach a loop device to the target file (root)"
    )
    parser.add_argument(
        "--no-direct", action="store_true", help="no oflag=direct for dd (page cache + fsync)"
    )
    parser.add_argument(
        "--tmpdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the image and the target file are created",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per run")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    args.sides = [s for s in args.sides.split(",") if s]
    if not args.sides or set(args.sides) - set(SIDES):
        parser.error(f"--sides: choose from {', '.join(SIDES)}")
    if args.size < 4 or args.rounds < 1:
        parser.error("--size must be at least 4 and --rounds positive")
    if args.loop and os.geteuid() != 0:
        parser.error("--loop needs root (losetup)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(variable, None)  # urllib and curl would send 127.0.0.1 traffic through it
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-image2disk.", dir=args.tmpdir))
    server: subprocess.Popen[str] | None = None
    loop = ""
    try:
        for tool, package in (("curl", "curl"), ("dd", "coreutils"), ("sha256sum", "coreutils")):
            need(tool, package)
        served = workdir / "www"
        served.mkdir()
        log(f"generating a {args.size} MiB image (zstd -3 -T0) in {workdir}")
        image, raw_digest, digest = make_image(served, args.size)
        target, loop = open_target(args, workdir, args.size * MIB)
        server, port = start_server(served, workdir / "http.server.log")
        url = f"http://127.0.0.1:{port}/{IMAGE_NAME}"
        log(f"serving {url} (http.server PID {server.pid}); target {target.description}")
        sum_file = workdir / "download.sha256"
        commands = {
            "metalflow": "image2disk(ctx) in-process, env IMG_URL DEST_DISK COMPRESSED=true"
            " CHECKSUM=sha256:<compressed>",
            "pipeline": pipeline_command(url, target, None),
            "pipeline+sha256": pipeline_command(url, target, sum_file),
        }
        size = args.size * MIB
        runners: dict[str, Callable[[], tuple[float, float]]] = {
            "metalflow": lambda: run_metalflow(url, target, digest, size),
            "pipeline": lambda: run_pipeline(commands["pipeline"], None, digest, args.timeout),
            "pipeline+sha256": lambda: run_pipeline(
                commands["pipeline+sha256"], sum_file, digest, args.timeout
            ),
        }
        sides = {name: Side(name, commands[name]) for name in args.sides}
        measure(sides, runners, args, target, raw_digest, server)
        print(f"machine: {os.cpu_count()} CPUs, no pinning")
        print(report(sides, args, image.stat().st_size, target), flush=True)
        return 1 if any(side.error or not side.runs for side in sides.values()) else 0
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            stop(server)
        if loop:
            sh("losetup", "-d", loop, check=False)
        if args.keep:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
