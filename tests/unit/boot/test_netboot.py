"""One netboot rule: DHCP's boot file and the iPXE script agree on every case, and on the cause."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools

import pytest
from _pytest.mark import ParameterSet

from metalflow.boot.dhcp.codec import decode
from metalflow.boot.dhcp.policy import (
    BOOT_REFUSALS,
    Ignore,
    Reply,
    answer_proxy,
    answer_reservation,
    classify,
)
from metalflow.boot.ipxe import EXIT_REASONS, Caller, InstallEnvironment, choose_script
from metalflow.boot.netboot import Netboot, eligibility
from metalflow.index.views import BootOptions, MachineView
from tests.factories import interface_view, machine_view
from tests.unit.boot.dhcp import captures
from tests.unit.boot.dhcp.testbed import DISCOVERY, LAN, PROXY, SERVER, SETTINGS

MAC = captures.QEMU_MAC_TEXT
OTHER_MAC = "52:54:00:99:99:99"
BASE = "http://192.0.2.1:7080"
ENV = InstallEnvironment(
    base_url=BASE,
    kernel_url=f"{BASE}/boot/install/vmlinuz",
    initrd_url=f"{BASE}/boot/install/initrd.img",
    console="console=ttyS0",
    kernel_args="",
    discovery=False,
)
ANY_CALLER = Caller(None, any_address=True)
"""Past the rule, the script's own checks (address, configuration) always pass here."""
POOL_ADDRESS = ipaddress.IPv4Address("192.0.2.150")
OWN_BOOT = {
    "none": BootOptions(),
    "script": BootOptions(ipxe_script="#!ipxe\necho own\nexit 1\n"),
    "chain": BootOptions(ipxe_url="http://192.0.2.9/next.ipxe"),
}
SCRIPT_KINDS = {
    "install": Netboot.WORKFLOW,
    "custom": Netboot.OWN_SCRIPT,
    "chain": Netboot.OWN_SCRIPT,
    "discovery": Netboot.DISCOVERY,
}
IPXE_REFUSALS = {reason: netboot for netboot, reason in EXIT_REASONS.items()}
DHCP_REFUSALS = {reason: netboot for netboot, reason in BOOT_REFUSALS.items()}


def known_cases() -> list[ParameterSet]:
    cases: list[ParameterSet] = []
    for allow_pxe, allow_workflow, active, boot, own_mac in itertools.product(
        (True, False), (True, False), (True, False), OWN_BOOT, (True, False)
    ):
        iface = interface_view(
            MAC if own_mac else OTHER_MAC,
            ip="192.0.2.31",
            allow_pxe=allow_pxe,
            allow_workflow=allow_workflow,
        )
        view = machine_view(
            name="web1", has_active_workflow=active, interfaces=(iface,), boot=OWN_BOOT[boot]
        )
        case_id = (
            f"pxe={allow_pxe}-workflow={allow_workflow}-active={active}-boot={boot}"
            f"-{'own' if own_mac else 'foreign'}-mac"
        )
        cases.append(pytest.param(view, False, id=case_id))
    cases.append(pytest.param(None, False, id="unknown-discovery-off"))
    cases.append(pytest.param(None, True, id="unknown-discovery-on"))
    return cases


BOOTS = "boots"
"""A decision that boots: DHCP sends a boot file, iPXE a script that boots (which one is iPXE's)."""


def dhcp_outcomes(view: MachineView | None, discovery: bool) -> tuple[str, str]:
    """What full DHCP and ProxyDHCP decide for a PXE DISCOVER from MAC: BOOTS, or the refusal."""
    request = decode(captures.INTEL_PXE_BIOS_DISCOVER)
    info = classify(request)
    settings = DISCOVERY if discovery else SETTINGS
    reply = answer_reservation(request, info, LAN, SERVER, view, POOL_ADDRESS, settings)
    assert isinstance(reply, Reply)
    full = BOOTS if reply.bootfile is not None else DHCP_REFUSALS[reply.note]
    proxy = answer_proxy(
        request, info, PROXY, SERVER, view, settings, on_port_4011=False, source=("0.0.0.0", 68)
    )
    if isinstance(proxy, Reply):
        return full, BOOTS
    assert isinstance(proxy, Ignore)
    refusal = DHCP_REFUSALS[proxy.reason]
    assert proxy.counter == refusal.value
    return full, refusal


def ipxe_outcome(view: MachineView | None, discovery: bool) -> tuple[str, Netboot]:
    """What the iPXE script decides: BOOTS or the refusal, and the rule's outcome it stands for."""
    env = dataclasses.replace(ENV, discovery=discovery)
    decision = choose_script(view, MAC, env, lambda machine: "token", ANY_CALLER)
    if decision.kind in SCRIPT_KINDS:
        return BOOTS, SCRIPT_KINDS[decision.kind]
    if decision.kind == "unknown":
        assert decision.reason == f"unknown machine {MAC}: not in inventory"
        return Netboot.UNKNOWN, Netboot.UNKNOWN
    assert decision.kind == "exit", decision
    refusal = IPXE_REFUSALS[decision.reason]
    return refusal, refusal


@pytest.mark.parametrize(("view", "discovery"), known_cases())
def test_dhcp_and_ipxe_take_the_same_decision_for_the_same_reason(
    view: MachineView | None, discovery: bool
) -> None:
    rule = eligibility(view, MAC, discovery)
    expected = BOOTS if rule.boots else rule
    script, stands_for = ipxe_outcome(view, discovery)
    assert dhcp_outcomes(view, discovery) == (expected, expected)
    assert (script, stands_for) == (expected, rule)


def test_a_workflow_the_interface_may_not_run_is_named_as_such() -> None:
    iface = interface_view(MAC, ip="192.0.2.31", allow_workflow=False)
    view = machine_view(has_active_workflow=True, interfaces=(iface,))
    assert dhcp_outcomes(view, False) == (Netboot.WORKFLOW_DISABLED,) * 2
    assert ipxe_outcome(view, False) == (Netboot.WORKFLOW_DISABLED,) * 2
    assert BOOT_REFUSALS[Netboot.WORKFLOW_DISABLED] == EXIT_REASONS[Netboot.WORKFLOW_DISABLED]


def test_every_refusal_has_a_text_on_both_sides() -> None:
    refusals = {netboot for netboot in Netboot if not netboot.boots}
    assert set(BOOT_REFUSALS) == refusals
    assert set(EXIT_REASONS) == refusals - {Netboot.UNKNOWN}
