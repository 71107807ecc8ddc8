"""iPXE scripts per machine: what to say to a machine that netboots, rendered without I/O.

iPXE has no quoting, so nothing reaches a script unchecked: MACs are normalised, names match
the inventory pattern, URLs and kernel arguments pass `check_script_words` (the rules are in
`metalflow.values`, which the inventory applies when a machine is applied, too). A value that fails
raises ValueError naming it; `choose_script` turns that into an exit script, never an error.

An install script carries a token (a boot token, or with `--script-token agent` the machine's
agent token, as Tinkerbell's scripts do) and is served only to the address metalflow gave that
MAC (`address_refusal`), unless the operator allows any address (`--script-token-any-address`).

Every script that does not boot the install environment ends in `exit 1`, never `shell`: an
unattended machine at an iPXE prompt stays there, while a failed boot option makes the firmware
try the next boot device, the local disk. Non-zero because the UEFI specification lets a boot
manager stop at its menu after an option returns success; legacy BIOS moves on either way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from metalflow.boot.netboot import Netboot, eligibility
from metalflow.index.views import InterfaceView, MachineView
from metalflow.values import (
    NAME_PATTERN,
    check_http_url,
    check_ipxe_script,
    check_script_words,
    normalize_mac,
)

ScriptKind = Literal["install", "exit", "custom", "chain", "unknown", "discovery", "refused"]
FETCH_ATTEMPTS = 10
RETRY_SECONDS = 5
INITRD_NAME = "initrd.img"
"""UEFI builds of iPXE hand the kernel its initrd by this name (`initrd=` on the command line)."""

NOT_IN_INVENTORY = "not in inventory"
NETBOOT_DISABLED = "netboot disabled for this interface"
NO_ACTIVE_WORKFLOW = "nothing to do: no active workflow"
WORKFLOW_DISABLED = "workflows disabled for this interface (allowWorkflow: false)"
NOT_CONFIGURED = (
    "install environment not configured: run `metalflow installenv build` (metalflow up serves"
    " the build from its data dir), or set METALFLOW_KERNEL / --kernel and METALFLOW_INITRD /"
    " --initrd"
)
WHO_ARE_YOU = "who are you? no ?mac= given and no machine has this address"
CANNOT_RENDER = "cannot render a boot script for this machine; its boot.script event says why"
EXIT_REASONS = {
    Netboot.PXE_DISABLED: NETBOOT_DISABLED,
    Netboot.NO_WORKFLOW: NO_ACTIVE_WORKFLOW,
    Netboot.WORKFLOW_DISABLED: WORKFLOW_DISABLED,
}
"""What the exit script says for each refusal of `netboot.eligibility` a known machine gets."""
ANY_ADDRESS_HINT = (
    "(behind a DHCP relay or another DHCP server, start metalflow up with"
    " --script-token-any-address)"
)

_NAME = re.compile(NAME_PATTERN)
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True, slots=True)
class InstallEnvironment:
    """What every boot into the install environment shares; URLs are None when not configured."""

    base_url: str
    kernel_url: str | None
    initrd_url: str | None
    console: str
    kernel_args: str
    discovery: bool


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks for a script: their IPv4 address (None for IPv6 or unreadable), the address
    metalflow's DHCP leased the MAC (looked up only when the interface has no reserved one),
    and whether the operator lets any address have a token."""

    address: ipaddress.IPv4Address | None
    leased: ipaddress.IPv4Address | None = None
    any_address: bool = False


@dataclass(frozen=True, slots=True)
class ScriptDecision:
    kind: ScriptKind
    text: str
    reason: str


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"machine name {value!r} does not match {NAME_PATTERN}")
    return value


def _token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("agent token must be letters, digits and ._~+/=- only")
    return value


def _script(lines: list[str]) -> str:
    return "\n".join(["#!ipxe", *lines]) + "\n"


def _boot_lines(title: str, kernel_url: str, initrd_url: str, kernel_args: list[str]) -> list[str]:
    """Fetch kernel and initrd and boot, retrying the whole sequence `FETCH_ATTEMPTS` times.

    `kernel_args` have passed `check_script_words` (the callers name them in the error).

    A failed command without `||` would end the script, so every fetch has its fallback;
    `imgfree` drops what a failed attempt left loaded, except this script (iPXE unregisters a
    script while it runs).
    """
    kernel_url = check_http_url(kernel_url, "kernel URL")
    initrd_url = check_http_url(initrd_url, "initrd URL")
    command_line = " ".join(
        word for words in (*kernel_args, f"initrd={INITRD_NAME}") for word in words.split()
    )
    return [
        f"echo metalflow: {title}",
        "set attempt:int32 0",
        "goto fetch",
        ":retry",
        f"iseq ${{attempt}} {FETCH_ATTEMPTS} && goto give_up ||",
        f"echo metalflow: attempt ${{attempt}} of {FETCH_ATTEMPTS} failed, retrying in"
        f" {RETRY_SECONDS} seconds",
        f"sleep {RETRY_SECONDS}",
        ":fetch",
        "inc attempt",
        "imgfree",
        f"echo metalflow: fetching the kernel {kernel_url}",
        f"kernel {kernel_url} {command_line} || goto retry",
        f"echo metalflow: fetching the initrd {initrd_url}",
        f"initrd --name {INITRD_NAME} {initrd_url} || goto retry",
        "echo metalflow: starting the kernel",
        "boot || goto retry",
        ":give_up",
        f"echo metalflow: giving up after {FETCH_ATTEMPTS} attempts, trying the next boot device",
        "exit 1",
    ]


def install_script(
    *,
    base_url: str,
    kernel_url: str,
    initrd_url: str,
    mac: str,
    machine_name: str,
    token: str,
    console: str,
    kernel_args: str,
    extra_args: str,
) -> str:
    """Boot the install environment; its agent finds metalflow and proves who it is from the
    kernel command line. `kernel_args` apply to every machine, `extra_args` to this one."""
    mac = normalize_mac(mac)
    machine_name = _name(machine_name)
    base_url = check_http_url(base_url, "base URL")
    metalflow_args = (
        f"metalflow.url={base_url} metalflow.token={_token(token)} metalflow.mac={mac}"
        f" metalflow.machine={machine_name}"
    )
    return _script(
        _boot_lines(
            f"{machine_name} ({mac}): booting the install environment",
            kernel_url,
            initrd_url,
            [
                metalflow_args,
                check_script_words(console, "console"),
                check_script_words(kernel_args, "kernel_args"),
                check_script_words(extra_args, f"kernel_args of machine {machine_name}"),
            ],
        )
    )


def discovery_script(
    *, base_url: str, kernel_url: str, initrd_url: str, mac: str, console: str, kernel_args: str
) -> str:
    """Boot a machine metalflow does not know into the install environment, without a token:
    its agent registers the machine (`metalflow.discovery=1`)."""
    mac = normalize_mac(mac)
    base_url = check_http_url(base_url, "base URL")
    metalflow_args = f"metalflow.url={base_url} metalflow.mac={mac} metalflow.discovery=1"
    return _script(
        _boot_lines(
            f"unknown machine {mac}: booting the install environment for discovery",
            kernel_url,
            initrd_url,
            [
                metalflow_args,
                check_script_words(console, "console"),
                check_script_words(kernel_args, "kernel_args"),
            ],
        )
    )


def exit_script(reason: str) -> str:
    """Say why, then leave netboot so the firmware boots the next device (the local disk)."""
    return _script(
        [
            f"echo metalflow: {check_script_words(reason, 'reason')}",
            "echo metalflow: leaving iPXE for the next boot device",
            "exit 1",
        ]
    )


def chain_script(url: str) -> str:
    """Hand the machine on to another iPXE script, which replaces this one (so control never
    comes back here once it runs); when it cannot be fetched, the next boot device."""
    url = check_http_url(url, "ipxe_url")
    return _script(
        [
            f"echo metalflow: chaining to {url}",
            f"chain --replace --autofree {url} || goto failed",
            ":failed",
            f"echo metalflow: could not chain to {url}, trying the next boot device",
            "exit 1",
        ]
    )


def address_refusal(interface: InterfaceView, caller: Caller, remote: str) -> str | None:
    """None when the caller may have this interface's install script (its token): it asks from
    the address metalflow gave the MAC, its reservation, else its pool lease; else why not."""
    if caller.any_address:
        return None
    given = interface.ip or caller.leased
    if given is not None and caller.address == given:
        return None
    what = (
        f"metalflow gave {interface.mac} the address {given}"
        if given is not None
        else f"metalflow gave {interface.mac} no address (no reservation, no lease)"
    )
    return (
        f"refused: {what} and this request came from {remote}, but the install script carries a"
        f" token and goes only to that address {ANY_ADDRESS_HINT}"
    )


def _exit(kind: ScriptKind, reason: str) -> ScriptDecision:
    return ScriptDecision(kind, exit_script(reason), reason)


def _decide(
    machine: MachineView | None,
    mac: str | None,
    env: InstallEnvironment,
    token: Callable[[MachineView], str],
    caller: Caller,
    remote: str,
) -> ScriptDecision:
    if mac is None:
        return _exit("unknown", WHO_ARE_YOU)
    mac = normalize_mac(mac)
    netboot = eligibility(machine, mac, env.discovery)
    if netboot is Netboot.UNKNOWN:
        return _exit("unknown", f"unknown machine {mac}: {NOT_IN_INVENTORY}")
    if machine is None:
        if env.kernel_url is None or env.initrd_url is None:
            return _exit("unknown", f"unknown machine {mac}: {NOT_CONFIGURED}")
        text = discovery_script(
            base_url=env.base_url,
            kernel_url=env.kernel_url,
            initrd_url=env.initrd_url,
            mac=mac,
            console=env.console,
            kernel_args=env.kernel_args,
        )
        return ScriptDecision("discovery", text, f"unknown machine {mac}: discovery")
    refusal = EXIT_REASONS.get(netboot)
    if refusal is not None:
        return _exit("exit", refusal)
    if machine.boot.ipxe_script is not None:
        text = check_ipxe_script(machine.boot.ipxe_script, "ipxe_script")
        return ScriptDecision("custom", text, "the machine's own iPXE script")
    if machine.boot.ipxe_url is not None:
        url = machine.boot.ipxe_url
        return ScriptDecision("chain", chain_script(url), f"chain to {url}")
    interface = machine.interface(mac)
    assert interface is not None  # eligibility found it
    if env.kernel_url is None or env.initrd_url is None:
        return _exit("exit", NOT_CONFIGURED)
    refusal = address_refusal(interface, caller, remote)
    if refusal is not None:
        return _exit("refused", refusal)
    text = install_script(
        base_url=env.base_url,
        kernel_url=env.kernel_url,
        initrd_url=env.initrd_url,
        mac=mac,
        machine_name=machine.name,
        token=token(machine),
        console=machine.boot.console or env.console,
        kernel_args=env.kernel_args,
        extra_args=machine.boot.kernel_args,
    )
    return ScriptDecision("install", text, "active workflow: install environment")


def choose_script(
    machine: MachineView | None,
    mac: str | None,
    env: InstallEnvironment,
    token: Callable[[MachineView], str],
    caller: Caller,
    remote: str = "-",
) -> ScriptDecision:
    """The one decision of what a netbooting machine gets, in order: unknown MAC (discovery or
    exit), netboot disabled, the machine's own script, its chain URL, no active workflow,
    workflows disabled, no install environment configured, a caller at another address than
    metalflow gave the MAC (refused), else the install environment with `token(machine)`.

    `mac` is None when the caller could not tell which machine asks; `remote` is the caller's
    address as text, for the refusal. Never raises: a value that cannot go into a script
    yields an exit script, the detail in `reason`.
    """
    try:
        return _decide(machine, mac, env, token, caller, remote)
    except ValueError as exc:
        return ScriptDecision("exit", exit_script(CANNOT_RENDER), f"{CANNOT_RENDER}: {exc}")
