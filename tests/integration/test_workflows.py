"""Workflows driven end to end by a test agent over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import AgentClient, LiveServer, apply, start_server
from tests.manifests import machine_yaml, simple_template, template_yaml

MAC = "52:54:00:00:00:01"


@pytest.fixture
def agent(live: LiveServer, api: httpx.Client) -> Iterator[AgentClient]:
    response = apply(api, machine_yaml("m1", MAC, "192.0.2.11") + "---\n" + simple_template())
    assert response.status_code == 200, response.text
    token = api.post("/api/v1/machines/m1/agent-token").json()["token"]
    client = AgentClient(live.url, token, MAC)
    yield client
    client.close()


def enrol(api: httpx.Client, live: LiveServer, name: str, mac: str, template: str) -> AgentClient:
    """Apply a machine with a template and return an agent holding the machine's token."""
    assert apply(api, machine_yaml(name, mac) + "---\n" + template).status_code == 200
    token = api.post(f"/api/v1/machines/{name}/agent-token").json()["token"]
    return AgentClient(live.url, token, mac)


def provision(api: httpx.Client, template: str = "ubuntu", machine: str = "m1") -> dict[str, Any]:
    response = api.post(f"/api/v1/machines/{machine}/provision", json={"template": template})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def run_to_end(agent: AgentClient) -> list[dict[str, Any]]:
    served = []
    while (action := agent.next()) is not None:
        served.append(action)
        assert agent.report(action["id"], "running").status_code == 200
        assert agent.logs(action["id"], [f"doing {action['name']}"]).status_code == 200
        assert agent.report(action["id"], "success", exit_code=0).status_code == 200
    return served


def kinds(api: httpx.Client, **params: Any) -> list[str]:
    items = api.get("/api/v1/events", params={"limit": 1000, **params}).json()["items"]
    return [event["kind"] for event in items]


def test_workflow_runs_to_success_and_machine_leaves_netboot(
    api: httpx.Client, agent: AgentClient
) -> None:
    assert agent.hello(cpus=4, memory_bytes=8 << 30).status_code == 200
    workflow = provision(api)
    # The machine's BMC is `manual`: the power steps are asked of an operator (PREPARING), and
    # the workflow does not wait for them.
    assert workflow["state"] == "PREPARING" and workflow["boot"] == "netboot"
    assert api.get("/api/v1/machines/m1").json()["state"] == "provisioning"

    served = run_to_end(agent)

    assert [a["name"] for a in served] == ["step-0", "step-1", "step-2"]
    assert served[0]["environment"] == {} and served[0]["image"] == "example/step-0:v1"
    shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert shown["state"] == "SUCCESS"
    assert shown["progress"] == {"done": 3, "total": 3}
    assert shown["actions"][0]["journal"][0]["log_tail"] == ["doing step-0"]
    machine = api.get("/api/v1/machines/m1").json()
    assert machine["state"] == "provisioned"
    assert machine["attributes"] == {"cpus": 4, "memory_bytes": 8 << 30}
    assert all(not i["allow_pxe"] and not i["allow_workflow"] for i in machine["interfaces"])
    assert machine["bmc"] == {
        "driver": "manual",
        "address": "192.0.2.200",
        "port": None,
        "username": "root",
        "has_password": True,
        "insecure_tls": False,
        "options": {},
    }
    every = kinds(api, workflow=workflow["id"])
    assert "power.job.queued" in every, "what the operator is asked to do is recorded"
    seen = [kind for kind in every if not kind.startswith("power.")]
    assert seen[:2] == ["machine.state", "workflow.created"]
    assert seen[-2:] == ["machine.state", "workflow.succeeded"]
    assert seen.count("workflow.action.started") == 3
    assert "calvin" not in str(api.get("/api/v1/events", params={"limit": 1000}).json())


def test_workflow_found_by_id_prefix(api: httpx.Client, agent: AgentClient) -> None:
    workflow = provision(api)
    assert api.get(f"/api/v1/workflows/{workflow['id'][:12]}").json()["id"] == workflow["id"]
    assert api.get(f"/api/v1/workflows/{workflow['id'][:4]}").status_code == 404


def test_reports_are_idempotent_and_late_reports_conflict(
    api: httpx.Client, agent: AgentClient
) -> None:
    provision(api)
    action = agent.next()
    assert action is not None
    assert agent.report(action["id"], "success", exit_code=0).status_code == 200
    again = agent.report(action["id"], "success", exit_code=0)
    assert again.status_code == 200 and again.json()["state"] == "SUCCESS"
    contrary = agent.report(action["id"], "failed", exit_code=1)
    assert contrary.status_code == 409
    assert "already ended as SUCCESS" in contrary.json()["detail"]["message"]
    second = agent.next()
    assert second is not None and second["name"] == "step-1"


def test_log_resend_is_a_no_op(api: httpx.Client, agent: AgentClient) -> None:
    provision(api)
    action = agent.next()
    assert action is not None
    assert agent.logs(action["id"], ["a", "b"], seq=0).json() == {"received": 2}
    assert agent.logs(action["id"], ["a", "b", "c"], seq=0).json() == {"received": 3}
    gap = agent.logs(action["id"], ["z"], seq=7)
    assert gap.status_code == 409 and "resend from seq 3" in gap.json()["detail"]["message"]


def test_retries_with_backoff_are_journaled(api: httpx.Client, live: LiveServer) -> None:
    template = template_yaml(
        "flaky",
        [{"name": "wipe", "image": "wipe", "timeout": 60, "retries": 2, "retry_backoff": 0.2}],
    )
    agent = enrol(api, live, "m2", "52:54:00:00:00:02", template)
    workflow = provision(api, "flaky", "m2")
    for attempt in (1, 2):
        action = agent.next(wait=10)
        assert action is not None and action["attempt"] == attempt
        agent.report(action["id"], "failed", exit_code=3, message="disk busy")
    action = agent.next(wait=10)
    assert action is not None and action["attempt"] == 3
    agent.report(action["id"], "success", exit_code=0)
    shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert shown["state"] == "SUCCESS"
    journal = shown["actions"][0]["journal"]
    assert [a["state"] for a in journal] == ["FAILED", "FAILED", "SUCCESS"]
    assert journal[0]["exit_code"] == 3 and journal[0]["message"] == "disk busy"
    assert kinds(api, workflow=workflow["id"]).count("workflow.action.retrying") == 2
    agent.close()


def test_action_timeout_fails_workflow_and_machine(api: httpx.Client, live: LiveServer) -> None:
    template = template_yaml("slow", [{"name": "hang", "image": "hang", "timeout": 1}])
    agent = enrol(api, live, "m3", "52:54:00:00:00:03", template)
    workflow = provision(api, "slow", "m3")
    assert agent.next() is not None
    shown = wait_for_state(api, workflow["id"], "TIMEOUT")
    assert "hang timeout" in shown["reason"]
    machine = api.get("/api/v1/machines/m3").json()
    assert machine["state"] == "failed" and "hang timeout" in machine["state_reason"]
    agent.close()


def test_global_timeout(api: httpx.Client, live: LiveServer) -> None:
    template = template_yaml(
        "short", [{"name": "long", "image": "x", "timeout": 600}], global_timeout=1
    )
    agent = enrol(api, live, "m4", "52:54:00:00:00:04", template)
    workflow = provision(api, "short", "m4")
    action = agent.next()
    assert action is not None
    shown = wait_for_state(api, workflow["id"], "TIMEOUT")
    assert shown["reason"] == "global timeout of 1s exceeded"
    assert agent.report(action["id"], "success").status_code == 409
    agent.close()


def wait_for_state(api: httpx.Client, workflow_id: str, state: str) -> dict[str, Any]:
    """Polls for a state the controller reaches on its own; bounded so a bug fails the test."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown: dict[str, Any] = api.get(f"/api/v1/workflows/{workflow_id}").json()
        if shown["state"] == state:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"workflow never reached {state}: {shown}")


def test_resume_after_fixing_template_keeps_history(api: httpx.Client, agent: AgentClient) -> None:
    workflow = provision(api)
    first = agent.next()
    assert first is not None
    agent.report(first["id"], "success", exit_code=0)
    broken = agent.next()
    assert broken is not None and broken["name"] == "step-1"
    agent.report(broken["id"], "failed", exit_code=2, message="bad image")
    failed = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert failed["state"] == "FAILED"
    assert failed["reason"] == "action step-1 failed (exit 2): bad image"
    assert api.get("/api/v1/machines/m1").json()["state"] == "failed"

    fixed = simple_template().replace("example/step-1:v1", "example/step-1:v2")
    assert apply(api, fixed).json()["results"][0]["action"] == "updated"
    resumed = api.post(f"/api/v1/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    again = agent.next()
    assert again is not None and again["name"] == "step-1" and again["image"] == "example/step-1:v2"
    assert again["attempt"] == 2
    agent.report(again["id"], "success", exit_code=0)
    run_to_end(agent)
    shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert shown["state"] == "SUCCESS"
    assert [a["state"] for a in shown["actions"][1]["journal"]] == ["FAILED", "SUCCESS"]
    assert shown["actions"][0]["attempts"] == 1
    resumed_events = [
        e
        for e in api.get("/api/v1/events", params={"workflow": workflow["id"]}).json()["items"]
        if e["kind"] == "workflow.resumed"
    ]
    assert resumed_events[0]["data"]["template_changed"] is True


def test_rerun_keeps_earlier_runs(api: httpx.Client, agent: AgentClient) -> None:
    workflow = provision(api)
    run_to_end(agent)
    assert api.post(f"/api/v1/workflows/{workflow['id']}/resume").status_code == 409
    rerun = api.post(f"/api/v1/workflows/{workflow['id']}/rerun")
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["run"] == 2 and rerun.json()["state"] == "PREPARING"
    assert len(run_to_end(agent)) == 3
    shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert shown["state"] == "SUCCESS"
    assert [a["run"] for a in shown["actions"]] == [1, 1, 1, 2, 2, 2]


def test_cancel_ends_workflow_and_rejects_late_reports(
    api: httpx.Client, agent: AgentClient
) -> None:
    workflow = provision(api)
    action = agent.next()
    assert action is not None
    cancelled = api.post(f"/api/v1/workflows/{workflow['id']}/cancel").json()
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["actions"][0]["state"] == "CANCELLED"
    assert agent.report(action["id"], "success").status_code == 409
    assert agent.next() is None
    assert api.post(f"/api/v1/workflows/{workflow['id']}/cancel").status_code == 409
    machine = api.get("/api/v1/machines/m1").json()
    assert machine["state"] == "failed" and machine["workflow"] is None


def test_one_active_workflow_per_machine(api: httpx.Client, agent: AgentClient) -> None:
    provision(api)
    second = api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
    assert second.status_code == 409
    assert "already runs workflow" in second.json()["detail"]["message"]


def test_server_restart_mid_action_serves_it_again(live: LiveServer, agent: AgentClient) -> None:
    with live.client() as api:
        workflow = provision(api)
    action = agent.next()
    assert action is not None
    live.stop()
    restarted = start_server(live.settings)
    try:
        agent.http.base_url = httpx.URL(restarted.url)
        again = agent.next()
        assert again is not None and again["id"] == action["id"]
        assert agent.report(again["id"], "success", exit_code=0).status_code == 200
        run_to_end(agent)
        with restarted.client() as api:
            assert api.get(f"/api/v1/workflows/{workflow['id']}").json()["state"] == "SUCCESS"
    finally:
        restarted.stop()


def test_long_poll_wakes_when_work_arrives(api: httpx.Client, agent: AgentClient) -> None:
    got: list[dict[str, Any] | None] = []
    waiter = threading.Thread(target=lambda: got.append(agent.next(wait=60)))
    waiter.start()
    time.sleep(0.3)
    provision(api)
    waiter.join(timeout=60)
    assert got and got[0] is not None and got[0]["name"] == "step-0"


def test_long_poll_without_work_answers_204(agent: AgentClient) -> None:
    assert agent.next(wait=0.2) is None


def test_fifty_agents_at_once(api: httpx.Client, live: LiveServer) -> None:
    docs = [simple_template("quick", count=2)]
    macs = [f"52:54:00:00:10:{i:02x}" for i in range(50)]
    docs += [machine_yaml(f"n{i:02d}", mac) for i, mac in enumerate(macs)]
    assert apply(api, "---\n".join(docs)).status_code == 200
    agents = []
    for i, mac in enumerate(macs):
        token = api.post(f"/api/v1/machines/n{i:02d}/agent-token").json()["token"]
        agents.append(AgentClient(live.url, token, mac))
        provision(api, "quick", f"n{i:02d}")
    errors: list[BaseException] = []

    def drive(agent: AgentClient) -> None:
        try:
            assert len(run_to_end(agent)) == 2
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    listed = api.get("/api/v1/workflows", params={"state": "SUCCESS"}).json()
    assert listed["count"] == 50
    for agent in agents:
        agent.close()


def test_concurrent_identical_reports_apply_once(api: httpx.Client, agent: AgentClient) -> None:
    workflow = provision(api)
    action = agent.next()
    assert action is not None
    statuses: list[int] = []

    def send() -> None:
        statuses.append(agent.report(action["id"], "success", exit_code=0).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * 8
    assert kinds(api, workflow=workflow["id"]).count("workflow.action.succeeded") == 1


def test_resume_after_global_timeout_during_backoff(api: httpx.Client, live: LiveServer) -> None:
    template = template_yaml(
        "patient",
        [{"name": "wipe", "image": "wipe", "timeout": 60, "retries": 3, "retry_backoff": 600}],
        global_timeout=1,
    )
    agent = enrol(api, live, "m5", "52:54:00:00:00:05", template)
    workflow = provision(api, "patient", "m5")
    action = agent.next()
    assert action is not None
    agent.report(action["id"], "failed", exit_code=1)
    timed_out = wait_for_state(api, workflow["id"], "TIMEOUT")
    assert timed_out["actions"][0]["state"] == "CANCELLED"
    fixed = template.replace("global_timeout: 1", "global_timeout: 600")
    apply(api, fixed)
    resumed = api.post(f"/api/v1/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["global_timeout"] == 600
    again = agent.next()
    assert again is not None and again["attempt"] == 2
    agent.report(again["id"], "success")
    assert api.get(f"/api/v1/workflows/{workflow['id']}").json()["state"] == "SUCCESS"
    agent.close()


def test_reapply_keeps_netboot_off_and_waits_for_busy_machines(
    api: httpx.Client, agent: AgentClient
) -> None:
    provision(api)
    busy = apply(api, machine_yaml("m1", MAC, "192.0.2.11").replace("rack: r1", "rack: r9"))
    assert busy.status_code == 409 and "changes wait" in busy.json()["detail"]["message"]
    run_to_end(agent)
    relabel = apply(api, machine_yaml("m1", MAC, "192.0.2.11").replace("rack: r1", "rack: r9"))
    assert relabel.json()["results"][0]["action"] == "updated"
    machine = api.get("/api/v1/machines/m1").json()
    assert machine["labels"] == {"rack": "r9"}
    assert machine["interfaces"][0]["allow_pxe"] is False


def test_running_report_changes_nothing_and_log_seq_resumes(
    api: httpx.Client, agent: AgentClient
) -> None:
    provision(api)
    action = agent.next()
    assert action is not None and action["log_seq"] == 0
    agent.logs(action["id"], ["one", "two"])
    running = agent.report(action["id"], "running")
    assert running.json() == {"id": action["id"], "state": "RUNNING", "workflow_state": "RUNNING"}
    again = agent.next()
    assert again is not None and again["id"] == action["id"] and again["log_seq"] == 2
