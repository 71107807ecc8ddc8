"""The fake driver's knobs, as a power-job test would use them."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator

import pytest

from metalflow.power import fake
from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    driver_class,
)
from metalflow.power.fake import FakeDriver, forget, inspect

_hosts = itertools.count()


@pytest.fixture
def host() -> Iterator[str]:
    name = f"fake-bmc-{next(_hosts)}"
    yield name
    forget(name)


def driver(host: str, **options: str) -> FakeDriver:
    return FakeDriver(Bmc(driver="fake", host=host, options=options))


def test_the_entry_point_is_this_driver() -> None:
    assert driver_class("fake") is FakeDriver


def test_drivers_for_one_host_share_its_state(host: str) -> None:
    driver(host).set_power(PowerAction.ON)
    driver(host).set_boot_device(BootRequest(BootDevice.PXE, persistent=True))
    driver(host).insert_media("https://192.0.2.1/hook.iso")
    assert driver(host).power_state() is PowerState.ON
    seen = inspect(host)
    assert seen.power is PowerState.ON
    assert seen.boot == BootRequest(BootDevice.PXE, persistent=True)
    assert seen.media == "https://192.0.2.1/hook.iso"
    assert seen.calls == ("power on", "boot-device", "insert-media", "status")
    driver(host).eject_media()
    assert inspect(host).media is None
    assert driver(f"{host}-other").power_state() is PowerState.OFF
    forget(f"{host}-other")


def test_a_host_starts_in_the_state_given(host: str) -> None:
    assert driver(host, state="on").power_state() is PowerState.ON


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (PowerAction.OFF, PowerState.OFF),
        (PowerAction.SOFT_OFF, PowerState.OFF),
        (PowerAction.CYCLE, PowerState.ON),
        (PowerAction.RESET, PowerState.ON),
    ],
)
def test_each_action_ends_in_its_target(host: str, action: PowerAction, state: PowerState) -> None:
    bmc = driver(host, state="on")
    bmc.set_power(action)
    assert bmc.power_state() is state


def test_a_delayed_state_shows_once_its_time_has_come(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(fake, "monotonic", lambda: now[0])
    bmc = driver(host, delay="2.5")
    bmc.set_power(PowerAction.ON)
    assert bmc.power_state() is PowerState.OFF
    now[0] += 2.4
    assert bmc.power_state() is PowerState.OFF
    now[0] += 0.1
    assert bmc.power_state() is PowerState.ON
    assert inspect(host).power is PowerState.ON


@pytest.mark.parametrize(
    ("fail", "failing", "working"),
    [
        ("power", [PowerAction.ON, PowerAction.OFF], []),
        ("power off", [PowerAction.OFF], [PowerAction.ON, PowerAction.CYCLE]),
    ],
)
def test_fail_breaks_the_named_action_for_good(
    host: str, fail: str, failing: list[PowerAction], working: list[PowerAction]
) -> None:
    bmc = driver(host, fail=fail)
    for action in failing:
        for _ in range(3):
            with pytest.raises(PowerError) as raised:
                bmc.set_power(action)
            assert not raised.value.transient
            assert raised.value.action == f"power {action}"
            assert raised.value.message == f"failing power {action} as configured"
    for action in working:
        bmc.set_power(action)
    assert bmc.power_state() is (PowerState.ON if working else PowerState.OFF)


def test_a_failing_status_read(host: str) -> None:
    bmc = driver(host, fail="status")
    bmc.set_power(PowerAction.ON)
    with pytest.raises(PowerError, match="status: failing status as configured"):
        bmc.power_state()


def test_transient_failures_come_first_then_calls_work(host: str) -> None:
    for _ in range(2):
        with pytest.raises(PowerError) as raised:
            driver(host, transient_failures="2").set_power(PowerAction.ON)
        assert raised.value.transient
    driver(host, transient_failures="2").set_power(PowerAction.ON)
    assert driver(host, transient_failures="2").power_state() is PowerState.ON


def test_a_state_that_is_never_reached(host: str) -> None:
    bmc = driver(host, state="on", never="off")
    bmc.set_power(PowerAction.OFF)
    assert bmc.power_state() is PowerState.ON
    bmc.set_power(PowerAction.SOFT_OFF)
    assert bmc.power_state() is PowerState.ON
    bmc.set_power(PowerAction.CYCLE)
    assert bmc.power_state() is PowerState.ON
    assert inspect(host).calls[:3] == ("power off", "status", "power soft-off")


def test_concurrent_calls_share_one_count_of_transient_failures(host: str) -> None:
    failures: list[PowerError] = []
    record = threading.Lock()

    def work() -> None:
        bmc = driver(host, transient_failures="25")
        for _ in range(50):
            try:
                bmc.set_power(PowerAction.CYCLE)
            except PowerError as exc:
                with record:
                    failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failures) == 25
    assert all(failure.transient for failure in failures)
    assert len(inspect(host).calls) == 400


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": "soon"}, "options.delay: 'soon'"),
        ({"delay": "-1"}, "options.delay: '-1'"),
        ({"transient_failures": "1.5"}, "options.transient_failures: '1.5'"),
        ({"fail": "explode"}, "options.fail: 'explode' is none of"),
        ({"never": "maybe"}, "options.never: 'maybe'"),
        ({"state": "standby"}, "options.state: 'standby'"),
    ],
)
def test_validate_names_the_field(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FakeDriver.validate(Bmc(driver="fake", host="x", options=options))


def test_forget_starts_a_host_over(host: str) -> None:
    driver(host).set_power(PowerAction.ON)
    forget(host)
    assert driver(host).power_state() is PowerState.OFF
    with pytest.raises(KeyError):
        inspect(f"{host}-never-made")
