"""The Metal API's shared shapes: paging as packet-python walks it, `//` paths, errors."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from metalflow.api.errors import error_body
from metalflow.api.limits import metal_path_tolerated
from metalflow.cloud.metal import Href, Page


def page_of(link: Href | None) -> int | None:
    if link is None:
        return None
    return int(parse_qs(urlsplit(link.href).query)["page"][0])


@given(total=st.integers(0, 5000), size=st.integers(1, 1000), data=st.data())
def test_following_next_visits_every_page_once_and_ends_on_the_last(
    total: int, size: int, data: st.DataObject
) -> None:
    first = Page(1, size).meta("/projects", total)
    last = first.last_page
    assert last is not None and (last - 1) * size < max(total, 1) <= last * size
    number = data.draw(st.integers(1, last))
    meta = Page(number, size).meta("/projects", total, {"state": "active"})
    assert meta.total == total and meta.current_page == number
    assert page_of(meta.next) == (number + 1 if number < last else None)
    assert page_of(meta.previous) == (number - 1 if number > 1 else None)
    assert meta.self_ is not None and meta.self_.href.startswith("/metal/v1/projects?")
    assert parse_qs(urlsplit(meta.self_.href).query)["state"] == ["active"]


def test_page_offsets_follow_the_page_size() -> None:
    assert Page(1, 10).offset == 0
    assert Page(3, 25).offset == 50


def test_paths_packet_python_doubles_a_slash_in_are_collapsed_under_metal_only() -> None:
    scope = {"path": "/metal/v1//capacity", "raw_path": b"/metal/v1//capacity"}
    assert metal_path_tolerated(scope)["path"] == "/metal/v1/capacity"
    assert metal_path_tolerated(scope)["raw_path"] == b"/metal/v1/capacity"
    href = {"path": "/metal/v1//metal/v1/projects/p1", "raw_path": b""}
    assert metal_path_tolerated(href)["path"] == "/metal/v1/projects/p1"
    other = {"path": "/api/v1//machines", "raw_path": b"/api/v1//machines"}
    assert metal_path_tolerated(other) is other


def test_metal_errors_are_equinix_s_list_naming_the_field() -> None:
    assert error_body("not RFC 1123", "body.hostname", metal=True) == {
        "errors": ["body.hostname: not RFC 1123"]
    }
    assert error_body("no such device", metal=True) == {"errors": ["no such device"]}
    every: list[dict[str, str | None]] = [
        {"message": "Field required", "field": "body.plan"},
        {"message": "Field required", "field": "body.metro"},
    ]
    assert error_body("Field required", "body.plan", every, metal=True) == {
        "errors": ["body.plan: Field required", "body.metro: Field required"]
    }
