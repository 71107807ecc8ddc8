"""The EC2 instance metadata tree, and answering a path in it the way EC2 does.

cloud-init's EC2 crawler (`cloudinit.sources.helpers.ec2`) reads a directory's listing (one
entry per line, subdirectories with a trailing slash), recurses into each entry, and treats
`public-keys/` specially: its listing is `0=name` lines and the key itself sits at
`public-keys/0/openssh-key`. A directory answers with its listing with or without the slash; a
path that is not in the tree is a 404, as is `user-data` when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metalflow.metadata.instance import Instance

VERSIONS = ("2009-04-04", "latest")
"""The API versions served: the one cloud-init asks for first, and `latest`."""


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
    root: dict[str, Directory | bytes] = {"meta-data": Directory(dict(sorted(meta.items())))}
    if instance.user_data is not None:
        root["user-data"] = instance.user_data
    return Directory(root)


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
