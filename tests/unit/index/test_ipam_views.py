"""The index knows a machine by the addresses IPAM gave it, so its OS reaches the metadata
service from them, and forgets them when the machine's view is reloaded without them."""

from __future__ import annotations

import ipaddress

from metalflow.index.instance import Address, InterfaceFields, instance_from, private_routes
from metalflow.index.views import InterfaceView, MachineIndex, MachineView

PROVISIONING = "192.0.2.31"
PUBLIC4 = Address("198.51.100.1", "255.255.255.254", "198.51.100.0", 4, True, True, 31, id="b4")
PUBLIC6 = Address("2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "2001:db8::", 6, True,
                  True, 127, id="b6")  # fmt: skip


def view(*assigned: Address) -> MachineView:
    iface = InterfaceFields("52:54:00:00:5e:31", PROVISIONING, "255.255.255.0")
    return MachineView(
        id="m1",
        name="web1",
        hostname=None,
        arch="x86_64",
        uefi=True,
        state="ready",
        agent_token_generation=0,
        has_active_workflow=False,
        interfaces=(
            InterfaceView(
                iface.mac,
                ipaddress.IPv4Address(PROVISIONING),
                ipaddress.IPv4Address("255.255.255.0"),
                None,
                (),
                None,
                None,
                True,
                True,
            ),
        ),
        instance=instance_from(
            machine_id="m1",
            name="web1",
            hostname=None,
            interfaces=[iface],
            metadata={},
            user_data=None,
            assigned=assigned,
        ),
    )


def test_a_machine_is_found_by_its_ipam_addresses_and_its_provisioning_one() -> None:
    index = MachineIndex()
    index.replace_all([view(PUBLIC4, PUBLIC6)])

    for address in ("198.51.100.1", "2001:db8::1", PROVISIONING):
        found = index.by_address(address)
        assert found is not None and found.id == "m1"

    index.update(["m1"], [view()])
    assert index.by_address("198.51.100.1") is None
    assert index.by_address(PROVISIONING) is not None


def test_a_private_address_routes_its_rfc1918_network_else_its_project_block() -> None:
    assert private_routes("10.70.0.1", "10.70.0.0/25") == ("10.0.0.0/8",)
    assert private_routes("172.20.0.3", "172.20.0.0/25") == ("172.16.0.0/12",)
    assert private_routes("192.168.7.3", "192.168.7.0/25") == ("192.168.0.0/16",)
    assert private_routes("100.64.0.3", "100.64.0.0/25") == ("100.64.0.0/25",)
