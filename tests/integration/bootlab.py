"""A boot network on this machine: network namespaces joined by a bridge, metalflow in one.

Layout per lab (every name carries a per-lab tag, so parallel runs never collide):
- namespace `lan`: bridge `br0`, the wire every host plugs into (and QEMU's tap);
- namespace `srv`: metalflow (`metalflow up --interface eth0`), 192.0.2.1/24 on the wire;
- one namespace per client host, `eth0` plugged into the bridge;
- a management link from the test's own namespace into `srv` (198.18.N.1 ↔ 198.18.N.2/30),
  so the test drives metalflow's API without being on the boot network.
Only TEST-NET-1 and the benchmark range are used; everything is removed in `close()`.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.prerequisites import needs_root, needs_tool

METALFLOW = str(Path(sys.executable).with_name("metalflow"))
SERVER_IP = "192.0.2.1"
_counter = itertools.count()


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


@dataclass
class Host:
    lab: BootLab
    namespace: str
    mac: str

    def run(
        self, argv: Sequence[str], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        process: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.namespace, *argv], text=True, **kwargs
        )
        self.lab.processes.append(process)
        return process

    def set_address(self, cidr: str) -> None:
        self.run(["ip", "addr", "add", cidr, "dev", "eth0"])


@dataclass
class Metalflow:
    process: subprocess.Popen[str]
    url: str
    token: str
    data_dir: Path
    log_path: Path

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class BootLab:
    tmp: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{next(_counter)}")
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    hosts: int = 0

    def __post_init__(self) -> None:
        self.lan = self._namespace("l")
        self.srv_ns = self._namespace("s")
        sh("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.lan, "link", "set", "br0", "type", "bridge", "forward_delay", "0")
        sh("ip", "-n", self.lan, "link", "set", "br0", "up")
        self.server = self._plug(self.srv_ns, "52:54:00:00:00:01")
        self.server.set_address(f"{SERVER_IP}/24")
        index = int(self.tag) % 16000
        self.mgmt_host = f"198.18.{index // 64}.{(index % 64) * 4 + 1}"
        self.mgmt_srv = f"198.18.{index // 64}.{(index % 64) * 4 + 2}"
        outer, inner = f"mfm{self.tag}", f"mfn{self.tag}"
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        self.host_links.append(outer)
        sh("ip", "link", "set", inner, "netns", self.srv_ns)
        sh("ip", "-n", self.srv_ns, "link", "set", inner, "name", "mgmt")
        sh("ip", "-n", self.srv_ns, "addr", "add", f"{self.mgmt_srv}/30", "dev", "mgmt")
        sh("ip", "-n", self.srv_ns, "link", "set", "mgmt", "up")
        sh("ip", "addr", "add", f"{self.mgmt_host}/30", "dev", outer)
        sh("ip", "link", "set", outer, "up")

    def _namespace(self, kind: str) -> str:
        name = f"mf{kind}{self.tag}x{len(self.namespaces)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _plug(self, namespace: str, mac: str) -> Host:
        self.hosts += 1
        port, end = f"mfp{self.tag}x{self.hosts}", f"mfe{self.tag}x{self.hosts}"
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", end)
        sh("ip", "link", "set", port, "netns", self.lan)
        sh("ip", "-n", self.lan, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.lan, "link", "set", port, "up")
        sh("ip", "link", "set", end, "netns", namespace)
        sh("ip", "-n", namespace, "link", "set", end, "name", "eth0")
        sh("ip", "-n", namespace, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        return Host(self, namespace, mac)

    def host(self, mac: str) -> Host:
        """A new client host on the wire, its eth0 with `mac` and no address."""
        return self._plug(self._namespace("c"), mac)

    def tap(self, name: str = "tap0") -> str:
        """A tap device on the bridge for a QEMU VM run in the `lan` namespace."""
        sh("ip", "-n", self.lan, "tuntap", "add", "dev", name, "mode", "tap")
        sh("ip", "-n", self.lan, "link", "set", name, "master", "br0")
        sh("ip", "-n", self.lan, "link", "set", name, "up")
        return name

    def metalflow(self, *args: str, data_dir: Path | None = None) -> Metalflow:
        """Start `metalflow up --interface eth0` in the server namespace and wait until ready."""
        data_dir = data_dir or self.tmp / "data"
        port = 7080
        log_path = self.tmp / f"metalflow-{len(self.processes)}.log"
        log_file = log_path.open("w")
        argv = [
            METALFLOW,
            "up",
            "--data-dir",
            str(data_dir),
            "--http",
            f"0.0.0.0:{port}",
            "--interface",
            "eth0",
            *args,
        ]
        process = self.server.popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        url = f"http://{self.mgmt_srv}:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"metalflow up exited:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"metalflow up never became ready:\n{log_path.read_text()}")
        token = (data_dir / "admin-token").read_text().strip()
        return Metalflow(process, url, token, data_dir, log_path)

    def stop(self, metalflow: Metalflow) -> None:
        metalflow.process.send_signal(signal.SIGINT)
        try:
            metalflow.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            metalflow.process.kill()
            metalflow.process.wait()

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for link in self.host_links:
            sh("ip", "link", "del", link, check=False)
        for namespace in reversed(self.namespaces):
            sh("ip", "netns", "del", namespace, check=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[BootLab]:
    needs_root("a network namespace test")
    needs_tool("ip", "iproute2")
    boot_lab = BootLab(tmp_path)
    try:
        yield boot_lab
    finally:
        boot_lab.close()


def wait_for(predicate: object, timeout: float = 20, interval: float = 0.1) -> None:
    """Poll `predicate()` until true; the AssertionError names what never happened."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {getattr(predicate, '__name__', predicate)}")
