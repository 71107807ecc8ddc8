"""The provider catalogue's input and output shapes: metros, plans (Equinix's `specs` plus the
matching rule), operating systems, plan checks and capacity."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from metalflow.cloud.matching import Rule
from metalflow.cloud.tables import Metro, OperatingSystem, Plan

SLUG_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"
"""Equinix's slugs: lower case, digits, '.', '_' and '-' (c3.small.x86, ubuntu_24_04)."""


def _slug(value: str) -> str:
    if not re.fullmatch(SLUG_PATTERN, value):
        raise ValueError(
            f"{value[:70]!r} is not a slug: 1-64 lower-case letters, digits, '.', '_' or '-',"
            " starting and ending with a letter or digit, e.g. c3.small.x86 or ubuntu_24_04"
        )
    return value


Slug = Annotated[
    str,
    Field(json_schema_extra={"pattern": SLUG_PATTERN}, examples=["c3.small.x86"]),
    AfterValidator(_slug),
]
Wipe = Literal["signatures", "zero", "discard"]


class BgpPeer(BaseModel):
    """One of the provider's route servers in a metro, the peer of every device session."""

    model_config = ConfigDict(extra="forbid")

    address_family: Literal[4, 6]
    peer_as: int = Field(ge=1, le=4294967295)
    peer_ips: list[str] = Field(min_length=1, max_length=8)


class MetroCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Slug = Field(examples=["am"])
    name: str = Field(min_length=1, max_length=200, examples=["Amsterdam"])
    country: str = Field(pattern=r"^[A-Z]{2}$", examples=["NL"], description="ISO 3166-1 alpha-2")
    bgp_peers: list[BgpPeer] = Field(default_factory=list, max_length=8)

    @field_validator("country", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetroUpdate(BaseModel):
    """A PATCH: the fields given replace the stored ones; the code stays."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    bgp_peers: list[BgpPeer] | None = Field(default=None, max_length=8)


class MetroPublic(BaseModel):
    id: str
    code: str
    name: str
    country: str
    bgp_peers: list[BgpPeer]
    machines: int
    """Machines standing in it."""
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Metro, machines: int) -> MetroPublic:
        return cls(
            id=row.id,
            code=row.code,
            name=row.name,
            country=row.country,
            bgp_peers=[BgpPeer.model_validate(peer) for peer in row.bgp_peers],
            machines=machines,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class MetroList(BaseModel):
    items: list[MetroPublic]
    count: int


class CpuSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=64)
    type: str = Field(max_length=200)


class MemorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: str = Field(max_length=32, examples=["64GB"])


class DriveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=64)
    size: str = Field(max_length=32, examples=["480GB"])
    type: Literal["HDD", "SSD", "NVME"]
    category: str = Field(default="boot", max_length=32, examples=["boot", "storage", "cache"])


class NicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=64)
    type: str = Field(max_length=64, examples=["10Gbps"])


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raid: bool = False
    txt: bool = False
    uefi: bool = True


class Specs(BaseModel):
    """What the plan's servers have, as Equinix Metal shows it to tenants (informative: the
    rule decides which machines are in the plan)."""

    model_config = ConfigDict(extra="forbid")

    cpus: list[CpuSpec] = Field(default_factory=list, max_length=8)
    memory: MemorySpec | None = None
    drives: list[DriveSpec] = Field(default_factory=list, max_length=16)
    nics: list[NicSpec] = Field(default_factory=list, max_length=8)
    features: FeatureSpec = Field(default_factory=FeatureSpec)


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    slug: Slug
    name: str = Field(min_length=1, max_length=200, examples=["c3.small.x86"])
    plan_class: str | None = Field(
        default=None,
        alias="class",
        max_length=64,
        description="Equinix's class; the slug when left out",
    )
    line: str = Field(default="baremetal", max_length=32)
    description: str = Field(default="", max_length=2000)
    specs: Specs = Field(default_factory=Specs)
    rule: Rule = Field(default_factory=Rule)
    wipe: Wipe = Field(default="signatures", description="how deleted devices' disks are wiped")


class PlanUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    plan_class: str | None = Field(default=None, alias="class", max_length=64)
    line: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=2000)
    specs: Specs | None = None
    rule: Rule | None = None
    wipe: Wipe | None = None


class PlanPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    slug: str
    name: str
    plan_class: str = Field(alias="class")
    line: str
    description: str
    specs: Specs
    rule: Rule
    wipe: Wipe
    machines: int
    """Machines classified into it."""
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Plan, machines: int) -> PlanPublic:
        return cls(
            id=row.id,
            slug=row.slug,
            name=row.name,
            plan_class=row.plan_class,
            line=row.line,
            description=row.description,
            specs=Specs.model_validate(row.specs),
            rule=Rule.model_validate(row.rule),
            wipe=row.wipe,
            machines=machines,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class PlanList(BaseModel):
    items: list[PlanPublic]
    count: int


class MachineMatch(BaseModel):
    name: str
    id: str
    state: str
    metro: str | None
    plan: str | None
    """The plan it is classified into: the first matching plan by slug, maybe not this one."""


class MachineMiss(BaseModel):
    name: str
    id: str
    state: str
    metro: str | None
    reasons: list[str]


class PlanCheck(BaseModel):
    plan: str
    matching: list[MachineMatch]
    near_misses: list[MachineMiss]
    """Every machine that misses, fewest reasons first."""


CHECKSUM_PATTERN = r"^sha256:[0-9a-f]{64}$"


class OperatingSystemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug = Field(examples=["ubuntu_24_04"])
    name: str = Field(min_length=1, max_length=200, examples=["Ubuntu 24.04 LTS"])
    distro: str = Field(min_length=1, max_length=64, examples=["ubuntu"])
    version: str = Field(min_length=1, max_length=64, examples=["24.04"])
    provisionable_on: list[Slug] = Field(default_factory=list, max_length=256)
    image_url: str | None = Field(default=None, max_length=2000)
    image_checksum: str | None = Field(
        default=None, pattern=CHECKSUM_PATTERN, description="sha256:HEX of the image as served"
    )
    template: str | None = Field(
        default=None,
        max_length=200,
        description="the template installing it; None: the generated os-SLUG template",
    )
    cloud_init: bool = True

    @field_validator("image_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://")) or any(c in value for c in "{} \n"):
            raise ValueError(
                f"{value[:80]!r} is not an http:// or https:// URL without spaces or braces;"
                " e.g. http://192.0.2.1:8080/jammy.raw.gz"
            )
        return value


class OperatingSystemUpdate(BaseModel):
    """A PATCH; `template: null` given explicitly goes back to the generated template."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    distro: str | None = Field(default=None, min_length=1, max_length=64)
    version: str | None = Field(default=None, min_length=1, max_length=64)
    provisionable_on: list[Slug] | None = Field(default=None, max_length=256)
    image_url: str | None = Field(default=None, max_length=2000)
    image_checksum: str | None = Field(default=None, pattern=CHECKSUM_PATTERN)
    template: str | None = Field(default=None, max_length=200)
    cloud_init: bool | None = None


class OperatingSystemPublic(BaseModel):
    id: str
    slug: str
    name: str
    distro: str
    version: str
    provisionable_on: list[str]
    image_url: str | None
    image_checksum: str | None
    template: str | None
    install_template: str
    """The template devices are installed with: `template`, else the generated one."""
    cloud_init: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: OperatingSystem, install_template: str) -> OperatingSystemPublic:
        return cls(
            id=row.id,
            slug=row.slug,
            name=row.name,
            distro=row.distro,
            version=row.version,
            provisionable_on=list(row.provisionable_on),
            image_url=row.image_url,
            image_checksum=row.image_checksum,
            template=row.template,
            install_template=install_template,
            cloud_init=row.cloud_init,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class OperatingSystemList(BaseModel):
    items: list[OperatingSystemPublic]
    count: int


class CapacityEntry(BaseModel):
    metro: str
    plan: str
    available: int
    """Ready machines with no project and no hardware reservation."""


class Capacity(BaseModel):
    items: list[CapacityEntry]
    count: int
