"""The OpenAPI document tells the truth: schemathesis drives every operation of a live server
with the admin token, generated valid and invalid input, and every check it has; every answer
must be one the document declares, in the shape it declares, and none a server error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err, Ok

from metalflow.config import Settings
from tests.integration.conftest import LiveServer, apply, free_port, start_server
from tests.manifests import simple_template

EXAMPLES_PER_OPERATION = 5
"""Per operation and mode (valid, invalid input): about 400 requests, one to two minutes."""
SEMANTIC_REFUSALS = ["2xx", "3xx", "400", "401", "403", "404", "409", "422"]
"""What a schema-valid request may get: the document types every input, but the API checks more
than JSON Schema says (a MAC's form, a label filter's key=value, what a YAML document holds)."""
SEED = """\
apiVersion: metalflow/v1
kind: Machine
metadata:
  name: m1
spec:
  interfaces:
    - mac: "52:54:00:00:00:01"
  disks:
    - device: /dev/vda
"""
"""A machine without a BMC: power operations answer at once instead of waiting for a job."""


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("contract") / "data",
        http=f"127.0.0.1:{free_port()}",
        controller_interval=0.5,
    )
    server = start_server(settings)
    try:
        with server.client() as api:
            response = apply(api, SEED + "---\n" + simple_template())
            assert response.status_code == 200, response.text
            created = api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
            assert created.status_code == 201, created.text
        yield server
    finally:
        server.stop()


def test_every_operation_answers_as_the_document_declares(contract_server: LiveServer) -> None:
    token = contract_server.admin_token
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "checks": {"positive_data_acceptance": {"expected-statuses": SEMANTIC_REFUSALS}},
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{contract_server.url}/api/v1/openapi.json", config=config
    )
    failures: list[str] = []
    results = list(schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)]
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) > 30, "the document lost its operations"
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def conforms(case: Case[Any]) -> None:
                if case.query:
                    case.query.pop("follow", None)  # a stream that never ends by itself
                case.call_and_validate(timeout=30)

            try:
                conforms()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, f"{operation.label} has no valid input"
            except (FailureGroup, Failure, AssertionError) as failure:
                failures.append(f"{operation.label} ({mode.value}): {_describe(failure)}")
    assert not failures, "\n\n".join(failures)


def test_a_method_no_route_takes_is_a_405_listing_those_that_are(
    contract_server: LiveServer,
) -> None:
    document = httpx.get(f"{contract_server.url}/api/v1/openapi.json").json()
    with contract_server.client() as api:
        for path, methods in [
            ("/api/v1/machines/m1", {"GET", "DELETE"}),
            ("/api/v1/machines/m1/bmc/media", {"POST", "DELETE"}),
            ("/boot/assets/undionly.kpxe", {"GET", "HEAD"}),
        ]:
            template = path.replace("m1", "{name}").replace("undionly.kpxe", "{name}")
            declared = {method.upper() for method in document["paths"][template]}
            assert declared == methods
            response = api.put(path)
            assert response.status_code == 405, response.text
            assert set(response.headers["allow"].split(", ")) == methods
            assert response.json()["detail"]["field"] is None


def _describe(failure: BaseException) -> str:
    found = failure.exceptions if isinstance(failure, FailureGroup) else (failure,)
    return "; ".join(f"{type(each).__name__}: {each}" for each in found)
