"""SSH keys through the official clients over HTTPS: a user's own and a project's, created,
listed, read, updated (PATCH from packet-python, PUT from equinix-metal) and deleted; a key
that does not parse is refused naming `body.key` and why; another tenant's key is a 404."""

from __future__ import annotations

import packet
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from equinix_metal.api.ssh_keys_api import SSHKeysApi
from equinix_metal.exceptions import ApiException
from equinix_metal.models.ssh_key_create_input import SSHKeyCreateInput
from equinix_metal.models.ssh_key_input import SSHKeyInput

from metalflow.db.base import utcnow
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.policy import OrgRole, ProjectRole
from tests.integration.metal_clients import MetalCloud, cloud  # noqa: F401


@pytest.fixture(autouse=True)
def ca_bundle(cloud: MetalCloud, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.ca))


def new_key(comment: str) -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}"


def test_packet_python_creates_lists_gets_updates_and_deletes_its_keys(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    manager = cloud.packet(cloud.a)
    line = new_key("ada@laptop")
    created = manager.create_ssh_key("laptop", "  " + line.replace(" ", "   ") + "\n")
    assert created.key == line
    assert created.owner == f"/metal/v1/users/{cloud.a.user_id}"
    assert len(created.fingerprint.split(":")) == 16
    assert [key.id for key in manager.list_ssh_keys()] == [created.id]
    assert manager.get_ssh_key(created.id).label == "laptop"
    created.label = "work laptop"
    created.update()
    assert manager.get_ssh_key(created.id).label == "work laptop"

    project_line = new_key("deploy")
    shared = manager.create_project_ssh_key(cloud.a.project_id, "deploy", project_line)
    assert shared.owner == f"/metal/v1/projects/{cloud.a.project_id}"
    assert sorted(key.id for key in manager.list_ssh_keys()) == sorted([created.id, shared.id])
    again = manager.create_project_ssh_key(cloud.a.project_id, "deploy", project_line)
    assert again.id == shared.id, "a second create finds the first (packet-python's retry)"
    assert manager.get_project(cloud.a.project_id).ssh_keys == [
        {"href": f"/metal/v1/ssh-keys/{shared.id}"}
    ]
    shared.delete()
    created.delete()
    assert manager.list_ssh_keys() == []


def test_equinix_metal_does_the_same_with_put(cloud: MetalCloud) -> None:  # noqa: F811
    with cloud.equinix(cloud.a) as client:
        keys = SSHKeysApi(client)
        made = keys.create_ssh_key(SSHKeyCreateInput(label="sdk", key=new_key("ada@sdk")))
        assert made.id is not None and made.entity is not None
        assert made.entity.href == f"/metal/v1/users/{cloud.a.user_id}"
        listed = keys.find_ssh_keys()
        assert [key.id for key in listed.ssh_keys or []] == [made.id]
        assert keys.find_ssh_key_by_id(made.id).fingerprint == made.fingerprint
        replacement = new_key("ada@new")
        updated = keys.update_ssh_key(made.id, SSHKeyInput(label="sdk2", key=replacement))
        assert (updated.label, updated.key) == ("sdk2", replacement)
        assert updated.fingerprint != made.fingerprint
        project = keys.create_project_ssh_key(
            cloud.a.project_id, SSHKeyCreateInput(label="ci", key=new_key("ci"))
        )
        in_project = keys.find_project_ssh_keys(cloud.a.project_id)
        assert [key.id for key in in_project.ssh_keys or []] == [project.id]
        assert project.id is not None
        keys.delete_ssh_key(project.id)
        keys.delete_ssh_key(made.id)
        with pytest.raises(ApiException) as gone:
            keys.find_ssh_key_by_id(made.id)
        assert gone.value.status == 404


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("ssh-rsa AAAA", "the base64 field is too short to be a key"),
        ("not a key", "'not' is not a key type taken here"),
    ],
)
def test_a_key_that_does_not_parse_is_a_422_naming_body_key_and_why(
    cloud: MetalCloud,  # noqa: F811
    key: str,
    reason: str,
) -> None:
    manager = cloud.packet(cloud.a)
    with pytest.raises(packet.baseapi.ResponseError) as refused:
        manager.create_ssh_key("bad", key)
    assert refused.value.response.status_code == 422
    assert f"body.key: not an OpenSSH public key: {reason}" in str(refused.value)
    assert manager.list_ssh_keys() == []


def test_another_tenants_keys_are_the_404_of_a_missing_key(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    ada = cloud.packet(cloud.a)
    own = ada.create_ssh_key("laptop", new_key("ada"))
    shared = ada.create_project_ssh_key(cloud.a.project_id, "deploy", new_key("deploy"))
    bob = cloud.packet(cloud.b)
    for key_id in (own.id, shared.id):
        for method in ("GET", "PATCH", "DELETE"):
            with pytest.raises(packet.baseapi.ResponseError) as hidden:
                bob.call_api(f"ssh-keys/{key_id}", type=method, params={"label": "x"})
            assert hidden.value.response.status_code == 404
            assert f"SSH key {key_id!r} not found" in str(hidden.value)
    with pytest.raises(packet.baseapi.ResponseError) as project:
        bob.create_project_ssh_key(cloud.a.project_id, "mine", new_key("bob"))
    assert project.value.response.status_code == 404
    assert bob.list_ssh_keys() == []
    with cloud.equinix(cloud.b) as client, pytest.raises(ApiException) as listing:
        SSHKeysApi(client).find_project_ssh_keys(cloud.a.project_id)
    assert listing.value.status == 404
    assert ada.get_ssh_key(own.id).label == "laptop"


def test_a_viewer_reads_project_keys_but_an_editor_writes_them(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    with cloud.live.services.db.write() as session:
        tenancy.add_org_member(session, cloud.a.organization_id, cloud.b.user_id, OrgRole.MEMBER)
        tenancy.add_project_member(session, cloud.a.project_id, cloud.b.user_id, ProjectRole.VIEWER)
        key = tenancy.create_key(session, "ci", now=utcnow(), project_id=cloud.a.project_id)
    bob = cloud.packet(cloud.b)
    with pytest.raises(packet.baseapi.ResponseError) as refused:
        bob.create_project_ssh_key(cloud.a.project_id, "bob", new_key("bob"))
    assert refused.value.response.status_code == 403
    assert "write needs the project role editor (you are viewer)" in str(refused.value)
    with cloud.http(key.secret) as project_key:
        made = project_key.post("/ssh-keys", json={"key": new_key("ci")})
        assert made.status_code == 201, made.text
        assert made.json()["owner"] == {"href": f"/metal/v1/projects/{cloud.a.project_id}"}
        assert made.json()["label"] == "ci"
    assert [key.id for key in bob.list_ssh_keys()] == [made.json()["id"]]
