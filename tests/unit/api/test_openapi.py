"""The statuses the OpenAPI document declares follow from what each operation is."""

from __future__ import annotations

from typing import Any

from metalflow.api.errors import field_path, validation_errors
from metalflow.api.openapi import declare_errors


def document(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    return {
        "paths": {path: {method: {"responses": {"200": {"description": "ok"}}, **operation}}},
        "components": {"schemas": {"HTTPValidationError": {}, "ValidationError": {}}},
    }


def statuses(path: str, method: str, operation: dict[str, Any]) -> set[str]:
    declared = declare_errors(document(path, method, operation))["paths"][path][method]
    return set(declared["responses"])


def test_a_token_route_with_a_path_name_and_a_body_declares_each_status_it_can_answer() -> None:
    operation = {"parameters": [{"in": "path", "name": "name"}], "requestBody": {}}
    path = "/api/v1/machines/{name}/provision"
    assert statuses(path, "post", operation) == {
        "200", "400", "401", "403", "404", "409", "413", "422"
    }  # fmt: skip


def test_a_public_route_without_input_declares_no_error() -> None:
    assert statuses("/boot/install/vmlinuz", "get", {}) >= {"200", "206", "304", "404"}
    assert "401" not in statuses("/boot/install/vmlinuz", "get", {})


def test_errors_have_the_one_shape_and_fastapi_s_list_is_gone() -> None:
    declared = declare_errors(document("/api/v1/machines", "get", {"parameters": [{}]}))
    schemas = declared["components"]["schemas"]
    assert set(schemas) == {"Error", "MetalError"}
    response = declared["paths"]["/api/v1/machines"]["get"]["responses"]["401"]
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert response["headers"]["WWW-Authenticate"]["required"] is True


def test_metal_routes_answer_errors_in_equinix_s_shape() -> None:
    declared = declare_errors(
        document("/metal/v1/projects/{id}", "get", {"parameters": [{"in": "path"}]})
    )
    responses = declared["paths"]["/metal/v1/projects/{id}"]["get"]["responses"]
    assert set(responses) >= {"401", "403", "404", "422"}
    assert responses["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MetalError"
    }


def test_validation_errors_name_fields_as_the_project_writes_them() -> None:
    assert field_path(("body", "lines", 3)) == "body.lines[3]"
    assert field_path(("query", "wait")) == "query.wait"
    errors = [
        {"type": "json_invalid", "loc": ("body", 7), "msg": "JSON decode error",
         "ctx": {"error": "Expecting value"}},
        {"type": "value_error", "loc": ("body", "mac"), "msg": "Value error, 'x' is not a MAC"},
    ]  # fmt: skip
    assert validation_errors(errors) == [
        {"message": "the body is not JSON: Expecting value at byte 7", "field": "body"},
        {"message": "'x' is not a MAC", "field": "body.mac"},
    ]
