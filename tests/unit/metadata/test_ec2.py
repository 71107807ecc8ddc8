"""The EC2 tree answers paths the way cloud-init's crawler walks them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metalflow.metadata.ec2 import Directory, key_name, lookup, tree
from metalflow.metadata.instance import InterfaceFields, instance_from

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
    assert get(root, "") == "meta-data/\nuser-data"
    listing = get(root, "meta-data/")
    assert listing is not None and listing.splitlines() == [
        "hostname",
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
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
    assert get(root, "") == "meta-data/"  # no user-data: EC2 answers 404 for it
    assert get(root, "user-data") is None
    assert get(root, "meta-data/instance-id") == "0f3c"
    assert get(root, "meta-data/local-hostname") == "web1"
    assert get(root, "meta-data/local-ipv4") == "192.0.2.11"
    assert get(root, "meta-data/public-keys/") is None
    assert get(root, "meta-data/nothing") is None
    assert get(root, "meta-data/hostname/extra") is None
    assert get(root, "meta-data/../user-data") is None


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


@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), max_size=5),
    st.lists(
        st.from_regex(r"ssh-ed25519 [A-Za-z0-9+/]{8,20}( [a-z@.]{1,10})?", fullmatch=True),
        max_size=4,
    ),
    st.one_of(st.none(), st.binary(max_size=64)),
)
def test_every_listed_entry_can_be_fetched(
    tags: list[str], keys: list[str], user_data: bytes | None
) -> None:
    instance = instance_from(
        machine_id="m",
        name="n",
        hostname=None,
        interfaces=[],
        metadata={"instance": {"tags": tags, "ssh_keys": keys}},
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
        assert [v.decode() for v in crawled["public-keys"].values()] == keys  # type: ignore[union-attr]
