"""A QEMU VM provisioned end to end by metalflow's own DHCP, TFTP and HTTP in a network namespace:
firmware → iPXE → install environment → agent → image2disk + writefile + reboot → iPXE `exit` →
the test OS boots from the disk and shows the marker writefile put there."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metalflow.installenv import BuildResult
from metalflow.sandbox.lab import Lab, requirements
from metalflow.sandbox.osimage import DISK_ID, OsImage
from metalflow.sandbox.run import Sandbox, demo_template, machine_manifest, summary, vm_mac
from metalflow.sandbox.vm import Vm
from tests.prerequisites import needs_root, unavailable

INSTALL_TIMEOUT = 900.0
POLL_TIMEOUT = 120.0
_tags = itertools.count()


@pytest.fixture
def sandbox(
    tmp_path: Path, install_env: BuildResult, os_image: OsImage, qemu: None
) -> Iterator[Sandbox]:
    needs_root("the end-to-end lab (network namespaces, taps)")
    missing = requirements()
    if missing:
        unavailable("; ".join(missing))
    lab = Lab(f"{os.getpid() % 1000}{next(_tags)}").create()
    box = Sandbox(tmp_path, lab, install_env.kernel_path, install_env.initrd_path, os_image)
    try:
        yield box
    finally:
        box.close()
        print(f"--- metalflow log (tail) ---\n{box.log()[-4000:]}")
        for name, vm in box.vms.items():
            print(f"--- {name} serial ---\n{vm.serial()[-6000:]}\n{vm.stderr()}")


def expect_disk_boot(box: Sandbox, vm: Vm, workflow: str) -> str:
    """The serial log once the test OS booted from disk, showed the marker and powered off.

    Fails at once when the workflow fails, naming the action and its message.
    """
    deadline = vm.started + INSTALL_TIMEOUT
    while True:
        running = vm.running()  # before reading: what QEMU wrote before exiting is in the file
        serial = vm.serial()
        if "OSIMG-POWEROFF" in serial:
            break
        state = box.workflow(workflow)
        if state["state"] in ("FAILED", "TIMEOUT", "CANCELLED"):
            raise AssertionError(f"the workflow ended {summary(state)}:\n{serial[-4000:]}")
        if not running or time.monotonic() > deadline:
            raise AssertionError(f"the VM never booted its disk:\n{serial[-6000:]}")
        time.sleep(1)
    vm.process.wait(timeout=POLL_TIMEOUT)
    return vm.serial()


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["kind"] for event in events]


@pytest.mark.parametrize("uefi", [False, True], ids=["bios", "uefi"])
def test_vm_is_provisioned_and_boots_its_disk(
    sandbox: Sandbox, os_image: OsImage, uefi: bool
) -> None:
    mac = vm_mac(1)
    sandbox.start()
    sandbox.apply(
        machine_manifest("vm1", mac, "192.0.2.11", uefi=uefi)
        + "---\n"
        + demo_template(os_image.zst_sha256)
    )
    workflow = sandbox.provision("vm1")
    vm = sandbox.start_vm("vm1", mac, uefi=uefi)
    serial = expect_disk_boot(sandbox, vm, workflow["id"])
    assert "OSIMG-MARKER provisioned by metalflow for vm1" in serial
    # The booted OS read its hostname from the metadata service and phoned home.
    assert f"OSIMG-PHONE-HOME-OK hostname=vm1 mac={mac} ip=192.0.2.11" in serial, serial[-3000:]

    # The serial console tells the whole story, in order.
    story = [
        "metalflow-init: starting the agent",
        "OSIMG-BOOTED",
        "OSIMG-MARKER",
    ]
    positions = [serial.find(line) for line in story]
    assert -1 not in positions and positions == sorted(positions), serial[-6000:]

    done = sandbox.workflow(workflow["id"])
    assert done["state"] == "SUCCESS", summary(done)
    assert [(a["name"], a["state"]) for a in done["actions"]] == [
        ("stream-image", "SUCCESS"),
        ("write-marker", "SUCCESS"),
        ("reboot", "SUCCESS"),
    ]
    events = sandbox.events("vm1")
    seen = kinds(events)
    kinds_wanted = ("dhcp.ack", "boot.script", "boot.asset", "agent.hello", "workflow.succeeded")
    for kind in (*kinds_wanted, "metadata.phone_home"):
        assert kind in seen, f"no {kind} event in {sorted(set(seen))}"
    # The agent reported the VM's hardware: the disk it wrote and the NIC it booted from.
    machine = sandbox.machine("vm1")
    assert machine["state"] == "active", "the phone-home should have made the machine active"
    attributes = machine["attributes"]
    disks = {disk["name"]: disk for disk in attributes["disks"]}
    assert disks["vda"]["size_bytes"] == 64 << 20
    assert mac in {nic["mac"] for nic in attributes["nics"]}
    assert attributes["uefi"] is uefi
    logs = [
        line for e in events if e["kind"] == "workflow.action.log" for line in e["data"]["lines"]
    ]
    assert f"sha256 verified: {os_image.zst_sha256}" in logs
    # The disk holds the image (its MBR disk id) and the marker file in the FAT partition.
    disk = vm.spec.disk.read_bytes()
    assert int.from_bytes(disk[440:444], "little") == DISK_ID
    assert b"provisioned by metalflow for vm1" in disk


def test_unknown_vm_boots_into_discovery_and_appears_in_inventory(sandbox: Sandbox) -> None:
    mac = vm_mac(7)
    sandbox.start(["--discovery", "--dhcp-pool", "192.0.2.100-192.0.2.150"])
    vm = sandbox.start_vm("unknown", mac, uefi=False)
    deadline = vm.started + INSTALL_TIMEOUT
    name = "discovered-" + mac.replace(":", "")
    while True:
        listed = sandbox.call("GET", "/api/v1/machines")["items"]
        found = [m for m in listed if m["name"] == name]
        if found:
            break
        assert vm.running() and time.monotonic() < deadline, vm.serial()[-6000:]
        time.sleep(1)
    machine = found[0]
    assert machine["state"] == "new"
    assert [iface["mac"] for iface in machine["interfaces"]] == [mac]
    assert machine["disks"] == [{"device": "/dev/vda", "size_bytes": 64 << 20}]
    attributes = machine["attributes"]
    assert 512 << 20 < attributes["memory_bytes"] <= 768 << 20
    assert "QEMU" in str(attributes["dmi"]) and attributes["cpu"]
    assert "machine.discovered" in kinds(sandbox.events(name))
    # The discovered machine's agent holds a token of its own: it says hello as that machine.
    assert vm.wait_for(r"hello as " + mac + r": machine " + name, POLL_TIMEOUT) is not None


def test_failed_action_resumes_after_the_template_is_fixed(
    sandbox: Sandbox, os_image: OsImage
) -> None:
    mac = vm_mac(2)
    sandbox.start()
    broken = demo_template(os_image.zst_sha256, marker_partition=9)
    sandbox.apply(machine_manifest("vm2", mac, "192.0.2.12", uefi=False) + "---\n" + broken)
    workflow = sandbox.provision("vm2")
    vm = sandbox.start_vm("vm2", mac, uefi=False)
    deadline = vm.started + INSTALL_TIMEOUT
    while (state := sandbox.workflow(workflow["id"]))["state"] != "FAILED":
        assert vm.running() and time.monotonic() < deadline, summary(state)
        time.sleep(1)
    failed = {a["name"]: a for a in state["actions"]}
    assert failed["stream-image"]["state"] == "SUCCESS"
    assert failed["write-marker"]["state"] == "FAILED"
    assert "/dev/vda9" in failed["write-marker"]["message"]

    sandbox.apply(demo_template(os_image.zst_sha256))
    sandbox.call("POST", f"/api/v1/workflows/{workflow['id']}/resume")
    serial = expect_disk_boot(sandbox, vm, workflow["id"])
    assert "OSIMG-MARKER provisioned by metalflow for vm2" in serial
    done = sandbox.workflow(workflow["id"])
    assert done["state"] == "SUCCESS", summary(done)
    attempts = {a["name"]: a["attempts"] for a in done["actions"]}
    assert attempts["stream-image"] == 1, "resume must not stream the image again"
    assert "workflow.resumed" in kinds(sandbox.events("vm2"))


def test_only_the_bmc_starts_the_vm(sandbox: Sandbox, os_image: OsImage) -> None:
    """The VM sits with its CPUs stopped until metalflow's qemu power driver, asked by the
    workflow (`boot: netboot`, the default for a machine with a BMC), powers it off, sets PXE
    for the next boot and powers it on; after the workflow it sets the disk as boot device; the
    periodic sync sees the installed OS power the VM off."""
    mac = vm_mac(3)
    sandbox.start(["--power-sync-interval", "1"])
    vm = sandbox.start_vm("vm3", mac, uefi=False, bmc=True)
    deadline = time.monotonic() + POLL_TIMEOUT
    while not vm.spec.qmp_socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sandbox.apply(
        machine_manifest("vm3", mac, "192.0.2.13", uefi=False)
        + f"  bmc: {{driver: qemu, address: {vm.spec.qmp_socket}}}\n"
        + "---\n"
        + demo_template(os_image.zst_sha256)
    )
    time.sleep(2)
    assert vm.serial() == "", "the VM ran before its BMC powered it on"
    workflow = sandbox.provision("vm3")
    assert workflow["boot"] == "netboot" and workflow["state"] == "PREPARING"
    deadline = vm.started + INSTALL_TIMEOUT
    while "OSIMG-POWEROFF" not in vm.serial():
        state = sandbox.workflow(workflow["id"])
        if state["state"] in ("FAILED", "TIMEOUT", "CANCELLED") or time.monotonic() > deadline:
            raise AssertionError(f"the workflow ended {summary(state)}:\n{vm.serial()[-4000:]}")
        time.sleep(1)
    serial = vm.serial()
    assert "OSIMG-MARKER provisioned by metalflow for vm3" in serial
    done = sandbox.workflow(workflow["id"])
    assert done["state"] == "SUCCESS", summary(done)
    jobs = [e for e in sandbox.events("vm3") if e["kind"] == "power.job.succeeded"]
    assert [job["data"]["operation"] for job in jobs] == ["netboot", "boot-disk"]
    deadline = time.monotonic() + POLL_TIMEOUT
    while sandbox.call("GET", "/api/v1/machines/vm3/power")["state"] != "off":
        assert time.monotonic() < deadline, "the sync never saw the OS power the VM off"
        time.sleep(0.5)
    assert vm.running(), "with a BMC, QEMU stays (powered off) for the next power on"
