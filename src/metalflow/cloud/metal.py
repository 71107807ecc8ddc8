"""What every `/metal/v1` route shares: hrefs, Equinix's paging (`page`, `per_page`, `meta`),
`include`/`exclude`, and the response models' base.

Equinix Metal's shapes are the contract its official clients hold servers to (packet-python reads
`meta.total` and follows `meta.next`; equinix-metal validates with pydantic models whose fields are
nearly all optional). The response models here are therefore all-optional too, and routes answer
with `response_model_exclude_unset=True`: a builder sets every field it knows, and `exclude=`
leaves fields out by not setting them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from metalflow.errors import Invalid

METAL_PREFIX = "/metal/v1"
DEFAULT_PER_PAGE = 10
MAX_PER_PAGE = 1000
MAX_FIELD_LIST = 50
"""At most this many names in one `include` or `exclude`."""


def href(path: str) -> str:
    """The path of a Metal resource as its `href` (a path this server serves)."""
    return f"{METAL_PREFIX}{path}"


class MetalModel(BaseModel):
    """Extra fields are refused in requests (a typo is an error, not ignored) and never sent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Href(MetalModel):
    href: str


def link(path: str) -> Href:
    return Href(href=href(path))


class Meta(MetalModel):
    first: Href | None = None
    previous: Href | None = None
    self_: Href | None = Field(default=None, alias="self")
    next: Href | None = None
    last: Href | None = None
    current_page: int | None = None
    last_page: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    def meta(self, path: str, total: int, query: Mapping[str, str] | None = None) -> Meta:
        """Equinix's `meta` for this page of `total` items at `path` (other query parameters
        kept in the links); `next` is None on the last page, as packet-python expects."""
        last = max(1, math.ceil(total / self.size))

        def at(number: int) -> Href:
            params = {**(query or {}), "page": str(number), "per_page": str(self.size)}
            return Href(href=f"{href(path)}?{urlencode(params)}")

        return Meta(
            first=at(1),
            previous=at(self.number - 1) if self.number > 1 else None,
            self_=at(self.number),
            next=at(self.number + 1) if self.number < last else None,
            last=at(last),
            current_page=self.number,
            last_page=last,
            total=total,
        )


def _page(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="From 1")] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = DEFAULT_PER_PAGE,
) -> Page:
    return Page(page, per_page)


PageDep = Annotated[Page, Depends(_page)]


@dataclass(frozen=True)
class Fields:
    """`include` and `exclude` as given: comma-separated names of top-level fields (Equinix's
    dotted names for nested ones are taken by their first part)."""

    include: frozenset[str]
    exclude: frozenset[str]

    def keep(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """The document without its excluded fields."""
        return {key: value for key, value in document.items() if key not in self.exclude}

    def expands(self, name: str) -> bool:
        return name in self.include


def _names(value: str | None, field: str) -> frozenset[str]:
    if not value:
        return frozenset()
    names = [name.strip().split(".")[0] for name in value.split(",") if name.strip()]
    if len(names) > MAX_FIELD_LIST:
        raise Invalid(f"{field} lists more than {MAX_FIELD_LIST} names", field=f"query.{field}")
    return frozenset(names)


def _fields(
    include: Annotated[str | None, Query(max_length=2000)] = None,
    exclude: Annotated[str | None, Query(max_length=2000)] = None,
) -> Fields:
    return Fields(_names(include, "include"), _names(exclude, "exclude"))


FieldsDep = Annotated[Fields, Depends(_fields)]
