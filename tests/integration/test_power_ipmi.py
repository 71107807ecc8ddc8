"""The ipmi driver against OpenIPMI's ipmi_sim on loopback; the BMC's own view comes from
ipmitool and from the processes ipmi_sim starts as its machine."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
)
from metalflow.power.ipmi import IpmiDriver
from tests.integration.ipmilab import (
    OPERATOR,
    PASSWORD,
    IpmiLab,
    IpmiSim,
    free_port,
    wait_for,
)


@pytest.fixture
def ipmi_lab(tmp_path: Path) -> Iterator[IpmiLab]:
    lab = IpmiLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@contextmanager
def driver(bmc: Bmc) -> Iterator[IpmiDriver]:
    ipmi = IpmiDriver(bmc)
    try:
        yield ipmi
    finally:
        ipmi.close()


def powered(sim: IpmiSim, state: str) -> None:
    """Wait until the BMC says `state` and its machine runs (on) or is gone (off)."""
    wait_for(
        f"{sim.name} {state}",
        lambda: sim.power() == state and bool(sim.machine()) == (state == "on"),
    )


def test_power_on_and_off_reach_the_bmc_and_its_machine(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start()
    with driver(sim.bmc()) as ipmi:
        assert ipmi.power_state() is PowerState.OFF
        ipmi.set_power(PowerAction.ON)
        powered(sim, "on")
        assert ipmi.power_state() is PowerState.ON
        ipmi.set_power(PowerAction.ON)
        assert sim.power() == "on"
        ipmi.set_power(PowerAction.OFF)
        powered(sim, "off")
        assert ipmi.power_state() is PowerState.OFF


def test_cycle_restarts_the_machine_and_cycle_or_reset_power_on_one_that_is_off(
    ipmi_lab: IpmiLab,
) -> None:
    sim = ipmi_lab.start()
    with driver(sim.bmc()) as ipmi:
        ipmi.set_power(PowerAction.CYCLE)
        powered(sim, "on")
        [first] = sim.machine()
        ipmi.set_power(PowerAction.CYCLE)
        wait_for("a new machine process", lambda: sim.machine() not in ([], [first]))
        assert ipmi.power_state() is PowerState.ON
        ipmi.set_power(PowerAction.OFF)
        powered(sim, "off")
        ipmi.set_power(PowerAction.RESET)
        powered(sim, "on")


def test_a_boot_device_is_refused_in_the_bmcs_words(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start()
    with driver(sim.bmc()) as ipmi, pytest.raises(PowerError) as refused:
        ipmi.set_boot_device(BootRequest(BootDevice.PXE, persistent=True))
    assert not refused.value.transient
    assert refused.value.action == "set_boot_device pxe"
    assert refused.value.message == "Invalid data field in request"


@pytest.mark.parametrize(
    "change",
    [{"password": "Wrong-Passw0rd"}, {"username": "nobody"}],
    ids=["password", "username"],
)
def test_wrong_credentials_are_named_and_not_retried(
    ipmi_lab: IpmiLab, change: dict[str, str]
) -> None:
    sim = ipmi_lab.start()
    bmc = sim.bmc(**change)
    with driver(bmc) as ipmi, pytest.raises(PowerError) as refused:
        ipmi.power_state()
    assert not refused.value.transient
    assert "wrong username or password" in str(refused.value)
    for secret in (bmc.password, PASSWORD):
        assert secret is not None
        assert secret not in str(refused.value)
        assert secret not in repr(ipmi)


def test_no_bmc_on_the_port_is_a_transient_no_answer(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start()
    port = free_port(socket.SOCK_DGRAM)
    with driver(sim.bmc(port=port)) as ipmi, pytest.raises(PowerError) as silent:
        ipmi.power_state()
    assert silent.value.transient
    assert silent.value.message == f"no answer from 127.0.0.1:{port}"


def test_a_bmc_that_stops_answering_is_given_up_on_after_the_timeout(
    ipmi_lab: IpmiLab,
) -> None:
    sim = ipmi_lab.start()
    with driver(sim.bmc(options={"timeout": "1"})) as ipmi:
        assert ipmi.power_state() is PowerState.OFF
        with sim.frozen(), pytest.raises(PowerError) as silent:
            ipmi.power_state()
        assert silent.value.transient
        assert silent.value.message == f"no answer from 127.0.0.1:{sim.port} within 1 s"

        def answers() -> bool:
            try:
                return ipmi.power_state() is PowerState.OFF
            except PowerError as error:
                assert error.transient, error
                return False

        wait_for("the BMC to answer again", answers, timeout=60)


def test_drivers_to_several_bmcs_in_one_process_and_close_logs_out(
    ipmi_lab: IpmiLab,
) -> None:
    sims = [ipmi_lab.start() for _ in range(3)]
    drivers = [IpmiDriver(sim.bmc()) for sim in sims]
    try:
        for ipmi in drivers:
            ipmi.set_power(PowerAction.ON)
        for sim in sims:
            powered(sim, "on")
        assert [ipmi.power_state() for ipmi in drivers] == [PowerState.ON] * 3
        assert [sim.sessions() for sim in sims] == [1, 1, 1]
    finally:
        for ipmi in drivers:
            ipmi.close()
    assert [sim.sessions() for sim in sims] == [0, 0, 0]


def test_a_second_driver_to_the_same_bmc_survives_the_first_ones_close(
    ipmi_lab: IpmiLab,
) -> None:
    sim = ipmi_lab.start()
    bmc = sim.bmc(options={"timeout": "5"})
    with driver(bmc) as first, driver(bmc) as second:
        assert first.power_state() is PowerState.OFF
        assert second.power_state() is PowerState.OFF
        first.close()
        assert second.power_state() is PowerState.OFF
        assert sim.sessions() == 1
    assert sim.sessions() == 0


def test_probe_reports_what_ipmi_sim_can_do(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start()
    with driver(sim.bmc()) as ipmi:
        probe = ipmi.probe()
    assert (probe.driver, probe.power, probe.boot_device, probe.virtual_media) == (
        "ipmi",
        True,
        False,
        False,
    )
    assert probe.details["session"] == "IPMI 2.0"
    assert probe.details["cipher_suite"] == "3"
    assert probe.details["privilege"] == "administrator"
    assert probe.details["firmware"] == "9.08"
    assert probe.details["manufacturer_id"] == str(0x1291)
    assert probe.details["product_id"] == str(0xF02)
    assert probe.details["ipmi_version"] == "2.0"
    assert probe.details["boot_device_error"] == "Invalid data field in request"


def test_an_operator_can_drive_power_at_operator_privilege(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start()
    username, password = OPERATOR
    bmc = sim.bmc(username=username, password=password, options={"privilege": "operator"})
    with driver(bmc) as ipmi:
        assert ipmi.probe().details["privilege"] == "operator"
        ipmi.set_power(PowerAction.ON)
        powered(sim, "on")


def test_requiring_cipher_suite_17_refuses_a_sha1_only_bmc(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start()
    with driver(sim.bmc(options={"cipher_suite": "17"})) as ipmi:
        with pytest.raises(PowerError) as refused:
            ipmi.power_state()
        assert not refused.value.transient
        assert "cipher suite 3" in refused.value.message
    assert sim.sessions() == 0


def test_a_qemu_vm_behind_the_bmc_starts_and_stops(ipmi_lab: IpmiLab) -> None:
    sim = ipmi_lab.start(vm=True)
    with driver(sim.bmc()) as ipmi:
        ipmi.set_power(PowerAction.ON)
        wait_for("the VM to run", lambda: sim.vm_pid() is not None)
        vm = sim.vm_pid()
        assert "qemu-system-x86_64" in Path(f"/proc/{vm}/cmdline").read_text()
        assert ipmi.power_state() is PowerState.ON
        wait_for("the VM to connect to its BMC", sim.vm_connected)

        def reset() -> bool:
            """ipmi_sim takes a reset once the VM said, just after connecting, it can reset."""
            try:
                ipmi.set_power(PowerAction.RESET)
            except PowerError as error:
                assert error.message == "Invalid data field in request", error
                return False
            return True

        wait_for("the BMC to reset the VM", reset)
        ipmi.set_power(PowerAction.SOFT_OFF)
        assert sim.vm_pid() == vm
        ipmi.set_power(PowerAction.OFF)
        wait_for("the VM to end", lambda: sim.vm_pid() is None)
        wait_for("the BMC to say off", lambda: ipmi.power_state() is PowerState.OFF)
