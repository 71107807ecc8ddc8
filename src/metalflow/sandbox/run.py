"""One provisioning lab: metalflow running in a lab namespace, demo manifests, VMs that boot on it.

`metalflow sandbox` and the end-to-end tests both drive this, so what the tests prove is what a
newcomer runs. metalflow is started as its own process (`python -m metalflow up`) inside the
namespace, exactly as an operator would start it on a provisioning network.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from metalflow.sandbox.lab import API_PORT, SERVER_IP, Lab
from metalflow.sandbox.osimage import MARKER_FILE, OsImage
from metalflow.sandbox.vm import Vm, VmSpec

IMAGE_ASSET = "metalflow-test-os.raw.zst"
DEMO_TEMPLATE = "sandbox-demo"
DISK_BYTES = 64 << 20
"""The VMs' blank disks: the test OS image is 19 MiB."""
READY_TIMEOUT = 60.0


class SandboxError(RuntimeError):
    """metalflow or the API misbehaved; the message carries what it said."""


def vm_mac(index: int) -> str:
    return f"52:54:00:5b:{index // 256:02x}:{index % 256:02x}"


def vm_address(index: int) -> str:
    return f"192.0.2.{10 + index}"


def machine_manifest(name: str, mac: str, address: str, *, uefi: bool) -> str:
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata:
  name: {name}
  labels: {{sandbox: "true"}}
spec:
  arch: x86_64
  uefi: {"true" if uefi else "false"}
  hostname: {name}
  interfaces:
    - mac: "{mac}"
      ip: {address}
      netmask: 255.255.255.0
      gateway: {SERVER_IP}
  disks:
    - device: /dev/vda
"""


def demo_template(
    image_sha256: str,
    *,
    name: str = DEMO_TEMPLATE,
    marker_partition: int = 1,
    server: str = f"http://{SERVER_IP}:{API_PORT}",
) -> str:
    """Stream the test OS to the first disk, write the marker into its FAT partition, reboot.

    Written with Tinkerbell's action images, which the agent runs as its built-ins.
    """
    marker = "provisioned by metalflow for {{ (index .Hardware.Interfaces 0).DHCP.Hostname }}"
    return f"""\
apiVersion: metalflow/v1
kind: Template
metadata:
  name: {name}
spec:
  data: |
    version: "0.1"
    name: {name}
    global_timeout: 1200
    tasks:
      - name: os-installation
        worker: "{{{{.device_1}}}}"
        actions:
          - name: stream-image
            image: quay.io/tinkerbell/actions/image2disk:v1.0.0
            timeout: 600
            environment:
              IMG_URL: {server}/boot/assets/{IMAGE_ASSET}
              DEST_DISK: {{{{ index .Hardware.Disks 0 }}}}
              COMPRESSED: true
              CHECKSUM: sha256:{image_sha256}
          - name: write-marker
            image: quay.io/tinkerbell/actions/writefile:v1.0.0
            timeout: 120
            environment:
              DEST_DISK: {{{{ formatPartition ( index .Hardware.Disks 0 ) {marker_partition} }}}}
              FS_TYPE: vfat
              DEST_PATH: /{MARKER_FILE}
              CONTENTS: "{marker}"
              MODE: "0644"
          - name: reboot
            image: quay.io/tinkerbell/actions/reboot:v1.0.0
            timeout: 60
"""


@dataclass
class Sandbox:
    """The lab, the metalflow process in it and the VMs started on it; `close()` ends them all,
    `stop()` all but the lab, for a caller whose lab outlives one run."""

    workdir: Path
    lab: Lab
    kernel: Path
    initrd: Path
    image: OsImage
    vms: dict[str, Vm] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "metalflow.log"

    def start(self, extra_args: Sequence[str] = ()) -> None:
        """Start `metalflow up` on the lab's bridge and wait until its API answers."""
        assets = self.workdir / "assets"
        assets.mkdir(parents=True, exist_ok=True)
        served = assets / IMAGE_ASSET
        if not served.exists():
            shutil.copyfile(self.image.zst, served)
        argv = [
            sys.executable,
            "-m",
            "metalflow",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--http",
            f"0.0.0.0:{API_PORT}",
            "--interface",
            "br0",
            "--public-url",
            self.lab.boot_url,
            "--kernel",
            str(self.kernel),
            "--initrd",
            str(self.initrd),
            "--boot-dir",
            str(assets),
            *extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.lab.inside(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise SandboxError(f"metalflow up exited:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.lab.api_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SandboxError(f"metalflow up never became ready:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        self.token = (self.data_dir / "admin-token").read_text().strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.lab.api_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; a non-2xx answer raises with the server's message."""
        with self.api() as api:
            response = api.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise SandboxError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def apply(self, manifest: str) -> Any:
        return self.call(
            "POST",
            "/api/v1/apply",
            content=manifest.encode(),
            headers={"Content-Type": "application/yaml"},
        )

    def provision(self, machine: str, template: str = DEMO_TEMPLATE) -> dict[str, Any]:
        found: dict[str, Any] = self.call(
            "POST", f"/api/v1/machines/{machine}/provision", json={"template": template}
        )
        return found

    def workflow(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/api/v1/workflows/{ref}")
        return found

    def events(self, machine: str) -> list[dict[str, Any]]:
        found = self.call("GET", "/api/v1/events", params={"machine": machine, "limit": 1000})
        items: list[dict[str, Any]] = found["items"]
        return items

    def machine(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/api/v1/machines/{name}")
        return found

    def start_vm(self, name: str, mac: str, *, uefi: bool, bmc: bool = False) -> Vm:
        """A VM booting from the network; with `bmc`, one that stays off until metalflow's
        qemu power driver turns it on through its QMP socket (`vm.spec.qmp_socket`)."""
        workdir = self.workdir / "vms" / name
        workdir.mkdir(parents=True, exist_ok=True)
        disk = workdir / "disk.raw"
        with disk.open("wb") as blank:
            blank.truncate(DISK_BYTES)
        spec = VmSpec(name, mac, self.lab.tap(), disk, workdir, uefi=uefi, bmc=bmc, powered_off=bmc)
        vm = Vm.start(spec, self.lab.inside)
        self.vms[name] = vm
        return vm

    def stop(self) -> None:
        """The VMs and metalflow; metalflow gets SIGINT first to shut down cleanly."""
        for vm in self.vms.values():
            vm.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        self.stop()
        self.lab.close()


def summary(workflow: dict[str, Any]) -> str:
    """One line: the workflow's state and where each action stands."""
    actions = ", ".join(f"{a['name']}={a['state']}" for a in workflow["actions"])
    return f"{workflow['name']}: {workflow['state']} [{actions}]"
