"""A Redfish BMC on loopback: sushy-tools' emulator with its fake driver (no libvirt).

Each emulator gets a fresh state directory (its sqlite state survives restarts and config
systems are only ever added), N fake systems `node-0`..`node-N-1`, optionally an htpasswd file
(bcrypt, 4 rounds: a cost-12 hash costs ~190 ms per request), optionally HTTPS with a
self-signed certificate for 127.0.0.1, a free port on 127.0.0.1, and its own TMPDIR (virtual
media downloads land there). It is stopped by the PID we started.
Virtual media insert really downloads the URL, so `ImageServer` serves images on loopback.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from metalflow.power.driver import Bmc
from tests.integration.conftest import free_port
from tests.prerequisites import unavailable

EMULATOR = Path(sys.executable).with_name("sushy-emulator")
USERNAME = "admin"
PASSWORD = "s3cret-Pa55"


@dataclass(frozen=True)
class FakeSystem:
    uuid: str
    name: str


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    port: int
    systems: list[FakeSystem]
    log_path: Path
    auth: tuple[str, str] | None
    tls: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def bmc(self, system: str | None, **changes: Any) -> Bmc:
        """A Bmc for this emulator, driving `system` (None: leave the option out)."""
        options = {"scheme": "https" if self.tls else "http"}
        if system is not None:
            options["system"] = system
        username, password = self.auth or (None, None)
        fields: dict[str, Any] = {
            "driver": "redfish",
            "host": "127.0.0.1",
            "port": self.port,
            "username": username,
            "password": password,
            "options": options,
        }
        fields.update(changes)
        return Bmc(**fields)

    def get(self, path: str) -> dict[str, Any]:
        """The emulator's own JSON for `path`, as any Redfish client would read it."""
        response = httpx.get(
            f"{self.url}{path}", auth=self.auth, follow_redirects=True, timeout=10, verify=False
        )
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _config(
    directory: Path, port: int, systems: list[FakeSystem], auth_file: Path | None, tls: bool
) -> str:
    fake = [
        {
            "uuid": system.uuid,
            "name": system.name,
            "power_state": "Off",
            "external_notifier": False,
            "nics": [{"mac": f"52:54:00:00:00:{index:02x}", "ip": f"192.0.2.{index + 10}"}],
        }
        for index, system in enumerate(systems)
    ]
    lines = [
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
        "SUSHY_EMULATOR_FAKE_DRIVER = True",
        f"SUSHY_EMULATOR_STATE_DIR = {str(directory / 'state')!r}",
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}",
    ]
    if auth_file is not None:
        lines.append(f"SUSHY_EMULATOR_AUTH_FILE = {str(auth_file)!r}")
    if tls:
        lines.append(f"SUSHY_EMULATOR_SSL_CERT = {str(directory / 'cert.pem')!r}")
        lines.append(f"SUSHY_EMULATOR_SSL_KEY = {str(directory / 'key.pem')!r}")
    return "\n".join(lines) + "\n"


def _htpasswd(path: Path, username: str, password: str) -> Path:
    try:
        import bcrypt
    except ImportError:
        unavailable("bcrypt is missing: pip install sushy-tools (it depends on bcrypt)")
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{username}:{digest}\n")
    return path


def _self_signed(directory: Path) -> None:
    """cert.pem/key.pem for 127.0.0.1, signed by itself: no client trusts it by default."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metalflow test BMC")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _wait_ready(emulator: Emulator, deadline: float) -> bool:
    """True once /redfish/v1/ answers; False when the process died (e.g. the port was taken)."""
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            return False
        try:
            answer = httpx.get(f"{emulator.url}/redfish/v1/", timeout=1, verify=False)
            if answer.status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"sushy-emulator did not answer in time; log:\n{emulator.log()}")


def start_emulator(
    directory: Path, *, systems: int = 1, auth: bool = False, tls: bool = False
) -> Emulator:
    if not EMULATOR.exists():
        unavailable(f"{EMULATOR} is missing: pip install -e '.[test]' (sushy-tools)")
    directory.mkdir(parents=True)
    (directory / "tmp").mkdir()
    fake = [
        FakeSystem(f"00000000-0000-0000-0000-{index:012d}", f"node-{index}")
        for index in range(systems)
    ]
    auth_file = _htpasswd(directory / "htpasswd", USERNAME, PASSWORD) if auth else None
    if tls:
        _self_signed(directory)
    config = directory / "emulator.conf"
    log_path = directory / "emulator.log"
    for _attempt in range(3):
        port = free_port()
        config.write_text(_config(directory, port, fake, auth_file, tls))
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(EMULATOR), "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "TMPDIR": str(directory / "tmp")},
            )
        credentials = (USERNAME, PASSWORD) if auth else None
        emulator = Emulator(process, port, fake, log_path, credentials, tls)
        try:
            if _wait_ready(emulator, time.monotonic() + 20):
                return emulator
        except BaseException:
            emulator.stop()
            raise
        emulator.stop()
    raise RuntimeError(f"sushy-emulator would not start; log:\n{log_path.read_text()}")


@pytest.fixture(name="emulators")
def emulators_fixture(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """`emulators(systems=N, auth=bool, tls=bool)` starts one more; all stop at the end."""
    started: list[Emulator] = []

    def start(*, systems: int = 1, auth: bool = False, tls: bool = False) -> Emulator:
        directory = tmp_path / f"emulator-{len(started)}"
        emulator = start_emulator(directory, systems=systems, auth=auth, tls=tls)
        started.append(emulator)
        return emulator

    try:
        yield start
    finally:
        for emulator in started:
            emulator.stop()


class _ImageHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, fetched: list[str], **kwargs: Any) -> None:
        self.fetched = fetched
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.fetched.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `fetched` instead."""


@dataclass
class ImageServer:
    """Files from `directory` over HTTP on 127.0.0.1; `fetched` lists the paths asked for."""

    directory: Path
    fetched: list[str] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer = field(init=False)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        handler = partial(_ImageHandler, fetched=self.fetched, directory=str(self.directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(name="image_server")
def image_server_fixture(tmp_path: Path) -> Iterator[ImageServer]:
    directory = tmp_path / "www"
    directory.mkdir()
    (directory / "boot.iso").write_bytes(b"CD001 metalflow test image\n" * 64)
    server = ImageServer(directory)
    try:
        yield server
    finally:
        server.stop()


def boot_section(emulator: Emulator, system: FakeSystem) -> Mapping[str, Any]:
    section: Mapping[str, Any] = emulator.get(f"/redfish/v1/Systems/{system.uuid}")["Boot"]
    return section
