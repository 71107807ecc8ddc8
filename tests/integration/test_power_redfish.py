"""The redfish driver against sushy-tools' Redfish emulator (fake systems, loopback only).

The fake systems apply a power change 1-11 s after the request, as real servers take their
time, so power is checked by polling with a deadline, like the power job does, and the power
scenarios run in parallel threads, one system each.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from metalflow.power.driver import (
    TARGET_STATE,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    Unsupported,
)
from metalflow.power.redfish import RedfishDriver
from tests.integration.conftest import free_port
from tests.integration.redfishlab import (  # noqa: F401  (the fixtures)
    PASSWORD,
    Emulator,
    ImageServer,
    boot_section,
    emulators_fixture,
    image_server_fixture,
)

POWER_DEADLINE = 25.0
"""Longer than the fake driver's worst delay (11 s, rounded up to whole seconds)."""


def wait_for_power(driver: RedfishDriver, wanted: PowerState) -> None:
    deadline = time.monotonic() + POWER_DEADLINE
    seen = driver.power_state()
    while seen is not wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"{driver!r} still {seen} {POWER_DEADLINE:g} s later; wanted {wanted}")
        time.sleep(0.25)
        seen = driver.power_state()


def resets_by_system(records: Sequence[logging.LogRecord]) -> dict[str, list[str]]:
    """The reset types the driver sent, per system Id, in order (from its event log lines)."""
    sent: dict[str, list[str]] = {}
    for record in records:
        found = re.search(r"event=redfish\.reset .*system=(\S+) reset_type=(\S+)", record.message)
        if found:
            sent.setdefault(found[1], []).append(found[2])
    return sent


def test_power_actions_reach_their_target_state(
    emulators: Callable[..., Emulator], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="metalflow.power.redfish")
    emulator = emulators(systems=4)
    scenarios = {
        "node-0": [PowerAction.ON, PowerAction.OFF],
        "node-1": [PowerAction.CYCLE, PowerAction.CYCLE],
        "node-2": [PowerAction.ON, PowerAction.SOFT_OFF],
        "node-3": [PowerAction.ON, PowerAction.RESET],
    }

    def run(system: str, actions: list[PowerAction]) -> None:
        driver = RedfishDriver(emulator.bmc(system))
        try:
            for action in actions:
                driver.set_power(action)
                wait_for_power(driver, TARGET_STATE[action])
        finally:
            driver.close()

    with ThreadPoolExecutor(len(scenarios)) as pool:
        for future in [pool.submit(run, *scenario) for scenario in scenarios.items()]:
            future.result()

    node = {system.name: system.uuid for system in emulator.systems}
    assert resets_by_system(caplog.records) == {
        node["node-0"]: ["On", "ForceOff"],
        # No PowerCycle on this BMC: a cycle from off is just on; from on, off and then on.
        node["node-1"]: ["On", "ForceOff", "On"],
        node["node-2"]: ["On", "GracefulShutdown"],
        node["node-3"]: ["On", "ForceRestart"],
    }
    shown = {
        name: emulator.get(f"/redfish/v1/Systems/{uuid}")["PowerState"]
        for name, uuid in node.items()
    }
    assert shown == {"node-0": "Off", "node-1": "On", "node-2": "Off", "node-3": "On"}


def test_boot_device_and_mode(emulators: Callable[..., Emulator]) -> None:
    emulator = emulators()
    system = emulator.systems[0]
    driver = RedfishDriver(emulator.bmc(system.name))

    driver.set_boot_device(BootRequest(BootDevice.PXE))
    boot = boot_section(emulator, system)
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Pxe", "UEFI")

    driver.set_boot_device(BootRequest(BootDevice.DISK, persistent=True, efi=False))
    boot = boot_section(emulator, system)
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Hdd", "Legacy")
    # The emulator always reads back "Continuous", so a "Once" cannot be checked here.
    assert boot["BootSourceOverrideEnabled"] == "Continuous"

    driver.set_boot_device(BootRequest(BootDevice.CDROM))
    boot = boot_section(emulator, system)
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == ("Cd", "UEFI")

    with pytest.raises(Unsupported) as caught:
        driver.set_boot_device(BootRequest(BootDevice.BIOS))
    assert (
        caught.value.message == "this system offers no BiosSetup; it allows Pxe, Cd, Hdd, UefiHttp"
    )
    assert boot_section(emulator, system)["BootSourceOverrideTarget"] == "Cd"


def test_virtual_media_insert_and_eject(
    emulators: Callable[..., Emulator], image_server: ImageServer
) -> None:
    emulator = emulators()
    cd_path = f"/redfish/v1/Systems/{emulator.systems[0].uuid}/VirtualMedia/Cd"
    driver = RedfishDriver(emulator.bmc("node-0"))
    url = image_server.url("boot.iso")

    driver.insert_media(url)
    cd = emulator.get(cd_path)
    assert (cd["Image"], cd["Inserted"]) == (url, True)
    assert image_server.fetched == ["/boot.iso"]

    driver.insert_media(url)
    assert image_server.fetched == ["/boot.iso"], "the same image was inserted again"

    driver.eject_media()
    cd = emulator.get(cd_path)
    assert (cd["Image"], cd["Inserted"]) == ("", False)
    driver.eject_media()

    with pytest.raises(PowerError) as caught:
        driver.insert_media(image_server.url("missing.iso"))
    assert caught.value.message == "Cannot download virtual media: got error 404 from the server"
    assert not caught.value.transient
    assert emulator.get(cd_path)["Inserted"] is False


def test_probe(emulators: Callable[..., Emulator]) -> None:
    emulator = emulators()
    probe = RedfishDriver(emulator.bmc("node-0")).probe()

    assert (probe.driver, probe.power, probe.boot_device, probe.virtual_media) == (
        "redfish",
        True,
        True,
        True,
    )
    details = dict(probe.details)
    assert details["redfish_version"] == "1.5.0"
    assert details["manufacturer"] == "Sushy Emulator"
    assert (details["system"], details["system_name"]) == (emulator.systems[0].uuid, "node-0")
    assert details["power_state"] == "Off"
    assert details["reset_types"] == (
        "ForceOff, ForceOn, ForceRestart, GracefulRestart, GracefulShutdown, Nmi, On"
    )
    assert (details["boot_targets"], details["boot_mode"]) == ("Pxe, Cd, Hdd, UefiHttp", "UEFI")
    assert details["virtual_media"] == "Cd (CD/DVD), Floppy (Floppy/USBStick)"


def test_credentials(emulators: Callable[..., Emulator]) -> None:
    emulator = emulators(auth=True)
    assert RedfishDriver(emulator.bmc("node-0")).power_state() is PowerState.OFF

    wrong = RedfishDriver(emulator.bmc("node-0", password="not-" + PASSWORD))
    with pytest.raises(PowerError) as caught:
        wrong.power_state()
    assert str(caught.value) == (
        f"redfish BMC 127.0.0.1:{emulator.port}: power state: wrong username or password"
    )
    assert not caught.value.transient
    everything = "".join(traceback.format_exception(caught.value)) + repr(wrong)
    assert PASSWORD not in everything

    anonymous = RedfishDriver(emulator.bmc("node-0", username=None, password=None))
    with pytest.raises(PowerError) as caught:
        anonymous.power_state()
    assert caught.value.message == "the BMC wants a username and password; none are set"


def test_bmc_gone_is_transient(emulators: Callable[..., Emulator]) -> None:
    emulator = emulators()
    driver = RedfishDriver(emulator.bmc("node-0"))
    assert driver.power_state() is PowerState.OFF
    emulator.stop()

    with pytest.raises(PowerError) as caught:
        driver.power_state()
    assert (caught.value.message, caught.value.transient) == (
        "cannot connect: connection refused",
        True,
    )

    never = RedfishDriver(emulator.bmc("node-0", port=free_port()))
    with pytest.raises(PowerError) as caught:
        never.set_power(PowerAction.ON)
    assert (caught.value.action, caught.value.transient) == ("power on", True)


def test_choosing_among_several_systems(emulators: Callable[..., Emulator]) -> None:
    emulator = emulators(systems=3)
    listing = ", ".join(f"{system.uuid} ({system.name})" for system in emulator.systems)

    with pytest.raises(PowerError) as caught:
        RedfishDriver(emulator.bmc(None)).power_state()
    assert caught.value.message == (
        f"the BMC has 3 systems, set options.system to one of: {listing}"
    )
    assert not caught.value.transient

    with pytest.raises(PowerError) as caught:
        RedfishDriver(emulator.bmc("node-9")).power_state()
    assert caught.value.message == f"no system 'node-9' (options.system); the BMC has: {listing}"

    by_name = RedfishDriver(emulator.bmc("node-2")).probe().details
    by_id = RedfishDriver(emulator.bmc(emulator.systems[1].uuid)).probe().details
    assert (by_name["system"], by_id["system_name"]) == (emulator.systems[2].uuid, "node-1")


def test_https_with_a_self_signed_certificate(emulators: Callable[..., Emulator]) -> None:
    emulator = emulators(tls=True)
    url = f"https://127.0.0.1:{emulator.port}"

    trusting = RedfishDriver(emulator.bmc("node-0", host=url, port=None, insecure_tls=True))
    assert trusting.power_state() is PowerState.OFF

    checking = RedfishDriver(emulator.bmc("node-0", host=url, port=None))
    with pytest.raises(PowerError) as caught:
        checking.power_state()
    assert caught.value.message.startswith(
        "TLS failed (set insecure_tls for a self-signed certificate): "
    )
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert not caught.value.transient
