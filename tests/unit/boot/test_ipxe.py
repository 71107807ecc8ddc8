"""iPXE script rendering: one table test per decision, properties for every input."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from metalflow.boot.ipxe import (
    ANY_ADDRESS_HINT,
    CANNOT_RENDER,
    NETBOOT_DISABLED,
    NO_ACTIVE_WORKFLOW,
    NOT_CONFIGURED,
    WHO_ARE_YOU,
    Caller,
    InstallEnvironment,
    ScriptDecision,
    address_refusal,
    chain_script,
    choose_script,
    exit_script,
    install_script,
)
from metalflow.index.views import BootOptions, InterfaceView, MachineView
from metalflow.inventory.schemas import BootSpec
from metalflow.values import (
    NAME_PATTERN,
    check_http_url,
    check_ipxe_script,
    check_script_words,
)
from tests.factories import interface_view, machine_view

FAST = settings(max_examples=200, deadline=None)
MAC = "52:54:00:aa:00:01"
BASE = "http://192.0.2.1:7080"
KERNEL = f"{BASE}/boot/install/vmlinuz"
INITRD = f"{BASE}/boot/install/initrd.img"
CONSOLE = "console=tty0 console=ttyS0,115200"
TOKEN = "mfa.0123abcd.0.c2lnbmF0dXJl_-"
CALLER = Caller(ipaddress.IPv4Address("192.0.2.31"))
"""At the address `interface()` reserves."""
ENV = InstallEnvironment(
    base_url=BASE,
    kernel_url=KERNEL,
    initrd_url=INITRD,
    console=CONSOLE,
    kernel_args="quiet",
    discovery=False,
)


def interface(mac: str = MAC, *, allow_pxe: bool = True) -> InterfaceView:
    return interface_view(mac, ip="192.0.2.31", allow_pxe=allow_pxe, allow_workflow=allow_pxe)


def machine(
    *,
    active: bool = True,
    allow_pxe: bool = True,
    boot: BootOptions | None = None,
    name: str = "web1",
) -> MachineView:
    return machine_view(
        name=name,
        hostname=name,
        uefi=True,
        state="provisioning" if active else "ready",
        has_active_workflow=active,
        interfaces=(interface(allow_pxe=allow_pxe),),
        boot=boot,
    )


def token_of(view: MachineView) -> str:
    return TOKEN


def boot_lines(title: str, kernel_line_args: str) -> list[str]:
    return [
        "#!ipxe",
        f"echo metalflow: {title}",
        "set attempt:int32 0",
        "goto fetch",
        ":retry",
        "iseq ${attempt} 10 && goto give_up ||",
        "echo metalflow: attempt ${attempt} of 10 failed, retrying in 5 seconds",
        "sleep 5",
        ":fetch",
        "inc attempt",
        "imgfree",
        f"echo metalflow: fetching the kernel {KERNEL}",
        f"kernel {KERNEL} {kernel_line_args} initrd=initrd.img || goto retry",
        f"echo metalflow: fetching the initrd {INITRD}",
        f"initrd --name initrd.img {INITRD} || goto retry",
        "echo metalflow: starting the kernel",
        "boot || goto retry",
        ":give_up",
        "echo metalflow: giving up after 10 attempts, trying the next boot device",
        "exit 1",
    ]


def exit_text(reason: str) -> str:
    return (
        f"#!ipxe\necho metalflow: {reason}\n"
        "echo metalflow: leaving iPXE for the next boot device\nexit 1\n"
    )


# --- one table test per decision, in the order choose_script takes them ----------------------


def test_caller_nobody_can_name_is_asked_who_it_is() -> None:
    decision = choose_script(None, None, ENV, token_of, CALLER)
    assert decision == ScriptDecision("unknown", exit_text(WHO_ARE_YOU), WHO_ARE_YOU)


def test_unknown_mac_without_discovery_exits() -> None:
    decision = choose_script(None, "52-54-00-AA-00-99", ENV, token_of, CALLER)
    reason = "unknown machine 52:54:00:aa:00:99: not in inventory"
    assert decision == ScriptDecision("unknown", exit_text(reason), reason)


def test_unknown_mac_with_discovery_boots_without_token() -> None:
    env = InstallEnvironment(BASE, KERNEL, INITRD, CONSOLE, "quiet", discovery=True)
    decision = choose_script(None, "52:54:00:aa:00:99", env, token_of, CALLER)
    assert decision.kind == "discovery"
    assert decision.text.splitlines() == boot_lines(
        "unknown machine 52:54:00:aa:00:99: booting the install environment for discovery",
        f"metalflow.url={BASE} metalflow.mac=52:54:00:aa:00:99 metalflow.discovery=1"
        f" {CONSOLE} quiet",
    )
    assert "metalflow.token" not in decision.text


def test_discovery_without_install_environment_exits() -> None:
    env = InstallEnvironment(BASE, None, None, CONSOLE, "", discovery=True)
    decision = choose_script(None, MAC, env, token_of, CALLER)
    assert decision.kind == "unknown"
    assert decision.text == exit_text(f"unknown machine {MAC}: {NOT_CONFIGURED}")


def test_custom_script_is_served_as_written_and_wins_over_chain_and_workflow() -> None:
    script = "#!ipxe\necho hello ${net0/mac}\nsanboot --no-describe --drive 0x80\n"
    view = machine(active=True, boot=BootOptions(script, "http://x/y.ipxe"))
    decision = choose_script(view, MAC, ENV, token_of, CALLER)
    assert decision == ScriptDecision("custom", script, "the machine's own iPXE script")


def test_netboot_disabled_wins_over_the_machines_own_script() -> None:
    script = "#!ipxe\nsanboot --no-describe --drive 0x80\n"
    view = machine(active=False, allow_pxe=False, boot=BootOptions(script, "http://x/y.ipxe"))
    assert choose_script(view, MAC, ENV, token_of, CALLER).kind == "exit"


def test_chain_url() -> None:
    view = machine(active=False, boot=BootOptions(ipxe_url="https://boot.example/m/web1.ipxe"))
    decision = choose_script(view, MAC, ENV, token_of, CALLER)
    assert decision.kind == "chain"
    assert decision.text == (
        "#!ipxe\n"
        "echo metalflow: chaining to https://boot.example/m/web1.ipxe\n"
        "chain --replace --autofree https://boot.example/m/web1.ipxe || goto failed\n"
        ":failed\n"
        "echo metalflow: could not chain to https://boot.example/m/web1.ipxe, trying the next"
        " boot device\n"
        "exit 1\n"
    )
    assert decision.text == chain_script("https://boot.example/m/web1.ipxe")


@pytest.mark.parametrize(
    ("view", "mac"),
    [
        (machine(allow_pxe=False), MAC),
        (machine(), "52:54:00:aa:00:02"),  # not one of the machine's interfaces
    ],
)
def test_netboot_disabled_for_the_interface(view: MachineView, mac: str) -> None:
    decision = choose_script(view, mac, ENV, token_of, CALLER)
    assert decision == ScriptDecision("exit", exit_text(NETBOOT_DISABLED), NETBOOT_DISABLED)


def test_no_active_workflow_exits() -> None:
    decision = choose_script(machine(active=False), MAC, ENV, token_of, CALLER)
    assert decision == ScriptDecision("exit", exit_text(NO_ACTIVE_WORKFLOW), NO_ACTIVE_WORKFLOW)


@pytest.mark.parametrize(("kernel", "initrd"), [(None, INITRD), (KERNEL, None), (None, None)])
def test_install_environment_not_configured_exits(kernel: str | None, initrd: str | None) -> None:
    env = InstallEnvironment(BASE, kernel, initrd, CONSOLE, "", discovery=False)
    decision = choose_script(machine(), MAC, env, token_of, CALLER)
    assert decision == ScriptDecision("exit", exit_text(NOT_CONFIGURED), NOT_CONFIGURED)
    assert "METALFLOW_KERNEL / --kernel" in decision.text


def test_active_workflow_boots_install_environment_with_token() -> None:
    view = machine(boot=BootOptions(kernel_args="ip=dhcp  nomodeset"))
    decision = choose_script(view, MAC, ENV, token_of, CALLER)
    assert decision.kind == "install"
    assert decision.text.splitlines() == boot_lines(
        f"web1 ({MAC}): booting the install environment",
        f"metalflow.url={BASE} metalflow.token={TOKEN} metalflow.mac={MAC}"
        f" metalflow.machine=web1 {CONSOLE} quiet ip=dhcp nomodeset",
    )
    assert decision.text.endswith("exit 1\n")


def test_machine_console_replaces_the_default() -> None:
    view = machine(boot=BootOptions(console="console=ttyS1,9600"))
    decision = choose_script(view, MAC, ENV, token_of, CALLER)
    assert "console=ttyS1,9600 quiet initrd=initrd.img" in decision.text
    assert "console=tty0" not in decision.text


@pytest.mark.parametrize(
    ("boot", "words"),
    [
        (BootOptions(kernel_args="a ${secret}"), "'${'"),
        (BootOptions(kernel_args="a\nshell"), "printable"),
        (BootOptions(console="console=ttyS0 || shell"), "'||'"),
        (BootOptions(ipxe_script="echo no magic"), "#!ipxe"),
        (BootOptions(ipxe_url="ftp://x/y"), "http"),
    ],
)
def test_stored_values_unfit_for_a_script_exit_with_the_reason(
    boot: BootOptions, words: str
) -> None:
    decision = choose_script(machine(boot=boot), MAC, ENV, token_of, CALLER)
    assert decision.kind == "exit"
    assert decision.text == exit_text(CANNOT_RENDER)
    assert decision.reason.startswith(CANNOT_RENDER) and words in decision.reason


def test_install_script_refuses_unsafe_values_naming_them() -> None:
    good = dict(
        base_url=BASE,
        kernel_url=KERNEL,
        initrd_url=INITRD,
        mac=MAC,
        machine_name="web1",
        token=TOKEN,
        console=CONSOLE,
        kernel_args="",
        extra_args="",
    )
    for field, value, words in [
        ("mac", "52:54:00", "not a MAC address"),
        ("machine_name", "Web 1", "machine name"),
        ("token", "a b", "agent token"),
        ("base_url", "http://h/${x}", "base URL"),
        ("kernel_url", "file:///vmlinuz", "kernel URL"),
        ("kernel_args", "a ; shell", "kernel_args"),
        ("extra_args", "#comment", "kernel_args of machine web1"),
        ("console", "console=ttyS0\\", "console"),
    ]:
        with pytest.raises(ValueError, match=words):
            install_script(**{**good, field: value})


# --- the validators the inventory applies too ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a\nb", "one line of printable ASCII"),
        ("a\rb", "one line of printable ASCII"),
        ("a\tb", "one line of printable ASCII"),
        ("café", "one line of printable ASCII"),
        ("x=${net0/mac}", "'${'"),
        ("a \\", "'\\'"),
        ("a || b", "'||'"),
        ("a && b", "'&&'"),
        ("a ; b", "';'"),
        ("a #b", "starting with '#'"),
    ],
)
def test_script_words_refused(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"^kernel_args .*{re.escape(words)}"):
        check_script_words(value, "kernel_args")


def test_script_words_allowed() -> None:
    value = 'root=/dev/sda1 ro a=b,c "x=y z" $HOME {x} a|b a&b a;b x#y'
    assert check_script_words(value, "kernel_args") == value


@pytest.mark.parametrize(
    "value",
    ["ftp://h/x", "http://", "h/x.ipxe", "http://h:99999/", "http://h:x/", "http://[zz]/"],
)
def test_url_refused(value: str) -> None:
    with pytest.raises(ValueError, match="ipxe_url must be an http:// or https:// URL"):
        check_http_url(value, "ipxe_url")


def test_url_with_space_refused() -> None:
    with pytest.raises(ValueError, match="percent-encode"):
        check_http_url("http://h/a b", "ipxe_url")


def test_ipxe_script_checks() -> None:
    assert check_ipxe_script("#!ipxe\nexit\n", "ipxe_script")
    for bad, words in [
        ("#!ipxeexit", "must start with the line '#!ipxe'"),
        ("echo hi", "must start with the line"),
        ("#!ipxe\n" + "x" * 65536, "the limit is 65536 bytes"),
    ]:
        with pytest.raises(ValueError, match=words):
            check_ipxe_script(bad, "ipxe_script")


def test_boot_spec_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        BootSpec.model_validate({"console": "a\nb"})
    error = caught.value.errors()[0]
    assert error["loc"] == ("console",) and "console must be one line" in error["msg"]
    assert BootSpec(kernel_args="quiet").stored() == {"kernel_args": "quiet"}


# --- properties --------------------------------------------------------------------------


@st.composite
def macs(draw: st.DrawFn) -> tuple[str, str]:
    """(as a client may write it, as metalflow writes it)."""
    octets = [f"{byte:02x}" for byte in draw(st.binary(min_size=6, max_size=6))]
    written = draw(st.sampled_from([":", "-", ""])).join(octets)
    return (written.upper() if draw(st.booleans()) else written), ":".join(octets)


names = st.from_regex(NAME_PATTERN.replace("{0,198}", "{0,30}"), fullmatch=True)
tokens = st.from_regex(r"[A-Za-z0-9._~+/=-]{1,60}", fullmatch=True)
_WORD_CHARS = "".join(c for c in string.printable if c.isprintable() and not c.isspace())
words = st.text(alphabet=_WORD_CHARS, min_size=1, max_size=12).filter(
    lambda w: (
        "${" not in w and "\\" not in w and not w.startswith("#") and w not in ("||", "&&", ";")
    )
)
arg_lists = st.lists(words, max_size=6)


@FAST
@given(macs(), names, tokens, arg_lists, arg_lists, arg_lists)
def test_install_script_has_exactly_the_expected_lines(
    mac_pair: tuple[str, str],
    name: str,
    token: str,
    console: list[str],
    args: list[str],
    extra: list[str],
) -> None:
    mac, canonical = mac_pair
    text = install_script(
        base_url=BASE,
        kernel_url=KERNEL,
        initrd_url=INITRD,
        mac=mac,
        machine_name=name,
        token=token,
        console="  ".join(console),
        kernel_args=" ".join(args),
        extra_args=" ".join(extra),
    )
    arguments = " ".join(
        [
            f"metalflow.url={BASE} metalflow.token={token} metalflow.mac={canonical}",
            f"metalflow.machine={name}",
            *console,
            *args,
            *extra,
        ]
    )
    expected = boot_lines(f"{name} ({canonical}): booting the install environment", arguments)
    assert text.splitlines() == expected
    assert text.count("\n") == len(expected) and "\r" not in text
    assert [line for line in expected if "${" in line] == [expected[5], expected[6]]


def unsafe(value: str) -> bool:
    try:
        check_script_words(value, "x")
    except ValueError:
        return True
    return False


@FAST
@given(st.text(max_size=40).filter(unsafe))
def test_unsafe_kernel_args_never_render(value: str) -> None:
    with pytest.raises(ValueError, match="kernel_args of machine web1"):
        install_script(
            base_url=BASE,
            kernel_url=KERNEL,
            initrd_url=INITRD,
            mac=MAC,
            machine_name="web1",
            token=TOKEN,
            console=CONSOLE,
            kernel_args="",
            extra_args=value,
        )


texts = st.text(max_size=30)
maybe_texts = st.none() | texts | st.just("#!ipxe\nexit\n") | st.just("http://h/x.ipxe")
interfaces = st.builds(
    InterfaceView,
    mac=st.sampled_from([MAC, "52:54:00:aa:00:02"]) | texts,
    ip=st.none(),
    netmask=st.none(),
    gateway=st.none(),
    nameservers=st.just(()),
    hostname=st.none() | texts,
    lease_time=st.none(),
    allow_pxe=st.booleans(),
    allow_workflow=st.booleans(),
)
views = st.builds(
    MachineView,
    id=texts,
    name=texts | names,
    hostname=st.none() | texts,
    arch=texts,
    uefi=st.booleans(),
    state=texts,
    agent_token_generation=st.integers(min_value=0, max_value=10),
    has_active_workflow=st.booleans(),
    interfaces=st.lists(interfaces, max_size=3).map(tuple),
    boot=st.builds(
        BootOptions,
        ipxe_script=maybe_texts,
        ipxe_url=maybe_texts,
        kernel_args=texts | st.just("quiet"),
        console=st.none() | texts,
    ),
)
environments = st.builds(
    InstallEnvironment,
    base_url=st.just(BASE) | texts,
    kernel_url=st.none() | st.just(KERNEL) | texts,
    initrd_url=st.none() | st.just(INITRD) | texts,
    console=st.just(CONSOLE) | texts,
    kernel_args=st.just("") | texts,
    discovery=st.booleans(),
)


@FAST
@given(
    st.none() | views,
    st.none() | st.just(MAC) | macs().map(lambda pair: pair[0]) | texts,
    environments,
    tokens,
)
def test_choose_script_never_raises(
    view: MachineView | None, mac: str | None, env: InstallEnvironment, token: str
) -> None:
    decision = choose_script(view, mac, env, lambda _: token, CALLER)
    assert decision.text.startswith("#!ipxe\n")
    if decision.kind == "custom":
        assert view is not None and decision.text == view.boot.ipxe_script
        return
    ours = {
        "iseq ${attempt} 10 && goto give_up ||",
        "echo metalflow: attempt ${attempt} of 10 failed, retrying in 5 seconds",
    }
    for line in decision.text.splitlines():
        assert "${" not in line or line in ours
        assert "\r" not in line and not line.endswith("\\")
    assert decision.text.endswith("exit 1\n")


def test_exit_script_refuses_an_unsafe_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        exit_script("bye\nshell")


# --- the install script (its token) goes only to the address metalflow gave the MAC ----------


def test_install_script_goes_only_to_the_reserved_address() -> None:
    view = machine()
    assert choose_script(view, MAC, ENV, token_of, CALLER).kind == "install"
    stranger = Caller(ipaddress.IPv4Address("192.0.2.99"))
    decision = choose_script(view, MAC, ENV, token_of, stranger, "192.0.2.99")
    assert decision.kind == "refused"
    assert TOKEN not in decision.text
    assert decision.text == exit_text(decision.reason)
    assert decision.reason == (
        f"refused: metalflow gave {MAC} the address 192.0.2.31 and this request came from"
        " 192.0.2.99, but the install script carries a token and goes only to that address"
        f" {ANY_ADDRESS_HINT}"
    )
    anyone = Caller(ipaddress.IPv4Address("192.0.2.99"), any_address=True)
    assert choose_script(view, MAC, ENV, token_of, anyone).kind == "install"
    ipv6 = choose_script(view, MAC, ENV, token_of, Caller(None), "2001:db8::5")
    assert ipv6.kind == "refused" and "came from 2001:db8::5" in ipv6.reason


def test_without_a_reservation_the_pool_lease_counts() -> None:
    iface = dataclasses.replace(interface(), ip=None)
    view = dataclasses.replace(machine(), interfaces=(iface,))
    leased = ipaddress.IPv4Address("192.0.2.120")
    assert choose_script(view, MAC, ENV, token_of, Caller(leased, leased)).kind == "install"
    decision = choose_script(view, MAC, ENV, token_of, Caller(leased), "192.0.2.120")
    assert decision.kind == "refused"
    assert f"metalflow gave {MAC} no address (no reservation, no lease)" in decision.reason
    elsewhere = choose_script(view, MAC, ENV, token_of, Caller(CALLER.address, leased))
    assert elsewhere.kind == "refused" and "the address 192.0.2.120" in elsewhere.reason


def test_scripts_without_a_token_go_to_anyone() -> None:
    stranger = Caller(ipaddress.IPv4Address("198.18.0.1"))
    assert choose_script(machine(active=False), MAC, ENV, token_of, stranger).kind == "exit"
    custom = machine(boot=BootOptions(ipxe_script="#!ipxe\necho hi\n"))
    assert choose_script(custom, MAC, ENV, token_of, stranger).kind == "custom"


ipv4s = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))


@FAST
@given(ipv4s, st.none() | ipv4s, st.none() | ipv4s, st.booleans())
def test_address_refusal_lets_through_only_the_given_address(
    caller: ipaddress.IPv4Address,
    reserved: ipaddress.IPv4Address | None,
    leased: ipaddress.IPv4Address | None,
    any_address: bool,
) -> None:
    iface = dataclasses.replace(interface(), ip=reserved)
    refusal = address_refusal(iface, Caller(caller, leased, any_address), str(caller))
    given_address = reserved or leased
    assert (refusal is None) == (any_address or caller == given_address)
    if refusal is not None:
        assert check_script_words(refusal, "reason") == refusal
        assert str(caller) in refusal and "--script-token-any-address" in refusal
