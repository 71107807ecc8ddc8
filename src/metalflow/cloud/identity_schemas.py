"""Who-am-I shapes of the Metal API: user, organizations, projects, in Equinix Metal's JSON.

Read off the clients that are the contract: equinix-metal 0.11.0's `models/user.py`,
`organization.py`, `project.py`, `project_create_from_root_input.py`, `project_update_input.py`
and packet-python 1.44.3's `Project`, `Organization` and `Manager.list_projects` (which reads
`meta.total`). Fields metalflow has no data for (billing, avatars, 2FA) are left out, which both
clients take: every field of these models is optional.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, field_validator

from metalflow.cloud.metal import Href, Meta, MetalModel, link

NAME_RULE = (
    "1-80 characters (Equinix's limit) forming a metalflow name: lower-case letters, digits,"
    " '.', '_' or '-'"
)


class MetalUser(MetalModel):
    id: str | None = None
    short_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    created_at: dt.datetime | None = None
    default_organization_id: str | None = None
    default_project_id: str | None = None
    emails: list[Href] | None = None
    href: str | None = None


class MetalOrganization(MetalModel):
    id: str | None = None
    name: str | None = None
    description: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    projects: list[Href] | None = None
    members: list[Href] | None = None
    href: str | None = None


class MetalOrganizationList(MetalModel):
    organizations: list[MetalOrganization] | None = None
    meta: Meta | None = None


class MetalProject(MetalModel):
    id: str | None = None
    name: str | None = None
    organization: Href | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    devices: list[Href] | None = None
    members: list[Href] | None = None
    ssh_keys: list[Href] | None = None
    tags: list[str] | None = None
    type: str | None = None
    href: str | None = None


class MetalProjectList(MetalModel):
    projects: list[MetalProject] | None = None
    meta: Meta | None = None


def _none_only(value: Any, name: str) -> Any:
    """Fields the clients send (packet-python sends them null) for what metalflow keeps none
    of: null is taken, a value is refused rather than dropped unseen."""
    if value is not None and value != [] and value != {}:
        raise ValueError(f"metalflow keeps no {name} for projects: leave {name} out")
    return value


class MetalProjectCreate(MetalModel):
    name: str = Field(min_length=1, max_length=80, description=NAME_RULE)
    organization_id: str | None = Field(
        default=None,
        max_length=64,
        description="needed when the caller belongs to more than one organization",
    )
    customdata: dict[str, Any] | None = None
    payment_method_id: str | None = Field(default=None, max_length=64)
    tags: list[str] | None = None
    type: str | None = Field(default=None, max_length=32)

    @field_validator("customdata", "payment_method_id", "tags")
    @classmethod
    def _unkept(cls, value: Any, info: Any) -> Any:
        return _none_only(value, str(info.field_name))

    @field_validator("type")
    @classmethod
    def _default_type(cls, value: str | None) -> str | None:
        if value not in (None, "default"):
            raise ValueError("type must be 'default' (metalflow has no other kind of project)")
        return value


class MetalProjectUpdate(MetalModel):
    name: str | None = Field(default=None, min_length=1, max_length=80, description=NAME_RULE)
    customdata: dict[str, Any] | None = None
    payment_method_id: str | None = Field(default=None, max_length=64)
    tags: list[str] | None = None
    backend_transfer_enabled: bool | None = None

    @field_validator("customdata", "payment_method_id", "tags", "backend_transfer_enabled")
    @classmethod
    def _unkept(cls, value: Any, info: Any) -> Any:
        if info.field_name == "backend_transfer_enabled" and value is False:
            return value
        return _none_only(value, str(info.field_name))


def user_link(user_id: str) -> Href:
    return link(f"/users/{user_id}")


def project_link(project_id: str) -> Href:
    return link(f"/projects/{project_id}")


def organization_link(organization_id: str) -> Href:
    return link(f"/organizations/{organization_id}")
