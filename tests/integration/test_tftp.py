"""Real TFTP clients (curl, atftp, tftp-hpa's tftp) against the real TftpServer on 127.0.0.1.

curl reports TFTP errors by exit code (68: file not found, 69: access violation); its message
text is replaced by a "getpeername() failed" line in curl 7.88, so only the code is checked.
tftp-hpa's client exits 0 even after an ERROR, so its output is checked instead.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from metalflow.boot.tftp.server import READ_ONLY_MESSAGE
from metalflow.boot.tftp.session import Outcome
from metalflow.boot.tftp.tree import VirtualTree
from tests.prerequisites import needs_tool
from tests.unit.boot.tftp import ServerThread, require_ipxe, wait_until

CLIENT_PACKAGES = {"curl": "curl", "atftp": "atftp", "tftp": "tftp-hpa"}
IPXE = Path("/usr/lib/ipxe/undionly.kpxe")
CURL_NOT_FOUND = 68
CURL_ACCESS_VIOLATION = 69
FILES = {
    "big.bin": random.Random(1).randbytes(5 * 1024 * 1024),
    "medium.bin": random.Random(2).randbytes(1024 * 1024),
    "small.bin": random.Random(3).randbytes(1000),
    "exact.bin": random.Random(4).randbytes(512 * 367 * 4),
    "empty.bin": b"",
    "text.txt": b"line one\nbare\rcarriage\r\nlast line\n" * 50,
}
"""exact.bin is a whole number of blocks at both 512 and 1468 (= 4 * 367) bytes."""
NAMES = ["big.bin", "small.bin", "exact.bin", "empty.bin"]


def require(tool: str) -> str:
    return needs_tool(tool, CLIENT_PACKAGES[tool])


@dataclass(frozen=True)
class Served:
    thread: ServerThread
    root: Path

    @property
    def port(self) -> str:
        return str(self.thread.port)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("tftp")
    root = base / "root"
    root.mkdir()
    for name, content in FILES.items():
        (root / name).write_bytes(content)
    (base / "secret").write_bytes(b"not for clients")
    (root / "escape").symlink_to(base / "secret")
    (root / "escape-dir").symlink_to(base)
    (root / "images" / "x86_64").mkdir(parents=True)
    (root / "images" / "x86_64" / "kernel").write_bytes(FILES["medium.bin"])
    files = {"undionly.kpxe": IPXE} if IPXE.exists() else {}
    tree = VirtualTree(files=files, directories={"": root})
    # Twenty concurrent downloads from 127.0.0.1 below: over the default 16 per client address.
    with ServerThread(tree, timeout=0.5, retries=3, max_transfers_per_client=32) as thread:
        yield Served(thread, root)
    assert thread.loop_errors == []


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def assert_no_content(path: Path) -> None:
    assert not path.exists() or path.stat().st_size == 0


def curl(served: Served, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        require("curl"), "-sS", f"tftp://127.0.0.1:{served.port}/{name}", "-o", str(out), *extra
    )


def atftp(served: Served, name: str, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    flags = [arg for option in options for arg in ("--option", option)]
    return run(
        require("atftp"), "--get", "-r", name, "-l", str(out), *flags, "127.0.0.1", served.port
    )


def hpa(
    served: Served, name: str, out: Path, mode: str = "binary"
) -> subprocess.CompletedProcess[str]:
    return run(require("tftp"), "-m", mode, "127.0.0.1", served.port, "-c", "get", name, str(out))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("blksize", [None, "1468"])
def test_curl_downloads(served: Served, out: Path, name: str, blksize: str | None) -> None:
    extra = ("--tftp-blksize", blksize) if blksize else ()
    result = curl(served, name, out, *extra)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == FILES[name]


def test_every_client_downloads_a_file_two_directories_down(served: Served, out: Path) -> None:
    name = "images/x86_64/kernel"
    for fetch in (curl, atftp, hpa):
        out.unlink(missing_ok=True)
        result = fetch(served, name, out)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == FILES["medium.bin"]


def test_curl_without_options(served: Served, out: Path) -> None:
    result = curl(served, "small.bin", out, "--tftp-no-options")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == FILES["small.bin"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "options", [(), ("blksize 1468", "windowsize 8"), ("blksize 512", "windowsize 64", "tsize 0")]
)
def test_atftp_downloads(served: Served, out: Path, name: str, options: tuple[str, ...]) -> None:
    result = atftp(served, name, out, *options)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == FILES[name]


@pytest.mark.parametrize("name", NAMES)
def test_tftp_hpa_downloads(served: Served, out: Path, name: str) -> None:
    result = hpa(served, name, out)
    assert "Error" not in result.stdout + result.stderr
    assert out.read_bytes() == FILES[name]


def test_tftp_hpa_netascii_round_trips_line_ends(served: Served, out: Path) -> None:
    result = hpa(served, "text.txt", out, "netascii")
    assert "Error" not in result.stdout + result.stderr
    assert out.read_bytes() == FILES["text.txt"]


def test_an_ipxe_binary_mounted_as_a_single_file(served: Served, out: Path) -> None:
    require_ipxe()
    result = atftp(served, "/undionly.kpxe", out, "blksize 1468")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == IPXE.read_bytes()


ESCAPES = [
    ("../secret", CURL_ACCESS_VIOLATION),
    ("escape", CURL_ACCESS_VIOLATION),
    ("escape-dir/secret", CURL_ACCESS_VIOLATION),
    ("/etc/passwd", CURL_NOT_FOUND),
]


@pytest.mark.parametrize(("name", "curl_code"), ESCAPES)
def test_curl_cannot_leave_the_tree(served: Served, out: Path, name: str, curl_code: int) -> None:
    assert curl(served, name, out, "--path-as-is").returncode == curl_code
    assert_no_content(out)


@pytest.mark.parametrize(("name", "curl_code"), ESCAPES)
def test_atftp_cannot_leave_the_tree(served: Served, out: Path, name: str, curl_code: int) -> None:
    result = atftp(served, name, out, "blksize 1468")
    assert result.returncode != 0
    expected = "file not found" if curl_code == CURL_NOT_FOUND else "access violation"
    assert f"<{expected}>" in result.stderr
    assert_no_content(out)


@pytest.mark.parametrize(("name", "curl_code"), ESCAPES)
def test_tftp_hpa_cannot_leave_the_tree(
    served: Served, out: Path, name: str, curl_code: int
) -> None:
    result = hpa(served, name, out)
    code = 1 if curl_code == CURL_NOT_FOUND else 2
    assert f"Error code {code}:" in result.stdout + result.stderr
    assert_no_content(out)


def test_a_missing_file_is_file_not_found(served: Served, out: Path) -> None:
    assert curl(served, "missing.bin", out).returncode == CURL_NOT_FOUND
    assert "<file not found>" in atftp(served, "missing.bin", out).stderr
    result = hpa(served, "missing.bin", out)
    assert "Error code 1: file not found" in result.stdout + result.stderr
    assert_no_content(out)


def test_uploads_are_refused(served: Served, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"payload")
    port = served.port
    curl_result = run(require("curl"), "-sS", "-T", str(upload), f"tftp://127.0.0.1:{port}/up")
    assert curl_result.returncode == CURL_ACCESS_VIOLATION
    atftp_result = run(require("atftp"), "--put", "-l", str(upload), "-r", "up", "127.0.0.1", port)
    assert atftp_result.returncode != 0
    assert READ_ONLY_MESSAGE in atftp_result.stderr
    hpa_result = run(
        require("tftp"), "-m", "binary", "127.0.0.1", port, "-c", "put", str(upload), "up"
    )
    assert READ_ONLY_MESSAGE in hpa_result.stdout + hpa_result.stderr
    assert not (served.root / "up").exists()


def test_twenty_concurrent_curl_downloads(served: Served, tmp_path: Path) -> None:
    require("curl")
    done_before = len(served.thread.records)
    outputs = [tmp_path / f"out{index}" for index in range(20)]

    def fetch(index: int) -> int:
        extra = ("--tftp-blksize", "1468") if index % 2 else ()
        return curl(served, "medium.bin", outputs[index], *extra).returncode

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(fetch, range(20)))
    assert codes == [0] * 20
    for output in outputs:
        assert output.read_bytes() == FILES["medium.bin"]
    wait_until(lambda: len(served.thread.records) >= done_before + 20)
    recent = served.thread.records[done_before:]
    assert [record.outcome for record in recent] == [Outcome.COMPLETE] * 20
