"""The EC2 tree answers paths the way cloud-init's crawler walks them."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from metalflow.index.instance import InterfaceFields, instance_from
from metalflow.metadata.ec2 import Directory, key_name, lookup, tree

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0 ops@example"


def web1(**metadata: object) -> Directory:
    return tree(
        instance_from(
            machine_id="0f3c",
            name="web1",
            hostname=None,
            interfaces=[InterfaceFields("52:54:00:00:00:01", "192.0.2.11", "255.255.255.0")],
            metadata=metadata,
            user_data=None,
        )
    )


def get(root: Directory, path: str) -> str | None:
    found = lookup(root, path)
    return None if found is None else found.decode()


def test_listings_and_leaves() -> None:
    root = web1(
        instance={
            "id": "i-1",
            "hostname": "web1.example",
            "ssh_keys": [KEY, "ssh-rsa AAAAB3 "],
            "tags": ["role=web", "canary"],
            "operating_system": {"slug": "debian_12", "distro": "debian", "version": "12"},
            "userdata": "#cloud-config\n",
            "ips": [
                {"address": "198.51.100.7", "netmask": "255.255.255.0", "public": True},
                {"address": "2001:db8::7", "netmask": "64", "family": 6, "public": True},
                {"address": "192.0.2.11", "netmask": "255.255.255.0", "management": True},
            ],
        },
        facility={"facility_code": "ams1", "plan_slug": "c3.small"},
    )
    assert get(root, "") == "meta-data/\nuser-data\nvendor-data"
    assert get(root, "vendor-data") == ""
    listing = get(root, "meta-data/")
    assert listing is not None and listing.splitlines() == [
        "hostname",
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "mac",
        "network/",
        "operating-system/",
        "placement/",
        "public-ipv4",
        "public-ipv6",
        "public-keys/",
        "tags/",
    ]
    assert get(root, "meta-data") == listing  # with or without the slash
    assert get(root, "meta-data/instance-id") == "i-1"
    assert get(root, "meta-data/hostname") == "web1.example"
    assert get(root, "meta-data/local-ipv4") == "192.0.2.11"
    assert get(root, "meta-data/public-ipv4") == "198.51.100.7"
    assert get(root, "meta-data/public-ipv6") == "2001:db8::7"
    assert get(root, "meta-data/public-keys/") == "0=ops@example\n1=key-1"
    assert get(root, "meta-data/public-keys/0/") == "openssh-key"
    assert get(root, "meta-data/public-keys/0/openssh-key") == KEY
    assert get(root, "meta-data/public-keys/1/openssh-key") == "ssh-rsa AAAAB3"
    assert get(root, "meta-data/placement/availability-zone") == "ams1"
    assert get(root, "meta-data/tags/instance/") == "role\ncanary"
    assert get(root, "meta-data/tags/instance/role") == "web"
    assert get(root, "meta-data/operating-system/distro") == "debian"
    assert get(root, "user-data") == "#cloud-config\n"


def test_a_bare_machine_still_has_id_hostname_and_address() -> None:
    root = web1()
    assert get(root, "") == "meta-data/\nvendor-data"  # no user-data: EC2 answers 404 for it
    assert get(root, "user-data") is None
    assert get(root, "meta-data/instance-id") == "0f3c"
    assert get(root, "meta-data/local-hostname") == "web1"
    assert get(root, "meta-data/local-ipv4") == "192.0.2.11"
    assert get(root, "meta-data/public-keys/") is None
    assert get(root, "meta-data/nothing") is None
    assert get(root, "meta-data/hostname/extra") is None
    assert get(root, "meta-data/../user-data") is None


MACS = "meta-data/network/interfaces/macs/"


def test_each_nic_with_an_address_of_its_own_is_listed_by_mac() -> None:
    """cloud-init would DHCP on every NIC listed: one without an address (or only a VLAN's,
    which EC2 cannot say) would hold up the boot."""
    root = tree(
        instance_from(
            machine_id="0f3c",
            name="web1",
            hostname=None,
            interfaces=[
                InterfaceFields("52:54:00:00:00:01", "192.0.2.11", "255.255.255.0", "192.0.2.1"),
                InterfaceFields("52:54:00:00:00:02"),
                InterfaceFields("52:54:00:00:00:03", "198.51.100.5", "255.255.255.128"),
                InterfaceFields("52:54:00:00:00:04", "203.0.113.5", "255.255.255.0", vlan=200),
            ],
            metadata={},
            user_data=None,
        )
    )
    assert get(root, "meta-data/mac") == "52:54:00:00:00:01"
    assert get(root, "meta-data/network/") == "interfaces/"
    assert get(root, "meta-data/network/interfaces/") == "macs/"
    assert get(root, MACS) == "52:54:00:00:00:01/\n52:54:00:00:00:03/"
    first, third = f"{MACS}52:54:00:00:00:01/", f"{MACS}52:54:00:00:00:03/"
    assert get(root, first) == (
        "device-number\nlocal-ipv4s\nmac\nsubnet-ipv4-cidr-block\n"
        "vpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks"
    )
    assert get(root, first + "device-number") == "0"
    assert get(root, first + "mac") == "52:54:00:00:00:01"
    assert get(root, first + "local-ipv4s") == "192.0.2.11"
    assert get(root, first + "subnet-ipv4-cidr-block") == "192.0.2.0/24"
    assert get(root, first + "vpc-ipv4-cidr-blocks") == "192.0.2.0/24"
    assert get(root, third + "device-number") == "2"  # its place among the machine's NICs
    assert get(root, third + "local-ipv4s") == "198.51.100.5"
    assert get(root, third + "subnet-ipv4-cidr-block") == "198.51.100.0/25"
    assert get(root, f"{MACS}52:54:00:00:00:02/") is None
    assert get(root, f"{MACS}52:54:00:00:00:04/") is None


def test_a_bond_is_its_first_nic_and_no_address_means_no_network() -> None:
    bonded = tree(
        instance_from(
            machine_id="0f3c",
            name="web1",
            hostname=None,
            interfaces=[
                InterfaceFields("52:54:00:00:00:01", "192.0.2.11", "255.255.255.0"),
                InterfaceFields("52:54:00:00:00:02", "192.0.2.12", "255.255.255.0"),
            ],
            metadata={"instance": {"network": {"bonding": {"mode": 4}}}},
            user_data=None,
        )
    )
    assert get(bonded, MACS) == "52:54:00:00:00:01/"
    assert get(bonded, f"{MACS}52:54:00:00:00:01/local-ipv4s") == "192.0.2.11\n192.0.2.12"
    # An empty macs/ would have cloud-init write a network config with no NIC in it.
    bare = tree(
        instance_from(
            machine_id="0f3c",
            name="web1",
            hostname=None,
            interfaces=[InterfaceFields("52:54:00:00:00:01")],
            metadata={},
            user_data=None,
        )
    )
    assert get(bare, "meta-data/mac") == "52:54:00:00:00:01"
    assert get(bare, "meta-data/network/") is None


def test_a_nic_lists_only_the_addresses_of_its_first_subnet() -> None:
    """cloud-init gives every secondary address the prefix of `subnet-ipv4-cidr-block`."""
    ips = [
        {"address": "10.0.0.3", "netmask": "255.255.255.128", "gateway": "10.0.0.1"},
        {"address": "10.0.0.9", "netmask": "255.255.255.128"},
        {"address": "172.16.0.5", "netmask": "255.255.255.0"},
        {"address": "10.0.0.20", "netmask": "255.255.255.0"},  # same start, another prefix
        {"address": "198.51.100.7", "netmask": "255.255.255.254", "public": True},
        {"address": "2001:db8::7", "netmask": "64", "public": True},
        {"address": "fd00::5", "netmask": "64"},
        {"address": "2001:db8::8", "netmask": "64", "public": True},
    ]
    root = tree(
        instance_from(
            machine_id="0f3c",
            name="web1",
            hostname=None,
            interfaces=[InterfaceFields("52:54:00:AB:00:01"), InterfaceFields("52:54:00:ab:00:02")],
            metadata={"instance": {"ips": ips}},
            user_data=None,
        )
    )
    assert get(root, "meta-data/mac") == "52:54:00:ab:00:01"
    nic = f"{MACS}52:54:00:ab:00:01/"
    assert get(root, nic + "local-ipv4s") == "10.0.0.3\n10.0.0.9"
    assert get(root, nic + "subnet-ipv4-cidr-block") == "10.0.0.0/25"
    assert get(root, nic + "vpc-ipv4-cidr-block") == "10.0.0.0/25"
    assert get(root, nic + "vpc-ipv4-cidr-blocks") == "10.0.0.0/25\n172.16.0.0/24\n10.0.0.0/24"
    assert get(root, nic + "public-ipv4s") == "198.51.100.7"
    assert get(root, nic + "ipv6s") == "2001:db8::7\n2001:db8::8"
    assert get(root, nic + "subnet-ipv6-cidr-blocks") == "2001:db8::/64"
    assert get(root, nic + "subnet-ipv6-cidr-block") == "2001:db8::/64"
    assert get(root, nic + "vpc-ipv6-cidr-blocks") == "2001:db8::/64\nfd00::/64"
    # Tinkerbell's addresses name no NIC: they are the first NIC's, as in network-config.
    assert get(root, MACS) == "52:54:00:ab:00:01/"


def test_key_names() -> None:
    assert key_name(KEY, 0) == "ops@example"
    assert key_name("ssh-rsa AAAA", 3) == "key-3"
    assert key_name("ssh-rsa AAAA two words", 0) == "two words"


def crawl(root: Directory, path: str = "meta-data/") -> dict[str, object]:
    """cloud-init's walk: listings recursed, `public-keys` by its `N=name` lines."""
    out: dict[str, object] = {}
    listing = lookup(root, path)
    assert listing is not None
    for line in listing.decode().splitlines():
        if path.endswith("public-keys/"):
            index = line.split("=", 1)[0]
            out[index] = lookup(root, f"{path}{index}/openssh-key")
        elif line.endswith("/"):
            out[line[:-1]] = crawl(root, path + line)
        else:
            out[line] = lookup(root, path + line)
    return out


ips = st.lists(
    st.tuples(st.ip_addresses(), st.integers(0, 128), st.booleans()).map(
        lambda found: {
            "address": str(found[0]),
            "netmask": str(found[1] % (33 if found[0].version == 4 else 129)),
            "public": found[2],
        }
    ),
    max_size=8,
)
interfaces = st.lists(st.tuples(st.booleans(), st.none() | st.ip_addresses(v=4)), max_size=3).map(
    lambda found: [
        InterfaceFields(
            f"52:54:00:ab:cd:0{index}".upper() if upper else f"52:54:00:ab:cd:0{index}",
            str(ip) if ip else None,
            "255.255.255.0",
        )
        for index, (upper, ip) in enumerate(found)
    ]
)
"""Up to three NICs, some with an address of their own, some MACs in upper case."""


@given(
    st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=20), max_size=5),
    st.lists(
        st.from_regex(r"ssh-ed25519 [A-Za-z0-9+/]{8,20}( [a-z@.]{1,10})?", fullmatch=True),
        max_size=4,
    ),
    st.one_of(st.none(), st.binary(max_size=64)),
    interfaces,
    ips,
)
def test_every_listed_entry_can_be_fetched(
    tags: list[str],
    keys: list[str],
    user_data: bytes | None,
    nics: list[InterfaceFields],
    addresses: list[dict[str, object]],
) -> None:
    instance = instance_from(
        machine_id="m",
        name="n",
        hostname=None,
        interfaces=nics,
        metadata={"instance": {"tags": tags, "ssh_keys": keys, "ips": addresses}},
        user_data=user_data,
    )
    root = tree(instance)
    crawled = crawl(root)

    def leaves(node: object) -> list[object]:
        if isinstance(node, dict):
            return [leaf for value in node.values() for leaf in leaves(value)]
        return [node]

    assert None not in leaves(crawled)
    assert (lookup(root, "user-data") is None) == (user_data is None)
    if keys:
        assert isinstance(crawled["public-keys"], dict)
        assert [v.decode() for v in crawled["public-keys"].values()] == keys


@given(interfaces, ips)
def test_cloudinit_configures_only_addresses_the_machine_has(
    nics: list[InterfaceFields], addresses: list[dict[str, object]]
) -> None:
    """What DataSourceEc2 makes of a NIC: the listed addresses after the first, each with the
    prefix of the subnet block (convert_ec2_metadata_network_config)."""
    instance = instance_from(
        machine_id="m",
        name="n",
        hostname=None,
        interfaces=nics,
        metadata={"instance": {"ips": addresses}},
        user_data=None,
    )
    held = {f"{a.address}/{a.cidr}" for a in instance.addresses}
    root = tree(instance)
    listed = get(root, MACS)
    assert listed != "", "never an empty macs/: cloud-init would configure no NIC at all"
    macs = [line.rstrip("/") for line in (listed or "").splitlines()]
    if instance.nics and any(a.nic is None for a in instance.addresses):
        assert macs[0] == instance.nics[0].mac.lower()
    numbers = {nic.mac.lower(): str(index) for index, nic in enumerate(instance.nics)}
    assert macs == [mac for mac in numbers if mac in macs]
    for mac in macs:
        nic = f"{MACS}{mac}/"
        assert get(root, nic + "device-number") == numbers[mac]
        lists = [get(root, nic + key) for key in ("local-ipv4s", "public-ipv4s", "ipv6s")]
        assert any(lists)
        for key, block in (
            ("local-ipv4s", "subnet-ipv4-cidr-block"),
            ("ipv6s", "subnet-ipv6-cidr-block"),
        ):
            found = get(root, nic + key)
            if found is None:
                assert get(root, nic + block) is None
                continue
            cidr = get(root, nic + block)
            assert cidr is not None
            prefix = ipaddress.ip_network(cidr).prefixlen
            assert {f"{address}/{prefix}" for address in found.splitlines()} <= held
