"""A device's Equinix state from what metalflow knows of it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metalflow.cloud.device_states import (
    FAILED_WORKFLOW,
    DeviceState,
    Observed,
    Phase,
    device_state,
    provisioning_percentage,
)

WORKFLOW_STATES = ["PENDING", "PREPARING", "RUNNING", "POST", "SUCCESS", "FAILED", "TIMEOUT"]
observed = st.builds(
    Observed,
    phase=st.sampled_from(list(Phase)),
    workflow_state=st.sampled_from([None, *WORKFLOW_STATES, "CANCELLED"]),
    booted=st.booleans(),
    phones_home=st.booleans(),
    power_state=st.sampled_from([None, "on", "off"]),
    power_pending=st.sampled_from([None, "on", "off", "soft-off", "cycle", "reset"]),
)


def installed(**fields: object) -> Observed:
    base: dict[str, object] = {
        "phase": Phase.PROVISIONING,
        "workflow_state": "SUCCESS",
        "booted": True,
        "phones_home": True,
        "power_state": "on",
    }
    return Observed(**{**base, **fields})  # type: ignore[arg-type]


def test_an_install_goes_queued_provisioning_active() -> None:
    assert device_state(installed(workflow_state="PENDING", booted=False)) is DeviceState.QUEUED
    assert device_state(installed(workflow_state="RUNNING", booted=False)) is (
        DeviceState.PROVISIONING
    )
    assert device_state(installed(booted=False)) is DeviceState.PROVISIONING, "no phone-home yet"
    assert device_state(installed()) is DeviceState.ACTIVE
    assert device_state(installed(booted=False, phones_home=False)) is DeviceState.ACTIVE


def test_power_shows_while_a_job_runs_and_after() -> None:
    assert device_state(installed(power_pending="off")) is DeviceState.POWERING_OFF
    assert device_state(installed(power_pending="on", power_state="off")) is (
        DeviceState.POWERING_ON
    )
    assert device_state(installed(power_state="off")) is DeviceState.INACTIVE


@given(observed)
def test_a_failed_workflow_is_a_failed_device(seen: Observed) -> None:
    if seen.workflow_state in FAILED_WORKFLOW:
        assert device_state(seen) is DeviceState.FAILED


@given(observed)
def test_power_is_reported_only_for_a_device_whose_install_is_done(seen: Observed) -> None:
    state = device_state(seen)
    powered = {DeviceState.POWERING_ON, DeviceState.POWERING_OFF, DeviceState.INACTIVE}
    if state in powered or state is DeviceState.ACTIVE:
        assert seen.workflow_state == "SUCCESS"
        assert seen.phase in (Phase.PROVISIONING, Phase.REINSTALLING)
        assert seen.booted or not seen.phones_home


@given(observed)
def test_a_reinstall_is_reinstalling_until_done(seen: Observed) -> None:
    state = device_state(seen)
    if seen.phase is Phase.REINSTALLING and state not in (DeviceState.FAILED,):
        done = seen.workflow_state == "SUCCESS" and (seen.booted or not seen.phones_home)
        assert (state is DeviceState.REINSTALLING) is not done


@given(
    finished=st.integers(0, 50),
    total=st.integers(0, 50),
    state=st.sampled_from(list(DeviceState)),
)
def test_percentage_is_a_share_and_100_only_once_up(
    finished: int, total: int, state: DeviceState
) -> None:
    finished = min(finished, total)
    shown = provisioning_percentage(finished, total, state)
    assert 0 <= shown <= 100
    assert (shown == 100) is (state in (DeviceState.ACTIVE, DeviceState.INACTIVE))
