"""The EC2 instance metadata tree, and answering a path in it the way EC2 does.

cloud-init's EC2 crawler (`cloudinit.sources.helpers.ec2`) reads a directory's listing (one
entry per line, subdirectories with a trailing slash), recurses into each entry, and treats
`public-keys/` specially: its listing is `0=name` lines and the key itself sits at
`public-keys/0/openssh-key`. A directory answers with its listing with or without the slash; a
path that is not in the tree is a 404, as is `user-data` when there is none.

`mac` is the first NIC's. `network/interfaces/macs/MAC/` holds what cloud-init's DataSourceEc2
makes network config of (`convert_ec2_metadata_network_config`): DHCP on each NIC listed, plus
its second and later `local-ipv4s`/`ipv6s` as static addresses with the prefix of the NIC's
subnet. So a NIC is listed only with an address on its own link where network-config puts it
(a bond's are the first NIC's, a VLAN's no NIC's: EC2 has neither), and its lists hold only the
addresses in the subnet of its first one, as EC2 keeps a NIC in one subnet per family;
`public-ipv4s` (NAT on EC2) cloud-init does not configure. With no NIC listed there is no
`network/`, and cloud-init falls back to DHCP on one NIC. Bonds, VLANs, routes and the other
addresses are in the NoCloud network-config. There is no `vpc-id`: cloud-init then takes the
machine for EC2-Classic and renders its network config again at every boot, so an address
changed in metalflow applies at the next reboot.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from metalflow.index.instance import Address, Instance
from metalflow.metadata.netconfig import untagged_nic

VERSIONS = ("2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest")
"""The API versions served, all the same tree: cloud-init 22.4 asks for 2021-03-23, then
2018-09-24 and 2016-09-02, then 2009-04-04; serving them saves three 404s per boot."""


@dataclass(slots=True)
class Directory:
    entries: dict[str, Directory | bytes] = field(default_factory=dict)
    listing: list[str] | None = None
    """Overrides the listing made from the entries (public-keys' `0=name` lines)."""

    def lines(self) -> list[str]:
        if self.listing is not None:
            return self.listing
        return [
            name + "/" if isinstance(value, Directory) else name
            for name, value in self.entries.items()
        ]


def _text(value: str) -> bytes:
    return value.encode()


def tree(instance: Instance) -> Directory:
    """The whole tree of one instance: `meta-data/...` and, if it has any, `user-data`."""
    meta: dict[str, Directory | bytes] = {
        "hostname": _text(instance.hostname),
        "instance-id": _text(instance.id),
        "local-hostname": _text(instance.hostname),
    }
    for name, family, public in (
        ("local-ipv4", 4, False),
        ("public-ipv4", 4, True),
        ("public-ipv6", 6, True),
    ):
        address = instance.first_address(family, public=public)
        if address is not None:
            meta[name] = _text(address)
    if instance.ssh_keys:
        keys = {
            str(index): Directory({"openssh-key": _text(key)})
            for index, key in enumerate(instance.ssh_keys)
        }
        names = [f"{index}={key_name(key, index)}" for index, key in enumerate(instance.ssh_keys)]
        meta["public-keys"] = Directory(dict(keys), listing=names)
    if instance.facility:
        meta["placement"] = Directory({"availability-zone": _text(instance.facility)})
    if instance.plan:
        meta["instance-type"] = _text(instance.plan)
    if instance.tags:
        meta["tags"] = Directory({"instance": Directory(dict(_tags(instance.tags)))})
    if instance.operating_system:
        meta["operating-system"] = Directory(
            {key: _text(value) for key, value in sorted(instance.operating_system.items())}
        )
    if instance.nics:
        meta["mac"] = _text(instance.nics[0].mac.lower())
    macs = _macs(instance)
    if macs.entries:
        meta["network"] = Directory({"interfaces": Directory({"macs": macs})})
    root: dict[str, Directory | bytes] = {"meta-data": Directory(dict(sorted(meta.items())))}
    if instance.user_data is not None:
        root["user-data"] = instance.user_data
    root["vendor-data"] = b""  # metalflow adds nothing to the user's cloud-config
    return Directory(root)


def _macs(instance: Instance) -> Directory:
    """A directory by lower-case MAC for each NIC with an address on its own link (cloud-init
    would wait for DHCP on the others), `device-number` its place in the inventory."""
    macs: dict[str, Directory | bytes] = {}
    for index, nic in enumerate(instance.nics):
        mine = [a for a in instance.addresses if untagged_nic(instance, a) == index]
        if not mine:
            continue
        mac = nic.mac.lower()
        entries: dict[str, Directory | bytes] = {
            "device-number": _text(str(index)),
            "mac": _text(mac),
        }
        private4 = [a for a in mine if a.family == 4 and not a.public]
        if private4:
            subnet, inside, blocks = _subnet(private4)
            entries["local-ipv4s"] = _lines(inside)
            entries["subnet-ipv4-cidr-block"] = _text(subnet)
            entries["vpc-ipv4-cidr-block"] = _text(subnet)
            entries["vpc-ipv4-cidr-blocks"] = _lines(blocks)
        public4 = [a.address for a in mine if a.family == 4 and a.public]
        if public4:
            entries["public-ipv4s"] = _lines(public4)
        ipv6 = [a for a in mine if a.family == 6]
        if ipv6:
            subnet, inside, blocks = _subnet(ipv6)
            entries["ipv6s"] = _lines(inside)
            entries["subnet-ipv6-cidr-blocks"] = _text(subnet)
            # EC2's name is the plural one; cloud-init reads the singular for the prefix.
            entries["subnet-ipv6-cidr-block"] = _text(subnet)
            entries["vpc-ipv6-cidr-blocks"] = _lines(blocks)
        macs[mac] = Directory(dict(sorted(entries.items())))
    return Directory(macs)


def _subnet(addresses: list[Address]) -> tuple[str, list[str], list[str]]:
    """The first address's subnet, the addresses in that same subnet (the first first), and
    every subnet."""
    networks = [ipaddress.ip_network(f"{a.address}/{a.cidr}", strict=False) for a in addresses]
    inside = [a.address for a, net in zip(addresses, networks, strict=True) if net == networks[0]]
    return str(networks[0]), inside, [str(net) for net in dict.fromkeys(networks)]


def _lines(values: list[str]) -> bytes:
    """A multi-value leaf: one value a line, no trailing newline (cloud-init reads one value as a
    string, several as a list)."""
    return "\n".join(values).encode()


def key_name(key: str, index: int) -> str:
    """An OpenSSH key's comment (its third field), else `key-N`: the name the listing shows."""
    parts = key.split(None, 2)
    comment = " ".join(parts[2].split()) if len(parts) == 3 else ""
    return comment or f"key-{index}"


def _tags(tags: tuple[str, ...]) -> dict[str, Directory | bytes]:
    """`key=value` tags as EC2's key → value; a plain tag is a key with an empty value."""
    found: dict[str, Directory | bytes] = {}
    for tag in tags:
        name, _, value = tag.partition("=")
        key = "_".join(name.replace("/", " ").split())
        if key:
            found[key] = _text(value)
    return found


def lookup(root: Directory, path: str) -> bytes | None:
    """What GET of `path` (below the version, e.g. `meta-data/public-keys/0/`) answers; None
    for a 404."""
    node: Directory | bytes = root
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, Directory) or part not in node.entries:
            return None
        node = node.entries[part]
    if isinstance(node, Directory):
        return "\n".join(node.lines()).encode()
    return node
