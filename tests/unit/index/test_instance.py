"""Tinkerbell-shaped metadata wins; the machine's own fields fill the gaps; junk is skipped."""

from __future__ import annotations

from metalflow.index.instance import Instance, InterfaceFields, instance_from, prefix_length
from metalflow.metadata.netconfig import network_config

NIC = InterfaceFields(
    "52:54:00:00:00:01", "192.0.2.11", "255.255.255.0", "192.0.2.1", ["192.0.2.53"]
)


def make(metadata: dict[str, object], user_data: bytes | None = None) -> Instance:
    return instance_from(
        machine_id="0f3c",
        name="web1",
        hostname="web1.lab",
        interfaces=[NIC, InterfaceFields("52:54:00:00:00:02")],
        metadata=metadata,
        user_data=user_data,
    )


def test_machine_fields_fill_what_metadata_leaves_out() -> None:
    found = make({})
    assert (found.id, found.hostname) == ("0f3c", "web1.lab")
    [address] = found.addresses
    assert (address.address, address.cidr, address.gateway) == ("192.0.2.11", 24, "192.0.2.1")
    assert address.management and not address.public and address.family == 4
    assert [(nic.name, nic.mac) for nic in found.nics] == [
        ("eth0", "52:54:00:00:00:01"),
        ("eth1", "52:54:00:00:00:02"),
    ]
    assert found.nics[0].nameservers == ("192.0.2.53",)
    assert found.user_data is None


def test_the_machine_user_data_beats_the_metadata_copy_and_stays_bytes() -> None:
    assert make({"instance": {"userdata": "meta"}}).user_data == b"meta"
    assert make({"instance": {"userdata": "meta"}}, b"own").user_data == b"own"
    assert make({}, b"\x1f\x8b binary").user_data == b"\x1f\x8b binary"


def test_prefix_lengths() -> None:
    assert prefix_length("192.0.2.1", "255.255.255.0") == 24
    assert prefix_length("192.0.2.1", "24") == 24
    assert prefix_length("2001:db8::1", "64") == 64
    assert prefix_length("2001:db8::1", "ffff:ffff:ffff:ff00::") == 56
    assert prefix_length("2001:db8::1", "ffff::ffff") is None
    assert prefix_length("192.0.2.1", "255.0.255.0") is None


def test_junk_in_metadata_is_skipped_not_fatal() -> None:
    found = make(
        {
            "instance": {
                "ips": [
                    {"address": "not-an-ip"},
                    "nope",
                    {"address": "192.0.2.9", "netmask": "255.0.255.0"},
                    {"address": "2001:db8::9", "public": True, "gateway": "nope"},
                    {
                        "address": "2001:db8::10",
                        "netmask": "ffff:ffff:ffff:ffff::",
                        "gateway": "192.0.2.1",
                    },
                ],
                "tags": "not-a-list",
                "ssh_keys": [None, "", "ssh-ed25519 AAAA"],
                "operating_system": {"slug": "debian_12", "nested": {"x": 1}},
            },
            "facility": "nope",
        }
    )
    assert [(a.address, a.family, a.cidr) for a in found.addresses] == [
        ("2001:db8::9", 6, 128),
        ("2001:db8::10", 6, 64),
    ]
    assert [a.gateway for a in found.addresses] == [None, None], "junk and other family"
    assert network_config(found)["version"] == 2, "no junk reaches the network config"
    assert found.tags == () and found.ssh_keys == ("ssh-ed25519 AAAA",)
    assert found.operating_system == {"slug": "debian_12"}
    assert found.facility == ""
