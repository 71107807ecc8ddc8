"""The ipmi driver's own logic, with a stand-in for pyghmi's Command (no BMC, no sockets)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from pyghmi.exceptions import IpmiException
from pyghmi.ipmi import command as pyghmi_command
from pyghmi.ipmi.private import session as pyghmi_session

from metalflow.power import ipmi as ipmi_module
from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    Unsupported,
)
from metalflow.power.ipmi import (
    IpmiDriver,
    classify,
    device_id_details,
    power_request,
    wake_on_queued_reply,
)

PASSWORD = "Hunter2-Ipmi"
BMC = Bmc(driver="ipmi", host="bmc-7.example", username="admin", password=PASSWORD)
IPMI_SIM_DEVICE_ID = bytes.fromhex("00030908029f911200020f00000000")
"""ipmi_sim's Get Device ID answer (firmware 9.08, manufacturer 0x1291, product 0xf02)."""


@dataclass
class FakeSession:
    integrityalgo: int = 1
    privlevel: int = 4
    ipmiversion: float = 2.0
    broken: bool = False
    logouts: int = 0
    logout_error: Exception | None = None

    def logout(self) -> dict[str, bool]:
        self.logouts += 1
        self.broken = True
        if self.logout_error is not None:
            raise self.logout_error
        return {"success": True}


@dataclass
class FakeBmc:
    """What the stand-in Commands share: the machine's power, what was sent, what fails."""

    power: str = "off"
    integrityalgo: int = 1
    logins: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[FakeSession] = field(default_factory=list)
    sent: list[tuple[Any, ...]] = field(default_factory=list)
    errors: dict[str, Exception] = field(default_factory=dict)
    hang: threading.Event | None = None

    def login(self, **kwargs: Any) -> FakeCommand:
        self.logins.append(kwargs)
        if "login" in self.errors:
            raise self.errors["login"]
        self.sessions.append(FakeSession(integrityalgo=self.integrityalgo))
        return FakeCommand(self, self.sessions[-1])


@dataclass
class FakeCommand:
    bmc: FakeBmc
    ipmi_session: FakeSession

    def _fail(self, name: str) -> None:
        if name in self.bmc.errors:
            raise self.bmc.errors[name]

    def get_power(self) -> dict[str, str]:
        if self.bmc.hang is not None:
            self.bmc.hang.wait()
        self._fail("get_power")
        return {"powerstate": self.bmc.power}

    def set_power(self, word: str) -> dict[str, str]:
        self.bmc.sent.append(("set_power", word))
        return {"pendingpowerstate": word}

    def xraw_command(self, netfn: int, command: int, data: tuple[int, ...] = ()) -> dict[str, Any]:
        self._fail("xraw_command")
        self.bmc.sent.append(("raw", netfn, command, data))
        return {"data": memoryview(IPMI_SIM_DEVICE_ID)}

    def set_bootdev(self, device: str, persist: bool, uefiboot: bool) -> dict[str, str]:
        self._fail("set_bootdev")
        self.bmc.sent.append(("set_bootdev", device, persist, uefiboot))
        return {"bootdev": device}

    def get_bootdev(self) -> dict[str, Any]:
        self._fail("get_bootdev")
        return {"bootdev": "default", "persistent": True}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBmc:
    bmc = FakeBmc()
    monkeypatch.setattr(pyghmi_command, "Command", bmc.login)
    return bmc


@pytest.fixture
def driver(fake: FakeBmc) -> Iterator[IpmiDriver]:
    ipmi = IpmiDriver(BMC)
    try:
        yield ipmi
    finally:
        ipmi.close()


def test_a_complete_bmc_validates() -> None:
    IpmiDriver.validate(BMC)
    options = {"cipher_suite": "17", "privilege": "operator", "timeout": "2.5"}
    IpmiDriver.validate(replace(BMC, port=6230, options=options))


@pytest.mark.parametrize(
    "host", ["192.0.2.7", "2001:db8::7", "bmc-7", "BMC-7.Example.", "10.0.0.1"]
)
def test_an_address_or_a_host_name_validates(host: str) -> None:
    IpmiDriver.validate(replace(BMC, host=host))


@pytest.mark.parametrize(
    "host", ["not a host!!", "bmc_7.example", "-bmc.example", "10.0.0.300", "[2001:db8::7]"]
)
def test_a_host_that_is_no_address_nor_name_is_refused_with_the_fix(host: str) -> None:
    with pytest.raises(ValueError) as invalid:
        IpmiDriver.validate(replace(BMC, host=host))
    assert str(invalid.value) == (
        f"host: {host!r} is neither an IP address nor a host name; write the BMC's address"
        " (192.0.2.10, 2001:db8::10) or DNS name (letters, digits and inner hyphens between"
        " dots, e.g. bmc-7.example)"
    )


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"host": ""}, "host"),
        ({"host": "  "}, "host"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"username": None}, "username"),
        ({"username": "u" * 17}, "username"),
        ({"password": ""}, "password"),
        ({"password": "p" * 21}, "password"),
        ({"options": {"system": "1"}}, "options.system"),
        ({"options": {"cipher_suite": "8"}}, "options.cipher_suite"),
        ({"options": {"privilege": "user"}}, "options.privilege"),
        ({"options": {"timeout": "soon"}}, "options.timeout"),
        ({"options": {"timeout": "0.5"}}, "options.timeout"),
        ({"options": {"timeout": "301"}}, "options.timeout"),
    ],
)
def test_validation_names_the_field(changes: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError) as invalid:
        IpmiDriver.validate(replace(BMC, **changes))
    assert str(invalid.value).startswith(f"{field_name}: ")


def test_the_fields_say_what_is_required() -> None:
    required = {doc.name for doc in IpmiDriver.fields if doc.required}
    assert required == {"host", "username", "password"}
    assert "options.timeout" in {doc.name for doc in IpmiDriver.fields}


@pytest.mark.parametrize(
    ("action", "state", "word"),
    [
        (PowerAction.ON, PowerState.OFF, "on"),
        (PowerAction.ON, PowerState.ON, None),
        (PowerAction.OFF, PowerState.ON, "off"),
        (PowerAction.OFF, PowerState.OFF, None),
        (PowerAction.SOFT_OFF, PowerState.ON, "shutdown"),
        (PowerAction.SOFT_OFF, PowerState.OFF, None),
        (PowerAction.CYCLE, PowerState.ON, "cycle"),
        (PowerAction.CYCLE, PowerState.OFF, "on"),
        (PowerAction.RESET, PowerState.ON, "reset"),
        (PowerAction.RESET, PowerState.OFF, "on"),
    ],
)
def test_power_requests(action: PowerAction, state: PowerState, word: str | None) -> None:
    assert power_request(action, state) == word


@pytest.mark.parametrize(
    ("power", "action", "sent"),
    [
        ("on", PowerAction.CYCLE, [("raw", 0, 2, (2,))]),
        ("off", PowerAction.CYCLE, [("set_power", "on")]),
        ("on", PowerAction.RESET, [("set_power", "reset")]),
        ("on", PowerAction.SOFT_OFF, [("set_power", "shutdown")]),
        ("on", PowerAction.ON, []),
        ("off", PowerAction.OFF, []),
    ],
)
def test_set_power_sends_what_the_state_calls_for(
    fake: FakeBmc, driver: IpmiDriver, power: str, action: PowerAction, sent: list[Any]
) -> None:
    fake.power = power
    driver.set_power(action)
    assert fake.sent == sent


def test_power_state_and_an_answer_it_cannot_read(fake: FakeBmc, driver: IpmiDriver) -> None:
    fake.power = "on"
    assert driver.power_state() is PowerState.ON
    fake.power = "standby"
    with pytest.raises(PowerError, match="unexpected power state 'standby'"):
        driver.power_state()


@pytest.mark.parametrize(
    ("request_", "sent"),
    [
        (BootRequest(BootDevice.PXE, persistent=True), ("set_bootdev", "network", True, True)),
        (BootRequest(BootDevice.DISK, efi=False), ("set_bootdev", "hd", False, False)),
        (BootRequest(BootDevice.CDROM), ("set_bootdev", "optical", False, True)),
        (BootRequest(BootDevice.BIOS), ("set_bootdev", "setup", False, True)),
    ],
)
def test_boot_devices_go_to_pyghmi(
    fake: FakeBmc, driver: IpmiDriver, request_: BootRequest, sent: tuple[Any, ...]
) -> None:
    driver.set_boot_device(request_)
    assert fake.sent == [sent]


def test_a_refused_boot_device_is_the_bmcs_words(fake: FakeBmc, driver: IpmiDriver) -> None:
    fake.errors["set_bootdev"] = IpmiException("Invalid data field in request")
    with pytest.raises(PowerError) as refused:
        driver.set_boot_device(BootRequest(BootDevice.PXE))
    assert (refused.value.action, refused.value.message) == (
        "set_boot_device pxe",
        "Invalid data field in request",
    )
    assert not refused.value.transient


def test_a_wrong_password_is_said_plainly_and_never_shown(
    fake: FakeBmc, driver: IpmiDriver
) -> None:
    fake.errors["login"] = IpmiException("Incorrect password provided")
    with pytest.raises(PowerError) as refused:
        driver.power_state()
    assert str(refused.value) == (
        "ipmi BMC bmc-7.example: power_state: wrong username or password"
        " (BMC: Incorrect password provided)"
    )
    assert not refused.value.transient
    for text in (str(refused.value), repr(refused.value), repr(driver)):
        assert PASSWORD not in text


def test_library_words_that_carry_the_password_are_scrubbed(
    fake: FakeBmc, driver: IpmiDriver
) -> None:
    fake.errors["login"] = IpmiException(f"Password {PASSWORD} is somehow malformed")
    with pytest.raises(PowerError) as refused:
        driver.power_state()
    assert refused.value.message == "Password *** is somehow malformed"


@pytest.mark.parametrize(
    ("error", "message", "transient"),
    [
        (
            IpmiException("Unauthorized name in RAKP2"),
            "wrong username or password (BMC: Unauthorized name in RAKP2)",
            False,
        ),
        (IpmiException(None), "no answer from bmc:623", True),
        (IpmiException("Session no longer connected"), "no answer from bmc:623", True),
        (IpmiException("Node Busy"), "BMC busy: Node Busy", True),
        (
            IpmiException(
                "Insufficient resources to create new session (wait for existing sessions"
                " to timeout)"
            ),
            "BMC busy: Insufficient resources to create new session (wait for existing"
            " sessions to timeout)",
            True,
        ),
        (
            IpmiException("Invalid data field in request", 0xCC),
            "Invalid data field in request (completion code 0xcc)",
            False,
        ),
        (
            IpmiException("Insufficient privilege level or firmware firewall"),
            "Insufficient privilege level or firmware firewall: the user needs operator or"
            " administrator privilege",
            False,
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "cannot resolve bmc:623: Name or service not known",
            False,
        ),
        (
            socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            "cannot resolve bmc:623: Temporary failure in name resolution",
            True,
        ),
        (
            OSError(101, "Network is unreachable"),
            "cannot reach bmc:623: [Errno 101] Network is unreachable",
            True,
        ),
        (AssertionError("odd reply"), "AssertionError: odd reply", False),
    ],
)
def test_errors_are_classified(error: BaseException, message: str, transient: bool) -> None:
    assert classify(error, "bmc:623", PASSWORD) == (message, transient)


def test_a_call_that_hangs_is_given_up_after_the_timeout(fake: FakeBmc) -> None:
    fake.hang = threading.Event()
    ipmi = IpmiDriver(replace(BMC, options={"timeout": "1"}))
    try:
        with pytest.raises(PowerError) as silent:
            ipmi.power_state()
        assert silent.value.transient
        assert silent.value.message == "no answer from bmc-7.example:623 within 1 s"
    finally:
        fake.hang.set()
        ipmi.close()


def test_logs_in_once_with_bytes_and_again_after_the_session_ended(
    fake: FakeBmc, driver: IpmiDriver
) -> None:
    driver.power_state()
    driver.power_state()
    assert fake.logins == [
        {
            "bmc": "bmc-7.example",
            "userid": b"admin",
            "password": PASSWORD.encode(),
            "port": 623,
            "privlevel": None,
        }
    ]
    fake.sessions[0].broken = True
    driver.power_state()
    assert len(fake.logins) == 2


def test_a_session_left_idle_is_replaced_before_the_bmc_drops_it(
    fake: FakeBmc, driver: IpmiDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(ipmi_module, "monotonic", lambda: now[0])
    driver.power_state()
    now[0] += ipmi_module.MAX_IDLE - 1
    driver.power_state()
    assert len(fake.logins) == 1
    now[0] += ipmi_module.MAX_IDLE + 1
    driver.power_state()
    assert [session.logouts for session in fake.sessions] == [1, 0]


def test_privilege_option_is_the_ipmi_level(fake: FakeBmc) -> None:
    ipmi = IpmiDriver(replace(BMC, port=6230, options={"privilege": "operator"}))
    try:
        ipmi.power_state()
    finally:
        ipmi.close()
    assert (fake.logins[0]["port"], fake.logins[0]["privlevel"]) == (6230, 3)


@pytest.mark.parametrize(("integrityalgo", "refused"), [(1, True), (256, False)])
def test_cipher_suite_17_refuses_a_sha1_session(
    fake: FakeBmc, integrityalgo: int, refused: bool
) -> None:
    fake.integrityalgo = integrityalgo
    ipmi = IpmiDriver(replace(BMC, options={"cipher_suite": "17"}))
    try:
        if refused:
            with pytest.raises(PowerError, match="only agreed to cipher suite 3") as error:
                ipmi.power_state()
            assert not error.value.transient
            assert fake.sessions[0].logouts == 1
        else:
            assert ipmi.power_state() is PowerState.OFF
    finally:
        ipmi.close()


def test_close_logs_out_once(fake: FakeBmc, driver: IpmiDriver) -> None:
    driver.close()
    assert fake.logins == []
    driver.power_state()
    driver.close()
    driver.close()
    assert [session.logouts for session in fake.sessions] == [1]


def test_close_never_raises(fake: FakeBmc, driver: IpmiDriver) -> None:
    driver.power_state()
    fake.sessions[0].logout_error = IpmiException("Session no longer connected")
    driver.close()
    assert fake.sessions[0].logouts == 1


def test_virtual_media_is_unsupported(driver: IpmiDriver) -> None:
    with pytest.raises(Unsupported, match="IPMI has no virtual media"):
        driver.insert_media("http://192.0.2.1/boot.iso")
    with pytest.raises(Unsupported):
        driver.eject_media()


def test_probe_reports_refusals_as_details(fake: FakeBmc, driver: IpmiDriver) -> None:
    fake.errors["get_bootdev"] = IpmiException("Invalid data field in request")
    probe = driver.probe()
    assert (probe.power, probe.boot_device, probe.virtual_media) == (True, False, False)
    assert probe.details == {
        "session": "IPMI 2.0",
        "cipher_suite": "3",
        "privilege": "administrator",
        "device_id": "0",
        "device_revision": "3",
        "firmware": "9.08",
        "ipmi_version": "2.0",
        "manufacturer_id": "4753",
        "product_id": "3842",
        "boot_device_error": "Invalid data field in request",
    }


def test_probe_raises_when_the_bmc_stops_answering(fake: FakeBmc, driver: IpmiDriver) -> None:
    fake.errors["get_bootdev"] = IpmiException("Session no longer connected")
    with pytest.raises(PowerError) as silent:
        driver.probe()
    assert silent.value.transient


def test_device_id_names_a_known_maker() -> None:
    dell = bytearray(IPMI_SIM_DEVICE_ID)
    dell[6:9] = (674).to_bytes(3, "little")
    assert device_id_details(bytes(dell))["manufacturer"] == "Dell"
    assert "manufacturer" not in device_id_details(IPMI_SIM_DEVICE_ID)
    assert device_id_details(b"\x20\x01") == {"device_id": "2001"}


def test_a_queued_reply_ends_the_wait_at_once() -> None:
    waits: list[tuple[Any, ...]] = []
    queued = {"addr-with-reply"}
    wait = wake_on_queued_reply(lambda *args: waits.append(args), queued.__contains__)
    wait(0.8, "addr-with-reply")
    assert waits == []
    wait(0.8, "addr-without")
    wait(0.8, "addr-with-reply", ["event queue"])
    wait(0.8)
    assert waits == [
        (0.8, "addr-without", None),
        (0.8, "addr-with-reply", ["event queue"]),
        (0.8, None, None),
    ]


def test_the_lost_wakeup_fix_is_installed_in_pyghmi() -> None:
    assert hasattr(pyghmi_session._io_wait, "__wrapped__")
