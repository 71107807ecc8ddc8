"""Tinkerbell `Hardware` (tinkerbell.org/v1alpha1) to and from metalflow machines.

A Hardware document is accepted unmodified; the fields metalflow acts on become a MachineSpec, and
the whole spec is kept so templates see `.hardware.spec` exactly as written.
"""

from __future__ import annotations

from typing import Any

from metalflow.errors import Invalid
from metalflow.inventory.schemas import IPXE_MAGIC, check_http_url, check_ipxe_script

HARDWARE_SPEC_KEYS = frozenset(
    {
        "agentID",
        "bmcRef",
        "disks",
        "interfaces",
        "metadata",
        "resources",
        "tinkVersion",
        "userData",
        "vendorData",
        "references",
    }
)
INTERFACE_KEYS = frozenset({"dhcp", "netboot", "disableDhcp"})
DHCP_KEYS = frozenset(
    {
        "arch",
        "hostname",
        "iface_name",
        "ip",
        "lease_time",
        "mac",
        "name_servers",
        "time_servers",
        "uefi",
        "vlan_id",
    }
)
NETBOOT_KEYS = frozenset({"allowPXE", "allowWorkflow", "ipxe", "osie"})
IPXE_KEYS = frozenset({"url", "contents"})
IP_KEYS = frozenset({"address", "family", "gateway", "netmask"})


def check_keys(value: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    """`value` as a mapping with only `allowed` keys (None: empty); else Invalid naming the
    first unknown one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be a mapping", field=where)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise Invalid(
            f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(allowed))}",
            field=f"{where}.{unknown[0]}",
        )
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{where} must be a list", field=where)
    return value


def _vlan(value: Any, where: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Invalid(f"{where} must be a VLAN number, got {value!r}", field=where) from None


def _ipxe_boot(netboot: dict[str, Any], where: str) -> dict[str, str] | None:
    """`netboot.ipxe` as metalflow's boot options: `contents` is the machine's own script,
    `url` a script to chain to (Tinkerbell writes both as "" when unused)."""
    ipxe = check_keys(netboot.get("ipxe"), IPXE_KEYS, f"{where}.ipxe")
    boot: dict[str, str] = {}
    for key, option, check in (
        ("contents", "ipxe_script", check_ipxe_script),
        ("url", "ipxe_url", check_http_url),
    ):
        value = ipxe.get(key)
        if value in (None, ""):
            continue
        field = f"{where}.ipxe.{key}"
        if not isinstance(value, str):
            raise Invalid(f"{field} must be a string", field=field)
        if key == "contents" and not value.lstrip().startswith(IPXE_MAGIC):
            # Tinkerbell's smee puts the `#!ipxe` header above `contents` itself.
            value = f"{IPXE_MAGIC}\n{value}"
        try:
            boot[option] = check(value, field)
        except ValueError as exc:
            raise Invalid(str(exc), field=field) from None
    return boot or None


def hardware_to_machine_fields(name: str, namespace: str | None, spec: Any) -> dict[str, Any]:
    """MachineSpec input (as a dict, validated by the caller) from a Hardware spec."""
    spec = check_keys(spec, HARDWARE_SPEC_KEYS, "spec")
    interfaces = []
    arch, uefi, hostname = "x86_64", True, None
    boot = None
    for index, item in enumerate(_list(spec.get("interfaces"), "spec.interfaces")):
        where = f"spec.interfaces[{index}]"
        iface = check_keys(item, INTERFACE_KEYS, where)
        dhcp = check_keys(iface.get("dhcp"), DHCP_KEYS, f"{where}.dhcp")
        netboot = check_keys(iface.get("netboot"), NETBOOT_KEYS, f"{where}.netboot")
        if "mac" not in dhcp:
            raise Invalid(f"{where}.dhcp.mac is required", field=f"{where}.dhcp.mac")
        ip = check_keys(dhcp.get("ip"), IP_KEYS, f"{where}.dhcp.ip")
        if index == 0:
            raw_arch = dhcp.get("arch") or "x86_64"
            arch = {"arm64": "aarch64"}.get(raw_arch, raw_arch) if isinstance(raw_arch, str) else ""
            uefi = bool(dhcp.get("uefi", False))
            hostname = dhcp.get("hostname")
            boot = _ipxe_boot(netboot, f"{where}.netboot")
        interfaces.append(
            {
                "mac": dhcp["mac"],
                "ip": ip.get("address") or None,
                "netmask": ip.get("netmask") or None,
                "gateway": ip.get("gateway") or None,
                "nameservers": dhcp.get("name_servers") or [],
                "hostname": dhcp.get("hostname"),
                "vlan": _vlan(dhcp.get("vlan_id"), f"{where}.dhcp.vlan_id"),
                "lease_time": dhcp.get("lease_time"),
                "netboot": {
                    "allowPXE": netboot.get("allowPXE", False),
                    "allowWorkflow": netboot.get("allowWorkflow", False),
                },
            }
        )
    disks = []
    for index, disk in enumerate(_list(spec.get("disks"), "spec.disks")):
        if not isinstance(disk, dict) or "device" not in disk:
            raise Invalid(
                f"spec.disks[{index}] needs a device, e.g. {{device: /dev/sda}}",
                field=f"spec.disks[{index}].device",
            )
        disks.append({"device": disk["device"]})
    return {
        "name": name,
        "project": namespace or "default",
        "arch": arch,
        "uefi": uefi,
        "hostname": hostname,
        "interfaces": interfaces,
        "disks": disks,
        "boot": boot,
        "metadata": spec.get("metadata") or {},
        "userData": spec.get("userData"),
    }


def _user_data(spec_fields: dict[str, Any]) -> dict[str, str]:
    """`userData` (text, "" when there is none, as Tinkerbell shows it), or `userDataBase64` for
    bytes that are not text: a template sees either exactly as the machine would be applied."""
    if spec_fields.get("user_data_base64") is not None:
        return {"userDataBase64": spec_fields["user_data_base64"]}
    return {"userData": spec_fields.get("user_data") or ""}


def hardware_view(
    *,
    name: str,
    project: str,
    labels: dict[str, str],
    spec_fields: dict[str, Any],
    original_spec: dict[str, Any] | None,
) -> dict[str, Any]:
    """The Tinkerbell Hardware object that templates render against.

    A machine applied as Hardware shows its spec as written; one applied in metalflow's own kind
    shows the equivalent Hardware spec derived from its fields.
    """
    if original_spec is not None:
        spec = original_spec
    else:
        spec = {
            "interfaces": [
                {
                    "dhcp": {
                        "mac": iface["mac"],
                        "hostname": iface.get("hostname") or spec_fields.get("hostname"),
                        "arch": spec_fields.get("arch"),
                        "uefi": spec_fields.get("uefi"),
                        "lease_time": iface.get("lease_time"),
                        "name_servers": iface.get("nameservers") or [],
                        "vlan_id": str(iface["vlan"]) if iface.get("vlan") else "",
                        "ip": {
                            "address": iface.get("ip") or "",
                            "netmask": iface.get("netmask") or "",
                            "gateway": iface.get("gateway") or "",
                        },
                    },
                    "netboot": {
                        "allowPXE": iface["netboot"]["allow_pxe"],
                        "allowWorkflow": iface["netboot"]["allow_workflow"],
                    },
                }
                for iface in spec_fields.get("interfaces", [])
            ],
            "disks": [{"device": disk["device"]} for disk in spec_fields.get("disks", [])],
            "metadata": spec_fields.get("metadata") or {},
            **_user_data(spec_fields),
        }
    return {"metadata": {"name": name, "namespace": project, "labels": labels}, "spec": spec}
