"""The host check every BMC driver shares: IP addresses and RFC 1123 host names pass."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.power.driver import check_host, is_host_name

LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=4), st.booleans())
def test_names_of_rfc_1123_labels_pass(labels: list[str], dot: bool) -> None:
    if labels[-1].isdigit():
        labels[-1] += "x"
    name = ".".join(labels) + ("." if dot else "")
    assert is_host_name(name) == (len(name.rstrip(".")) <= 253)


@given(st.ip_addresses())
def test_ip_addresses_pass(address: object) -> None:
    check_host(str(address))


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "a..b",
        ".example",
        "bmc_7",
        "bmc 7",
        "-bmc",
        "bmc-",
        "a" * 64,
        "bmc.é.example",
        "10.0.0.256",
        "192.0.2",
        "bmc:623",
        ("a" * 63 + ".") * 4,
    ],
)
def test_other_strings_are_no_host_names(name: str) -> None:
    assert not is_host_name(name)


def test_the_refusal_names_the_field_given() -> None:
    with pytest.raises(ValueError, match=r"^options\.url: 'x y' is neither"):
        check_host("x y", "options.url")


def test_the_drivers_say_what_the_job_layer_asks_of_them() -> None:
    from metalflow.power.driver import driver_class, driver_names

    facts = {
        name: (
            driver_class(name).holds_workflows,
            driver_class(name).syncs_state,
            driver_class(name).default_timeout,
        )
        for name in driver_names()
    }
    assert facts["manual"] == (False, False, 5.0)
    assert facts["qemu"] == facts["fake"] == (True, True, 30.0)
    for name in ("ipmi", "redfish", "webhook"):
        assert facts[name] == (True, True, None)
