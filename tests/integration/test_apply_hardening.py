"""Hostile applies against a live server: each is refused clearly, nothing is written, and the
server keeps answering boot, agent and health traffic during and after."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from metalflow.cli import app
from metalflow.inventory.schemas import MAX_METADATA_JSON
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.manifests import machine_yaml

BOMB_LEVELS = 9


def billion_laughs() -> str:
    """The 640-byte document of the report: nine levels of nine aliases in spec.metadata."""
    levels = ['    l0: &l0 "lol"']
    levels += [
        f"    l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, BOMB_LEVELS + 1)
    ]
    return (
        "apiVersion: metalflow/v1\nkind: Machine\nmetadata: {name: web1}\nspec:\n  metadata:\n"
        + "\n".join(levels)
        + "\n"
    )


def small_machines(count: int) -> str:
    return "---\n".join(
        "apiVersion: metalflow/v1\nkind: Machine\n"
        f"metadata: {{name: m{i}, labels: {{rack: r{i % 40}}}}}\n"
        f'spec:\n  interfaces:\n    - mac: "52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:'
        f'{i & 255:02x}"\n  metadata: {{instance: {{hostname: m{i}}}}}\n'
        for i in range(count)
    )


def detail(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["detail"]
    return body


def machine_count(api: httpx.Client) -> int:
    listed = api.get("/api/v1/machines")
    assert listed.status_code == 200
    return int(listed.json()["count"])


def still_answering(live: LiveServer, agent: AgentClient) -> None:
    assert httpx.get(f"{live.url}/healthz", timeout=30).status_code == 200
    assert agent.next() is None


@pytest.fixture
def agent(live: LiveServer, api: httpx.Client) -> Any:
    """An agent with a real token, of a machine that has no workflow: `next` answers 204."""
    assert apply(api, machine_yaml("agent1", "52:54:00:00:0a:01")).status_code == 200
    token = api.post("/api/v1/machines/agent1/agent-token").json()["token"]
    client = AgentClient(live.url, token, "52:54:00:00:0a:01")
    yield client
    client.close()


def test_a_billion_laughs_is_a_422_naming_the_line(
    live: LiveServer, api: httpx.Client, agent: AgentClient
) -> None:
    text = billion_laughs()
    assert len(text.encode()) < 700
    response = apply(api, text)
    assert response.status_code == 422
    error = detail(response)
    assert error["field"] == "yaml"
    assert error["message"].startswith("invalid YAML: line ")
    assert "aliases may add to this stream" in error["message"]
    assert machine_count(api) == 1
    still_answering(live, agent)


def test_deep_nesting_is_a_422_and_the_cli_exits_2(
    live: LiveServer,
    api: httpx.Client,
    agent: AgentClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    machine = machine_yaml("deep", "52:54:00:00:0b:01")
    text = machine + "---\nx: " + "[" * 3000 + "]" * 3000
    response = apply(api, text)
    assert response.status_code == 422
    line = machine.count("\n") + 2
    assert detail(response) == {
        "message": f"invalid YAML: line {line}: nesting deeper than 100 levels; flatten the"
        " document",
        "field": "yaml",
    }
    manifest = tmp_path / "deep.yaml"
    manifest.write_text(text)
    monkeypatch.setenv("METALFLOW_URL", live.url)
    monkeypatch.setenv("METALFLOW_TOKEN", live.admin_token)
    result = CliRunner().invoke(app, ["apply", "-f", str(manifest)])
    assert result.exit_code == 2, result.output
    assert "nesting deeper than 100 levels" in result.output
    assert "Traceback" not in result.output
    assert machine_count(api) == 1
    still_answering(live, agent)


def test_oversized_metadata_is_refused_naming_the_field_and_the_limit(api: httpx.Client) -> None:
    blob = "x" * MAX_METADATA_JSON
    text = machine_yaml("web1", "52:54:00:00:0c:01").replace(
        "  metadata:\n", f"  metadata:\n    blob: {blob}\n"
    )
    response = apply(api, text)
    assert response.status_code == 422
    error = detail(response)
    assert error["field"] == "documents[0].spec.metadata"
    assert f"bytes as JSON; the limit is {MAX_METADATA_JSON:,}" in error["message"]
    assert machine_count(api) == 0


def test_a_name_twice_in_one_stream_is_refused_and_nothing_written(api: httpx.Client) -> None:
    first = machine_yaml("web1", "52:54:00:00:0d:01")
    other = machine_yaml("web2", "52:54:00:00:0d:02")
    again = machine_yaml("web1", "52:54:00:00:0d:03")
    response = apply(api, "---\n".join([first, other, again]))
    assert response.status_code == 422
    assert detail(response) == {
        "message": "documents[0] and documents[2] are both Machine web1; one stream may name"
        " each object once",
        "field": "documents[2].metadata.name",
    }
    assert machine_count(api) == 0


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_health_and_agents_are_answered_while_a_large_stream_is_parsed(
    live: LiveServer, api: httpx.Client, agent: AgentClient
) -> None:
    """20,000 documents, the last one unknown: the whole stream is parsed and validated, then
    refused, so the apply's time is all parsing (the part that ran on the event loop)."""
    stream = small_machines(20_000) + "---\napiVersion: metalflow/v1\nkind: Gadget\n"
    outcome: dict[str, httpx.Response] = {}
    done = threading.Event()

    def run_apply() -> None:
        with live.client() as client:
            outcome["response"] = client.post(
                "/api/v1/apply",
                content=stream.encode(),
                headers={"Content-Type": "application/yaml"},
                timeout=600,
            )
        done.set()

    applying = threading.Thread(target=run_apply)
    applying.start()
    answered_during = 0
    try:
        while not done.is_set():
            still_answering(live, agent)
            if not done.is_set():
                answered_during += 1
    finally:
        applying.join()
    response = outcome["response"]
    assert response.status_code == 422, response.text
    assert detail(response)["field"] == "documents[20000].kind"
    assert answered_during >= 3
    still_answering(live, agent)
    assert machine_count(api) == 1
