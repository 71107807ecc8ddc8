"""The manual driver: it can only repeat what metalflow last asked for."""

from __future__ import annotations

import re

import pytest

from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerState,
    Unsupported,
    driver_class,
)
from metalflow.power.manual import ManualDriver


def manual(**options: str) -> ManualDriver:
    return ManualDriver(Bmc(driver="manual", host="rack4-u12", options=options))


def test_the_entry_point_is_this_driver() -> None:
    assert driver_class("manual") is ManualDriver


def test_a_machine_nobody_powered_is_off() -> None:
    assert manual().power_state() is PowerState.OFF


def test_the_state_the_job_layer_kept_is_read_back() -> None:
    assert manual(state="on").power_state() is PowerState.ON


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (PowerAction.ON, PowerState.ON),
        (PowerAction.OFF, PowerState.OFF),
        (PowerAction.SOFT_OFF, PowerState.OFF),
        (PowerAction.CYCLE, PowerState.ON),
        (PowerAction.RESET, PowerState.ON),
    ],
)
def test_power_reads_what_was_last_asked(action: PowerAction, state: PowerState) -> None:
    driver = manual(state="off" if state is PowerState.ON else "on")
    driver.set_power(action)
    assert driver.power_state() is state


def test_boot_device_requests_succeed_and_change_nothing() -> None:
    driver = manual(state="on")
    driver.set_boot_device(BootRequest(BootDevice.PXE))
    assert driver.power_state() is PowerState.ON


def test_nothing_is_supported_by_a_bmc() -> None:
    driver = manual()
    probe = driver.probe()
    assert (probe.power, probe.boot_device, probe.virtual_media) == (False, False, False)
    with pytest.raises(Unsupported):
        driver.insert_media("https://192.0.2.1/hook.iso")
    with pytest.raises(Unsupported):
        driver.eject_media()


def test_validate_names_the_field() -> None:
    with pytest.raises(ValueError, match=re.escape("options.state: 'standby'")):
        ManualDriver.validate(Bmc(driver="manual", host="x", options={"state": "standby"}))
