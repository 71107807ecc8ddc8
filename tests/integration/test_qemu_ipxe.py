"""QEMU's own iPXE ROM network-boots against metalflow: DHCP, its iPXE script, then the install
environment's kernel and initrd over HTTP (see shared/notes/netboot-lab.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from metalflow.sandbox.vm import machine_args
from tests.integration.bootlab import BootLab, Metalflow, wait_for
from tests.manifests import simple_template
from tests.prerequisites import needs_tool

MAC = "52:54:00:12:34:56"


def kinds(metalflow: Metalflow, name: str) -> list[tuple[str, dict[str, Any]]]:
    with metalflow.api() as api:
        items = api.get("/api/v1/events", params={"machine": name, "limit": 1000}).json()["items"]
    return [(item["kind"], item["data"]) for item in items]


def test_ipxe_rom_gets_address_script_kernel_and_initrd(lab: BootLab, tmp_path: Path) -> None:
    qemu = needs_tool("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu")
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"not a kernel" * 1000)
    initrd.write_bytes(b"\x00" * 4096)
    metalflow = lab.metalflow("--kernel", str(kernel), "--initrd", str(initrd))
    with metalflow.api() as api:
        manifest = f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: vm1}}
spec:
  interfaces: [{{mac: "{MAC}", ip: 192.0.2.40, netmask: 255.255.255.0, gateway: 192.0.2.1}}]
---
{simple_template("demo")}"""
        assert (
            api.post(
                "/api/v1/apply",
                content=manifest.encode(),
                headers={"Content-Type": "application/yaml"},
            ).status_code
            == 200
        )
        assert (
            api.post("/api/v1/machines/vm1/provision", json={"template": "demo"}).status_code == 201
        )

    tap = lab.tap()
    sercon = tmp_path / "sercon"
    sercon.write_bytes(b"\xf8\x03")
    console = tmp_path / "console.log"
    vm = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.lan,
            *machine_args(console, 256, qemu),
            "-nodefaults",
            "-fw_cfg",
            f"name=etc/sercon-port,file={sercon}",
            "-boot",
            "n",
            "-netdev",
            f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={MAC}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lab.processes.append(vm)

    def fetched_initrd() -> bool:
        return any(
            kind == "boot.asset" and "initrd" in str(data.get("name"))
            for kind, data in kinds(metalflow, "vm1")
        )

    wait_for(fetched_initrd, timeout=120, interval=1)
    seen = kinds(metalflow, "vm1")
    ack = next(data for kind, data in seen if kind == "dhcp.ack")
    assert ack["address"] == "192.0.2.40"
    assert ack["bootfile"] == f"http://192.0.2.1:7080/boot/{MAC}.ipxe"
    script = next(data for kind, data in seen if kind == "boot.script")
    assert script["script"] == "install"
    assert any(kind == "boot.asset" and "vmlinuz" in str(data.get("name")) for kind, data in seen)
    assert "192.0.2.1" in console.read_text(errors="replace")
