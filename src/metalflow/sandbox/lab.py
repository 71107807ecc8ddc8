"""A private boot network on this machine: a network namespace holding a bridge and tap devices.

Layout: namespace `mfsb<tag>` has bridge `br0` at 192.0.2.1/24 (TEST-NET-1; metalflow's DHCP,
TFTP and HTTP bind there), one tap per VM plugged into the bridge, and a veth link to the caller's
namespace (198.19.N.1 outside, 198.19.N.2 inside) so the API is reachable without joining the
boot network. Nothing leaves the namespace: it has no route to anywhere else. The tag makes every
name unique, so labs of parallel runs never meet; `close()` removes exactly what was created.

iproute2 (`ip`) is driven as a program: pyroute2 would be one more dependency for a few calls
that only ever run as root on a lab machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

SERVER_IP = "192.0.2.1"
PREFIX_LENGTH = 24
BRIDGE = "br0"
API_PORT = 7080
LINKS = 256 * 64
"""Management links that fit 198.19.0.0/16, one /30 each."""


class LabError(RuntimeError):
    """Setting up the network failed; the message names the command and its error."""


def _ip(*argv: str, check: bool = True) -> None:
    try:
        done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise LabError("`ip` not found: install the Debian package iproute2") from None
    if check and done.returncode != 0:
        raise LabError(f"`ip {' '.join(argv)}` failed: {done.stderr.strip()}")


def requirements() -> list[str]:
    """What this machine lacks for a lab, each with its fix; empty when a lab can be made."""
    missing = []
    if os.geteuid() != 0:
        missing.append("network namespaces need root: run as root (or with sudo)")
    if shutil.which("ip") is None:
        missing.append("`ip` not found: install the Debian package iproute2")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun is missing: load the tun kernel module (modprobe tun)")
    return missing


@dataclass
class Lab:
    tag: str
    taps: list[str] = field(default_factory=list)
    created: bool = False

    @property
    def namespace(self) -> str:
        return f"mfsb{self.tag}"

    @property
    def host_link(self) -> str:
        return f"mfsbh{self.tag}"

    @property
    def api_address(self) -> str:
        """metalflow's address on the management link, reachable from the caller's namespace."""
        return self._link_address(2)

    @property
    def host_address(self) -> str:
        return self._link_address(1)

    def _link_address(self, host: int) -> str:
        """One /30 per tag in 198.19.0.0/16 (the test suite's own labs use 198.18.0.0/16)."""
        index = int(self.tag) % LINKS
        return f"198.19.{index // 64}.{(index % 64) * 4 + host}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_address}:{API_PORT}"

    @property
    def boot_url(self) -> str:
        """The URL machines on the boot network use."""
        return f"http://{SERVER_IP}:{API_PORT}"

    def create(self) -> Lab:
        _ip("netns", "add", self.namespace)
        self.created = True
        try:
            self._in("link", "set", "lo", "up")
            self._in("link", "add", BRIDGE, "type", "bridge", "forward_delay", "0")
            self._in("addr", "add", f"{SERVER_IP}/{PREFIX_LENGTH}", "dev", BRIDGE)
            self._in("link", "set", BRIDGE, "up")
            inner = f"mfsbi{self.tag}"
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", self.namespace)
            self._in("link", "set", inner, "name", "mgmt")
            self._in("addr", "add", f"{self.api_address}/30", "dev", "mgmt")
            self._in("link", "set", "mgmt", "up")
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
        except LabError:
            self.close()
            raise
        return self

    def _in(self, *argv: str) -> None:
        _ip("-n", self.namespace, *argv)

    def tap(self) -> str:
        """A new tap device on the bridge, for one VM."""
        name = f"tap{len(self.taps)}"
        self._in("tuntap", "add", "dev", name, "mode", "tap")
        self.taps.append(name)
        self._in("link", "set", name, "master", BRIDGE)
        self._in("link", "set", name, "up")
        return name

    def inside(self, argv: Sequence[str]) -> list[str]:
        """`argv` run in the lab's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def close(self) -> None:
        if not self.created:
            return
        self.created = False
        _ip("link", "del", self.host_link, check=False)
        _ip("netns", "del", self.namespace, check=False)
