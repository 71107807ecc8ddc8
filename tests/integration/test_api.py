"""The REST API as operators and scripts see it: apply, errors, auth, events, metrics."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from typing import Any

import httpx

from metalflow.index.store import load_views
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.manifests import (
    TINKERBELL_STACK,
    machine_yaml,
    simple_template,
)

M1 = machine_yaml("m1", "52:54:00:00:00:01", "192.0.2.11")
M2 = machine_yaml("m2", "52:54:00:00:00:02", "192.0.2.12")


def results(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 200, response.text
    return [(r["kind"], r["name"], r["action"]) for r in response.json()["results"]]


def test_apply_creates_then_is_a_no_op_then_updates(api: httpx.Client) -> None:
    stream = M1 + "---\n" + simple_template()
    assert results(apply(api, stream)) == [
        ("Machine", "m1", "created"),
        ("Template", "ubuntu", "created"),
    ]
    before = api.get("/api/v1/events", params={"limit": 1000}).json()["count"]
    assert results(apply(api, stream)) == [
        ("Machine", "m1", "unchanged"),
        ("Template", "ubuntu", "unchanged"),
    ]
    assert api.get("/api/v1/events", params={"limit": 1000}).json()["count"] == before
    changed = stream.replace("rack: r1", "rack: r2")
    assert results(apply(api, changed))[0] == ("Machine", "m1", "updated")
    assert api.get("/api/v1/machines/m1").json()["labels"] == {"rack": "r2"}
    new_password = changed.replace("password: calvin", "password: hunter2")
    assert results(apply(api, new_password))[0] == ("Machine", "m1", "updated")


def test_binary_user_data_is_stored_served_and_shown_byte_exact(
    live: LiveServer, api: httpx.Client
) -> None:
    gzipped = gzip.compress(b"#cloud-config\nhostname: m1\n", mtime=0)
    encoded = base64.b64encode(gzipped).decode()
    binary = M1 + f"  userDataBase64: {encoded}\n"
    assert results(apply(api, binary)) == [("Machine", "m1", "created")]
    machine = api.get("/api/v1/machines/m1").json()
    assert (machine["userData"], machine["userDataBase64"]) == (None, encoded)
    assert results(apply(api, binary)) == [("Machine", "m1", "unchanged")]
    with live.services.db.read() as session:
        [view] = load_views(session)
    assert view.instance is not None and view.instance.user_data == gzipped

    text = M1 + '  userData: "#cloud-config\\nhostname: é\\n"\n'
    assert results(apply(api, text)) == [("Machine", "m1", "updated")]
    machine = api.get("/api/v1/machines/m1").json()
    assert (machine["userData"], machine["userDataBase64"]) == (
        "#cloud-config\nhostname: é\n",
        None,
    )
    with live.services.db.read() as session:
        [view] = load_views(session)
    assert view.instance is not None
    assert view.instance.user_data == "#cloud-config\nhostname: é\n".encode()


def test_dry_run_writes_nothing(api: httpx.Client) -> None:
    response = apply(api, M1, dry_run=True)
    assert response.json() == {
        "dry_run": True,
        "results": [{"kind": "Machine", "name": "m1", "action": "created"}],
    }
    assert api.get("/api/v1/machines/m1").status_code == 404


def test_duplicate_mac_is_rejected_and_nothing_half_written(api: httpx.Client) -> None:
    results(apply(api, M1))
    clash = M2.replace("52:54:00:00:00:02", "52-54-00-00-00-01")
    response = apply(api, machine_yaml("m0", "52:54:00:00:00:09") + "---\n" + clash)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "duplicate MAC 52:54:00:00:00:01 (already on machine m1)" in detail["message"]
    assert detail["field"] == "spec.interfaces[0].mac"
    assert api.get("/api/v1/machines/m0").status_code == 404


def test_duplicate_ip_is_rejected(api: httpx.Client) -> None:
    results(apply(api, M1))
    response = apply(api, M2.replace("192.0.2.12", "192.0.2.11"))
    assert response.status_code == 409
    assert "duplicate IP 192.0.2.11" in response.json()["detail"]["message"]


def test_bad_input_names_the_field(api: httpx.Client) -> None:
    cases: list[tuple[str, str]] = [
        ("kind: [unclosed", "invalid YAML: line 1"),
        ("apiVersion: metalflow/v1\nkind: Gadget\nmetadata: {name: x}\n", "kind 'Gadget'"),
        (M1.replace("  arch: x86_64", "  arch: x86_64\n  colour: red"), "spec.colour: unknown"),
        (M1.replace('"52:54:00:00:00:01"', "nope"), "is not a MAC address"),
        (M1.replace("192.0.2.11", "192.0.2.300"), "is not an IP address"),
        ("apiVersion: metalflow/v1\nkind: Machine\nmetadata: {}\n", "metadata.name is required"),
        (simple_template().replace("name: ubuntu", "name: " + "x" * 300, 1), "must be 1-200"),
        (simple_template().replace("timeout: 60", "timeout: 10000000000000"), "2592000"),
    ]
    for text, expected in cases:
        response = apply(api, text)
        assert response.status_code == 422, (text, response.text)
        assert expected in response.json()["detail"]["message"], response.json()


def test_template_errors_name_line_and_field(api: httpx.Client) -> None:
    bad = simple_template().replace("step-1", "step-0")
    response = apply(api, bad)
    assert response.status_code == 422
    assert "duplicate" in response.json()["detail"]["message"]
    unknown_func = simple_template().replace("example/step-0:v1", "{{ frobnicate .x }}")
    response = apply(api, unknown_func)
    assert response.status_code == 422
    assert "frobnicate" in response.json()["detail"]["message"]


def test_missing_hardware_key_fails_workflow_creation(api: httpx.Client) -> None:
    template = simple_template("needs-disk2").replace("example/step-0:v1", '"{{ .device_2 }}"')
    results(apply(api, M1 + "---\n" + template))
    response = api.post("/api/v1/machines/m1/provision", json={"template": "needs-disk2"})
    assert response.status_code == 422
    assert "device_2" in response.json()["detail"]["message"]
    assert api.get("/api/v1/machines/m1").json()["state"] == "ready"
    assert api.get("/api/v1/workflows").json()["count"] == 0


def test_unknown_things_are_404(api: httpx.Client) -> None:
    assert api.get("/api/v1/machines/nope").json()["detail"]["message"] == (
        "machine 'nope' not found"
    )
    assert api.get("/api/v1/workflows/nope").status_code == 404
    assert api.get("/api/v1/templates/nope").status_code == 404
    response = api.post("/api/v1/machines/nope/provision", json={"template": "t"})
    assert response.status_code == 404


def test_illegal_transition_is_409_and_changes_nothing(api: httpx.Client) -> None:
    results(apply(api, M1 + "---\n" + simple_template()))
    response = api.post("/api/v1/machines/m1/transition", json={"event": "deprovisioned"})
    assert response.status_code == 409
    assert "machine in state ready cannot deprovisioned" in response.json()["detail"]["message"]
    assert api.get("/api/v1/machines/m1").json()["state"] == "ready"
    ok = api.post("/api/v1/machines/m1/transition", json={"event": "maintenance", "reason": "fan"})
    assert ok.json()["state"] == "maintenance" and ok.json()["state_reason"] == "fan"
    blocked = api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
    assert blocked.status_code == 409
    assert "machine in state maintenance cannot provision" in blocked.json()["detail"]["message"]


def test_authentication_and_agent_scope(live: LiveServer, api: httpx.Client) -> None:
    assert httpx.get(f"{live.url}/api/v1/machines").status_code == 401
    bogus = httpx.get(f"{live.url}/api/v1/machines", headers={"Authorization": "Bearer nope"})
    assert bogus.status_code == 401
    assert httpx.get(f"{live.url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{live.url}/api/v1/openapi.json").status_code == 200
    results(apply(api, M1 + "---\n" + M2 + "---\n" + simple_template()))
    token1 = api.post("/api/v1/machines/m1/agent-token").json()["token"]
    assert api.post("/api/v1/machines/m1/agent-token").json()["token"] == token1
    token2 = api.post("/api/v1/machines/m2/agent-token").json()["token"]
    agent1 = AgentClient(live.url, token1, "52:54:00:00:00:01")
    agent2 = AgentClient(live.url, token2, "52:54:00:00:00:02")
    assert agent1.http.get("/api/v1/machines").status_code == 403
    api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
    action = agent1.next()
    assert action is not None
    assert agent2.report(action["id"], "success").status_code == 404
    assert agent2.next() is None
    assert agent2.hello().status_code == 200
    impostor = AgentClient(live.url, token2, "52:54:00:00:00:01")
    assert impostor.hello().status_code == 422
    impostor.close()
    assert api.get("/api/v1/agent/next").status_code == 403
    huge = agent1.report(action["id"], "failed", exit_code=10**20)
    assert huge.status_code == 422
    assert agent1.report(10**12, "success").status_code == 422
    rotated = api.post("/api/v1/machines/m1/agent-token/rotate").json()["token"]
    assert rotated != token1
    assert agent1.http.get("/api/v1/agent/next").status_code == 401
    assert agent1.http.get("/api/v1/agent/ping").status_code == 401
    agent1.close()
    agent2.close()


def test_tinkerbell_documents_apply_unmodified_and_render(
    live: LiveServer, api: httpx.Client
) -> None:
    assert results(apply(api, TINKERBELL_STACK)) == [
        ("Machine", "sm01", "created"),
        ("Template", "ubuntu-jammy", "created"),
        ("Workflow", "sm01-jammy", "created"),
    ]
    assert [r[2] for r in results(apply(api, TINKERBELL_STACK))] == ["unchanged"] * 3
    machine = api.get("/api/v1/machines/sm01").json()
    assert machine["project"] == "tink-system" and machine["state"] == "provisioning"
    assert machine["interfaces"][0]["ip"] == "192.0.2.21"
    token = api.post("/api/v1/machines/sm01/agent-token").json()["token"]
    agent = AgentClient(live.url, token, "3c:ec:ef:4c:4f:54")
    stream = agent.next()
    assert stream is not None
    assert stream["environment"] == {
        "DEST_DISK": "/dev/nvme0n1",
        "IMG_URL": "http://192.0.2.1:8080/jammy.raw.gz",
        "COMPRESSED": "true",
    }
    assert "/dev:/dev" in stream["volumes"]
    agent.report(stream["id"], "success")
    write = agent.next()
    assert write is not None
    env = write["environment"]
    assert env["DEST_DISK"] == "/dev/nvme0n1p1"
    assert env["MODE"] == "0644" and env["UID"] == "0"
    assert "macaddress: 3c:ec:ef:4c:4f:54" in env["CONTENTS"]
    agent.report(write["id"], "success")
    kexec = agent.next()
    assert kexec is not None and kexec["pid"] == "host"
    agent.close()


def test_events_follow_streams_live(live: LiveServer, api: httpx.Client) -> None:
    results(apply(api, M1))
    seen: list[dict[str, Any]] = []
    ready = threading.Event()

    def follow() -> None:
        with (
            live.client() as client,
            client.stream(
                "GET", "/api/v1/events", params={"machine": "m1", "follow": "true"}
            ) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                ready.set()
                if line.startswith("data: "):
                    seen.append(json.loads(line.removeprefix("data: ")))
                    if seen[-1]["kind"] == "machine.state":
                        return

    thread = threading.Thread(target=follow)
    thread.start()
    ready.wait(10)
    api.post("/api/v1/machines/m1/transition", json={"event": "maintenance"})
    thread.join(timeout=20)
    assert [e["kind"] for e in seen] == ["machine.created", "machine.state"]
    assert seen[1]["data"]["after"] == "maintenance"


def test_metrics(api: httpx.Client, live: LiveServer) -> None:
    results(apply(api, M1 + "---\n" + simple_template()))
    api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
    token = api.post("/api/v1/machines/m1/agent-token").json()["token"]
    agent = AgentClient(live.url, token, "52:54:00:00:00:01")
    action = agent.next()
    assert action is not None
    agent.report(action["id"], "success")
    text = api.get("/metrics").text
    assert 'metalflow_workflows{state="RUNNING"} 1.0' in text
    assert 'metalflow_agent_requests_total{endpoint="next"} 1.0' in text
    assert 'metalflow_action_duration_seconds_count{outcome="success"} 1.0' in text
    assert httpx.get(f"{live.url}/metrics").status_code == 401
    agent.close()


def test_deprovision_without_template_releases(api: httpx.Client) -> None:
    results(apply(api, M1))
    blocked = api.post("/api/v1/machines/m1/deprovision", json={})
    assert blocked.status_code == 409
    api.post("/api/v1/machines/m1/transition", json={"event": "maintenance"})
    assert api.post("/api/v1/machines/m1/transition", json={"event": "release"}).status_code == 200


def test_delete_machine_and_its_workflows(api: httpx.Client) -> None:
    results(apply(api, M1 + "---\n" + simple_template()))
    api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
    assert api.delete("/api/v1/machines/m1").status_code == 409
    wf = api.get("/api/v1/workflows").json()["items"][0]["id"]
    api.post(f"/api/v1/workflows/{wf}/cancel")
    assert api.delete("/api/v1/machines/m1").status_code == 204
    assert api.get("/api/v1/workflows").json()["count"] == 0
