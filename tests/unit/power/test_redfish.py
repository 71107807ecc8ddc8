"""The redfish driver without a BMC: settings, translation tables, error wrapping, and the
power/boot decisions over a stand-in ComputerSystem."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
import sushy
from sushy import exceptions as sushy_errors

from metalflow.power import redfish
from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    Unsupported,
    driver_class,
)
from metalflow.power.redfish import (
    BOOT_TARGETS,
    POWER_STATES,
    RESET_TYPES,
    RedfishDriver,
    parse_bmc,
    translate,
)


def bmc(host: str = "192.0.2.7", **changes: Any) -> Bmc:
    return Bmc(driver="redfish", host=host, **changes)


# --- settings (offline) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "url"),
    [
        (bmc(), "https://192.0.2.7"),
        (bmc(port=8443), "https://192.0.2.7:8443"),
        (bmc("bmc-7.rack2.example"), "https://bmc-7.rack2.example"),
        (bmc(options={"scheme": "http"}, port=8000), "http://192.0.2.7:8000"),
        (bmc("2001:db8::7"), "https://[2001:db8::7]"),
        (bmc("[2001:db8::7]", port=443), "https://[2001:db8::7]:443"),
        (bmc("fe80::7%eth0"), "https://[fe80::7%25eth0]"),
        (bmc("http://192.0.2.7:8000"), "http://192.0.2.7:8000"),
        (bmc("https://BMC7.example/redfish/v1/"), "https://bmc7.example"),
        (bmc("https://[2001:db8::7]:8443"), "https://[2001:db8::7]:8443"),
        (bmc("https://192.0.2.7", port=8443), "https://192.0.2.7:8443"),
        (
            bmc("https://192.0.2.7:8443", port=8443, options={"scheme": "https"}),
            "https://192.0.2.7:8443",
        ),
    ],
)
def test_where_the_driver_goes(given: Bmc, url: str) -> None:
    RedfishDriver.validate(given)
    assert parse_bmc(given).url == url


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (bmc(" "), "host: required; the BMC's name or address, or https://host:port"),
        (
            bmc("192.0.2.7:8443"),
            "host: '192.0.2.7:8443': write a port as port, or the whole URL (https://host:port)",
        ),
        (bmc("bmc 7"), "host: 'bmc 7' is not a host name, IP address or URL"),
        (
            bmc("ftp://192.0.2.7"),
            "host: 'ftp://192.0.2.7': the URL must start with https:// or http://",
        ),
        (
            bmc("https://root:calvin@192.0.2.7"),
            "host: no credentials in the URL; set username and password",
        ),
        (
            bmc("https://192.0.2.7/redfish/v1/Systems"),
            "host: 'https://192.0.2.7/redfish/v1/Systems': give scheme://host[:port] only",
        ),
        (bmc("https://192.0.2.7:http"), "host: 'https://192.0.2.7:http' has a bad port"),
        (bmc(options={"scheme": "gopher"}), "options.scheme: 'gopher'; use https or http"),
        (
            bmc("http://192.0.2.7", options={"scheme": "https"}),
            "options.scheme: https but host says http; drop one",
        ),
        (bmc("https://192.0.2.7:8443", port=443), "port: 443 but host says 8443; drop one"),
        (bmc(port=70000), "port: 70000 is not a TCP port (1-65535)"),
        (bmc(password="calvin"), "username: required when a password is set"),
        (bmc(options={"timeout": "soon"}), "options.timeout: 'soon' is not a number of seconds"),
        (
            bmc(options={"timeout": "0"}),
            "options.timeout: '0' must be more than 0 and at most 3600 seconds",
        ),
        (
            bmc(options={"cycle_wait": "-5"}),
            "options.cycle_wait: '-5' must be more than 0 and at most 3600 seconds",
        ),
        (
            bmc(options={"system": " "}),
            "options.system: empty; give the system's Id, name or UUID, or drop it",
        ),
        (
            bmc(options={"sytem": "node-1"}),
            "options.sytem: unknown to the redfish driver; it reads system, scheme, timeout,"
            " cycle_wait",
        ),
    ],
)
def test_bad_settings_name_the_field(given: Bmc, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedfishDriver.validate(given)
    assert str(caught.value) == message
    assert "calvin" not in str(caught.value)


def test_timeouts_and_tls_from_the_bmc() -> None:
    defaults = parse_bmc(bmc())
    assert (defaults.timeout, defaults.cycle_wait, defaults.verify_tls) == (20.0, 60.0, True)
    tuned = parse_bmc(bmc(insecure_tls=True, options={"timeout": "7.5", "cycle_wait": "120"}))
    assert (tuned.timeout, tuned.cycle_wait, tuned.verify_tls) == (7.5, 120.0, False)


def test_constructing_needs_no_bmc_and_the_repr_hides_the_password() -> None:
    driver = RedfishDriver(bmc(username="root", password="calvin", options={"system": "1"}))
    assert repr(driver) == "RedfishDriver(url='https://192.0.2.7', system='1')"
    driver.close()


def test_registered_under_its_name_with_its_fields() -> None:
    assert driver_class("redfish") is RedfishDriver
    assert RedfishDriver.name == "redfish"
    names = [doc.name for doc in RedfishDriver.fields]
    assert names == [
        "host",
        "port",
        "username",
        "password",
        "insecure_tls",
        "options.system",
        "options.scheme",
        "options.timeout",
        "options.cycle_wait",
    ]
    assert [doc.name for doc in RedfishDriver.fields if doc.required] == ["host"]


# --- translation tables -------------------------------------------------------------------


def test_every_redfish_power_state_has_a_meaning() -> None:
    assert set(POWER_STATES) == {state.value for state in sushy.PowerState}
    # A transition reads as the state being left: a job waiting for it is not done yet.
    assert POWER_STATES["PoweringOn"] is PowerState.OFF
    assert POWER_STATES["PoweringOff"] is PowerState.ON


def test_every_action_and_boot_device_has_redfish_words() -> None:
    assert set(RESET_TYPES) == set(PowerAction)
    for choices in RESET_TYPES.values():
        assert [sushy.ResetType(choice).value for choice in choices] == list(choices)
    assert set(BOOT_TARGETS) == set(BootDevice)
    assert {sushy.BootSource(target).value for target in BOOT_TARGETS.values()} == {
        "Pxe",
        "Hdd",
        "Cd",
        "BiosSetup",
    }


# --- error wrapping -----------------------------------------------------------------------


def http_error(status: int, body: object = None) -> Exception:
    response = requests.Response()
    response.status_code = status
    response._content = b"" if body is None else json.dumps(body).encode()
    try:
        sushy_errors.raise_for_response("POST", "https://192.0.2.7/redfish/v1/x", response)
    except sushy_errors.SushyError as exc:
        found: Exception = exc
        return found
    raise AssertionError(f"sushy raised nothing for HTTP {status}")


def wrapped(cause: Exception) -> Exception:
    """A sushy ConnectionError as sushy raises it: inside the `except` of requests' error."""
    try:
        raise cause
    except requests.exceptions.RequestException as exc:
        try:
            raise sushy_errors.ConnectionError(url="https://192.0.2.7/redfish/v1/", error=exc)
        except sushy_errors.ConnectionError as outer:
            found: Exception = outer
            return found
    raise AssertionError("unreachable")


def redfish_error(*messages: str, message: str = "general error") -> dict[str, Any]:
    return {
        "error": {
            "code": "Base.1.0.GeneralError",
            "message": message,
            "@Message.ExtendedInfo": [
                {"MessageId": f"Base.1.0.M{i}", "Message": text, "Severity": "Critical"}
                for i, text in enumerate(messages)
            ],
        }
    }


def wrap(exc: Exception, *, credentials: bool = True) -> PowerError:
    return translate(exc, "192.0.2.7", "power on", credentials=credentials, timeout=20)


@pytest.mark.parametrize(
    ("exc", "message", "transient", "kind"),
    [
        (
            http_error(401, redfish_error("Login failed")),
            "wrong username or password",
            False,
            PowerError,
        ),
        (
            http_error(403, redfish_error("Insufficient privilege")),
            "permission denied: Insufficient privilege",
            False,
            PowerError,
        ),
        (
            http_error(400, redfish_error("The value 'X' is bad.", "Try again.")),
            "The value 'X' is bad.; Try again.",
            False,
            PowerError,
        ),
        (
            http_error(409, redfish_error(message="Power action in progress")),
            "Power action in progress",
            False,
            PowerError,
        ),
        (
            http_error(503, redfish_error("The service is busy.")),
            "The service is busy.",
            True,
            PowerError,
        ),
        (http_error(500), "HTTP 500 (Base.1.0.GeneralError)", True, PowerError),
        (
            http_error(501, redfish_error(message="Nmi is not supported")),
            "Nmi is not supported",
            False,
            Unsupported,
        ),
        (
            wrapped(requests.exceptions.ConnectTimeout("slow")),
            "no answer within 20 s",
            True,
            PowerError,
        ),
        (
            wrapped(
                requests.exceptions.ConnectionError(
                    ConnectionRefusedError(111, "Connection refused")
                )
            ),
            "cannot connect: connection refused",
            True,
            PowerError,
        ),
        (
            wrapped(requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")),
            "TLS failed (set insecure_tls for a self-signed certificate):"
            " CERTIFICATE_VERIFY_FAILED",
            False,
            PowerError,
        ),
        (
            requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0),
            "the answer is not JSON, so this is no Redfish service:"
            " Expecting value: line 1 column 1 (char 0)",
            False,
            PowerError,
        ),
        (
            sushy_errors.MissingActionError(action="#ComputerSystem.Reset", resource="/x"),
            "The action #ComputerSystem.Reset is missing from the resource /x",
            False,
            Unsupported,
        ),
    ],
)
def test_bmc_errors_become_power_errors(
    exc: Exception, message: str, transient: bool, kind: type[PowerError]
) -> None:
    error = wrap(exc)
    assert type(error) is kind
    assert (error.message, error.transient) == (message, transient)
    assert str(error) == f"redfish BMC 192.0.2.7: power on: {message}"


def test_no_credentials_set_is_said_so() -> None:
    error = wrap(http_error(401), credentials=False)
    assert error.message == "the BMC wants a username and password; none are set"


# --- decisions over a stand-in ComputerSystem ---------------------------------------------


class StandInSystem:
    """What the driver reads from sushy's System; `states` is what successive reads show."""

    identity = "1"

    def __init__(
        self, states: list[str], resets: tuple[str, ...], boot: dict[str, Any] | None = None
    ) -> None:
        self.states = states
        self.allowed = resets
        self.boot_json = boot or {}
        self.sent: list[str] = []
        self.boot_options: list[tuple[str, str, str | None]] = []

    @property
    def json(self) -> dict[str, Any]:
        return {"PowerState": self.states[0], "Boot": self.boot_json}

    @property
    def boot(self) -> Any:
        allowed = self.boot_json.get("BootSourceOverrideTarget@Redfish.AllowableValues")
        return type("Boot", (), {"allowed_values": allowed})()

    def refresh(self) -> None:
        if len(self.states) > 1:
            self.states.pop(0)

    def get_allowed_reset_system_values(self) -> set[Any]:
        return {sushy.ResetType(value) for value in self.allowed}

    def reset_system(self, value: Any) -> None:
        self.sent.append(value.value)

    def set_system_boot_options(self, target: Any, enabled: Any, mode: Any) -> None:
        self.boot_options.append((target.value, enabled.value, mode.value if mode else None))


ALL_RESETS = ("On", "ForceOff", "GracefulShutdown", "ForceRestart", "ForceOn")


@pytest.fixture
def driver_for(monkeypatch: pytest.MonkeyPatch) -> Callable[..., RedfishDriver]:
    monkeypatch.setattr(redfish, "CYCLE_POLL", 0.0)

    def make(system: StandInSystem, **options: str) -> RedfishDriver:
        driver = RedfishDriver(bmc(options=options))
        monkeypatch.setattr(driver, "_system", lambda: system)
        return driver

    return make


@pytest.mark.parametrize(
    ("states", "resets", "action", "sent"),
    [
        (["Off"], ALL_RESETS, PowerAction.ON, ["On"]),
        (["Off"], ("ForceOn", "ForceOff"), PowerAction.ON, ["ForceOn"]),
        (["On"], ALL_RESETS, PowerAction.OFF, ["ForceOff"]),
        (["On"], ALL_RESETS, PowerAction.SOFT_OFF, ["GracefulShutdown"]),
        (["On"], ALL_RESETS, PowerAction.RESET, ["ForceRestart"]),
        (["Off"], ALL_RESETS, PowerAction.RESET, ["On"]),
        (["Off"], ALL_RESETS, PowerAction.CYCLE, ["On"]),
        (["PoweringOn"], ALL_RESETS, PowerAction.CYCLE, ["On"]),
        (["On"], (*ALL_RESETS, "PowerCycle"), PowerAction.CYCLE, ["PowerCycle"]),
        (["On", "On", "PoweringOff", "Off"], ALL_RESETS, PowerAction.CYCLE, ["ForceOff", "On"]),
    ],
)
def test_reset_types_sent(
    driver_for: Callable[..., RedfishDriver],
    states: list[str],
    resets: tuple[str, ...],
    action: PowerAction,
    sent: list[str],
) -> None:
    system = StandInSystem(states, resets)
    driver_for(system).set_power(action)
    assert system.sent == sent


def test_an_action_the_system_does_not_offer(driver_for: Callable[..., RedfishDriver]) -> None:
    system = StandInSystem(["On"], ("On", "ForceOff"))
    with pytest.raises(Unsupported) as caught:
        driver_for(system).set_power(PowerAction.SOFT_OFF)
    assert str(caught.value) == (
        "redfish BMC 192.0.2.7: power soft-off: this system offers no GracefulShutdown;"
        " it allows ForceOff, On"
    )
    assert system.sent == []


def test_a_cycle_that_never_sees_off_does_not_power_on(
    driver_for: Callable[..., RedfishDriver],
) -> None:
    system = StandInSystem(["On"], ALL_RESETS)
    with pytest.raises(PowerError) as caught:
        driver_for(system, cycle_wait="0.05").set_power(PowerAction.CYCLE)
    assert caught.value.message == (
        "still on 0.05 s after power off; not powered on (options.cycle_wait)"
    )
    assert caught.value.transient
    assert system.sent == ["ForceOff"]


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("On", PowerState.ON),
        ("PoweringOff", PowerState.ON),
        ("PoweringOn", PowerState.OFF),
        ("Paused", PowerState.ON),
    ],
)
def test_power_state_read(
    driver_for: Callable[..., RedfishDriver], word: str, state: PowerState
) -> None:
    assert driver_for(StandInSystem([word], ALL_RESETS)).power_state() is state


def test_power_state_the_bmc_does_not_know(driver_for: Callable[..., RedfishDriver]) -> None:
    with pytest.raises(PowerError) as caught:
        driver_for(StandInSystem(["Sleeping"], ALL_RESETS)).power_state()
    assert (caught.value.message, caught.value.transient) == (
        "unknown PowerState 'Sleeping'",
        False,
    )


UEFI_BOOT = {
    "BootSourceOverrideTarget": "Hdd",
    "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd", "Cd", "BiosSetup"],
    "BootSourceOverrideMode": "UEFI",
}


@pytest.mark.parametrize(
    ("boot", "request_", "sent"),
    [
        (UEFI_BOOT, BootRequest(BootDevice.PXE), ("Pxe", "Once", None)),
        (UEFI_BOOT, BootRequest(BootDevice.DISK, persistent=True), ("Hdd", "Continuous", None)),
        (UEFI_BOOT, BootRequest(BootDevice.BIOS, efi=False), ("BiosSetup", "Once", "Legacy")),
        (
            {"BootSourceOverrideTarget": "Hdd"},
            BootRequest(BootDevice.CDROM, efi=False),
            ("Cd", "Once", None),
        ),
    ],
)
def test_boot_options_sent(
    driver_for: Callable[..., RedfishDriver],
    boot: dict[str, Any],
    request_: BootRequest,
    sent: tuple[str, str, str | None],
) -> None:
    system = StandInSystem(["Off"], ALL_RESETS, boot)
    driver_for(system).set_boot_device(request_)
    assert system.boot_options == [sent]


def test_a_boot_mode_the_system_does_not_offer(driver_for: Callable[..., RedfishDriver]) -> None:
    boot = {**UEFI_BOOT, "BootSourceOverrideMode@Redfish.AllowableValues": ["UEFI"]}
    system = StandInSystem(["Off"], ALL_RESETS, boot)
    with pytest.raises(Unsupported) as caught:
        driver_for(system).set_boot_device(BootRequest(BootDevice.PXE, efi=False))
    assert caught.value.message == "this system offers no Legacy boot mode; it allows UEFI"
    assert system.boot_options == []
