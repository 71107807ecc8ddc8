"""Who am I on the Metal API, as the official clients see it over HTTPS: the user, their
organizations and projects (list, create, update, delete), and another tenant's project as the
404 of one that does not exist. Both databases."""

from __future__ import annotations

import packet
import pytest
from equinix_metal.api.organizations_api import OrganizationsApi
from equinix_metal.api.projects_api import ProjectsApi
from equinix_metal.api.users_api import UsersApi
from equinix_metal.exceptions import ApiException
from equinix_metal.models.project_create_from_root_input import ProjectCreateFromRootInput
from equinix_metal.models.project_create_input import ProjectCreateInput
from equinix_metal.models.project_update_input import ProjectUpdateInput

from metalflow.db.base import utcnow
from metalflow.tenancy import service as tenancy
from tests.integration.metal_clients import MetalCloud, cloud  # noqa: F401


@pytest.fixture(autouse=True)
def ca_bundle(cloud: MetalCloud, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.ca))


def test_packet_python_gets_the_user_lists_creates_renames_and_deletes_projects(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    manager = cloud.packet(cloud.a)
    user = manager.get_user()
    assert user["id"] == cloud.a.user_id
    assert user["email"] == cloud.a.email
    assert (user["first_name"], user["last_name"]) == ("Ada", "Tester")
    assert user["default_organization_id"] == cloud.a.organization_id
    assert user["href"] == f"/metal/v1/users/{cloud.a.user_id}"

    projects = manager.list_projects()
    assert [project.id for project in projects] == [cloud.a.project_id]
    assert manager.total == 1

    created = manager.create_project("ada-api")
    assert created.name == "ada-api"
    assert manager.get_project(created.id).members == [
        {"href": f"/metal/v1/users/{cloud.a.user_id}"}
    ]
    created.name = "ada-edge"
    created.update()
    assert manager.get_project(created.id).name == "ada-edge"
    orgs = manager.list_organizations()
    assert [org.id for org in orgs] == [cloud.a.organization_id]
    org_projects = manager.list_organization_projects(cloud.a.organization_id)
    assert sorted(project.name for project in org_projects) == ["ada-edge", "ada-web"]
    other = manager.create_organization_project(cloud.a.organization_id, "ada-batch")
    assert manager.get_organization(cloud.a.organization_id).projects is not None
    other.delete()
    created.delete()
    assert [project.id for project in manager.list_projects()] == [cloud.a.project_id]


def test_equinix_metal_reads_the_same_through_its_pydantic_models(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    with cloud.equinix(cloud.a) as client:
        user = UsersApi(client).find_current_user()
        assert user.id == cloud.a.user_id and user.full_name == "Ada Tester"
        projects_api = ProjectsApi(client)
        listed = projects_api.find_projects()
        assert listed.meta is not None and listed.meta.total == 1
        assert [project.id for project in listed.projects or []] == [cloud.a.project_id]
        wanted = ProjectCreateFromRootInput(name="ada-sdk", organization_id=cloud.a.organization_id)
        created = projects_api.create_project(wanted)
        assert created.organization is not None
        assert created.organization.href == f"/metal/v1/organizations/{cloud.a.organization_id}"
        assert created.id is not None
        renamed = projects_api.update_project(created.id, ProjectUpdateInput(name="ada-sdk2"))
        assert renamed.name == "ada-sdk2"
        assert projects_api.find_project_by_id(created.id).name == "ada-sdk2"
        organizations = OrganizationsApi(client)
        found = organizations.find_organizations()
        assert [org.id for org in found.organizations or []] == [cloud.a.organization_id]
        organization = organizations.find_organization_by_id(cloud.a.organization_id)
        assert organization.name == "ada-org"
        in_org = organizations.create_organization_project(
            cloud.a.organization_id, ProjectCreateInput(name="ada-org-sdk")
        )
        page = organizations.find_organization_projects(cloud.a.organization_id, per_page=2)
        assert page.meta is not None and page.meta.total == 3 and page.meta.next is not None
        assert in_org.id is not None
        projects_api.delete_project(in_org.id)
        projects_api.delete_project(created.id)
        with pytest.raises(ApiException) as missing:
            projects_api.find_project_by_id(created.id)
        assert missing.value.status == 404


def test_a_tenant_gets_the_404_of_a_missing_project_for_anothers(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    bob = cloud.packet(cloud.b)
    with pytest.raises(packet.baseapi.ResponseError) as seen:
        bob.get_project(cloud.a.project_id)
    assert seen.value.response.status_code == 404
    assert f"project {cloud.a.project_id!r} not found" in str(seen.value)
    with pytest.raises(packet.baseapi.ResponseError) as renamed:
        bob.call_api(f"projects/{cloud.a.project_id}", type="PATCH", params={"name": "mine"})
    assert renamed.value.response.status_code == 404
    with pytest.raises(packet.baseapi.ResponseError) as deleted:
        bob.call_api(f"projects/{cloud.a.project_id}", type="DELETE")
    assert deleted.value.response.status_code == 404
    assert [project.id for project in bob.list_projects()] == [cloud.b.project_id]
    with cloud.equinix(cloud.b) as client, pytest.raises(ApiException) as org:
        OrganizationsApi(client).find_organization_by_id(cloud.a.organization_id)
    assert org.value.status == 404
    with cloud.http() as admin:
        assert admin.get(f"/projects/{cloud.a.project_id}").status_code == 200
        assert admin.get("/projects").json()["meta"]["total"] == 2


def test_a_project_without_organization_is_asked_for_one_when_the_caller_has_several(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    with cloud.http(cloud.a.key) as http:
        second = http.post(f"/organizations/{cloud.a.organization_id}/projects", json={})
        assert second.status_code == 422
        assert second.json() == {"errors": ["body.name: Field required"]}
    with cloud.live.services.db.write() as session:
        tenancy.create_organization(session, "ada-second", cloud.a.user_id)
    with pytest.raises(packet.baseapi.ResponseError) as asked:
        cloud.packet(cloud.a).create_project("ada-where")
    assert asked.value.response.status_code == 422
    message = str(asked.value)
    assert "body.organization_id: organization_id is missing: you belong to 2" in message


def test_get_user_with_a_project_key_says_a_user_key_is_needed_and_the_admin_is_the_provider(
    cloud: MetalCloud,  # noqa: F811
) -> None:
    with cloud.live.services.db.write() as session:
        key = tenancy.create_key(session, "ci", now=utcnow(), project_id=cloud.a.project_id)
    with cloud.http(key.secret) as http:
        answer = http.get("/user")
    assert answer.status_code == 422
    assert answer.json()["errors"][0].startswith("x-auth-token: a project key acts for a project")
    with cloud.http() as admin:
        provider = admin.get("/user").json()
    assert provider["id"] == "provider"
