"""Whether a MAC may netboot now, and why not: the one rule DHCP and the iPXE script share.

DHCP decides whether to hand out a boot file, the iPXE endpoint which script to serve; both ask
`eligibility` so that a machine is never offered a boot file and then told there is nothing to
do, and both report the same cause when it is refused. Pure: reads a `MachineView` only.
"""

from __future__ import annotations

from enum import StrEnum

from metalflow.index.views import MachineView


class Netboot(StrEnum):
    """The outcome, in the order the rule checks it; the value is a short metric label."""

    UNKNOWN = "unknown_client"
    """Not in the inventory, and discovery is off."""
    DISCOVERY = "discovery"
    """Not in the inventory: boots into discovery."""
    PXE_DISABLED = "pxe_disabled"
    """The interface does not allow PXE (or the MAC is not one of the machine's)."""
    OWN_SCRIPT = "own_script"
    """The machine's own iPXE script or chain URL, whatever its workflows."""
    NO_WORKFLOW = "no_workflow"
    WORKFLOW_DISABLED = "workflow_disabled"
    """A workflow is active but the interface may not run it (Tinkerbell's allowWorkflow)."""
    WORKFLOW = "workflow"
    """The active workflow: the install environment."""

    @property
    def boots(self) -> bool:
        return self in _BOOTS


_BOOTS = frozenset((Netboot.DISCOVERY, Netboot.OWN_SCRIPT, Netboot.WORKFLOW))


def eligibility(machine: MachineView | None, mac: str, discovery: bool) -> Netboot:
    """What `mac` of `machine` (None: not in the inventory) may netboot into now."""
    if machine is None:
        return Netboot.DISCOVERY if discovery else Netboot.UNKNOWN
    iface = machine.interface(mac)
    if iface is None or not iface.allow_pxe:
        return Netboot.PXE_DISABLED
    if machine.boot.ipxe_script is not None or machine.boot.ipxe_url is not None:
        return Netboot.OWN_SCRIPT
    if not machine.has_active_workflow:
        return Netboot.NO_WORKFLOW
    if not iface.allow_workflow:
        return Netboot.WORKFLOW_DISABLED
    return Netboot.WORKFLOW
