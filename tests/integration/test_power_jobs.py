"""Power jobs end to end in a running server, against the in-process fake BMC: the API queues
a job, the runner asks the BMC and verifies by polling, every step is an event; one job per BMC
at a time; a workflow with `boot: netboot` is powered into PXE and onto its disk, and a BMC
failure fails it with the BMC's words; the periodic sync sees a change made behind its back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from metalflow.config import Settings
from metalflow.inventory.tables import Machine
from metalflow.power import fake
from metalflow.power.driver import Bmc, BootDevice, PowerAction, PowerState
from tests.integration.conftest import AgentClient, LiveServer, apply, start_server
from tests.manifests import simple_template


@pytest.fixture
def powered(settings: Settings) -> Iterator[LiveServer]:
    server = start_server(settings.model_copy(update={"power_sync_interval": 0.5}))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(powered: LiveServer) -> Iterator[httpx.Client]:
    with powered.client() as client:
        yield client


def add_machine(api: httpx.Client, live: LiveServer, name: str, mac: str, **options: Any) -> str:
    """A machine whose BMC is a fresh fake host with `options` (its knobs); the host's name."""
    host = f"fake-{uuid.uuid4().hex[:8]}"
    manifest = f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  interfaces: [{{mac: "{mac}"}}]
  bmc: {{driver: fake, address: {host}, username: admin, password: secret}}
"""
    assert apply(api, manifest).status_code == 200
    with live.services.db.write() as session:
        machine = session.query(Machine).filter_by(name=name).one()
        machine.bmc_options = {key: str(value) for key, value in options.items()}
    return host


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def kinds(api: httpx.Client, machine: str) -> list[str]:
    items = api.get("/api/v1/events", params={"machine": machine, "limit": 500}).json()["items"]
    return [item["kind"] for item in sorted(items, key=lambda item: item["id"])]


def test_a_power_job_is_asked_verified_and_recorded(api: httpx.Client, powered: LiveServer) -> None:
    host = add_machine(api, powered, "p1", "52:54:00:00:99:01", delay=0.5)
    job = api.post("/api/v1/machines/p1/power", json={"action": "on"}, params={"wait": 30})
    assert job.status_code == 202, job.text
    assert job.json()["state"] == "succeeded", job.json()
    assert job.json()["results"][0]["what"] == "power on"
    assert job.json()["results"][0]["seconds"] >= 0.5, "done only once the BMC reported on"
    assert fake.inspect(host).power is PowerState.ON
    status = api.get("/api/v1/machines/p1/power").json()
    assert status["state"] == "on" and status["driver"] == "fake"
    assert "power on" in status["typical_seconds"]
    seen = kinds(api, "p1")
    for kind in (
        "power.job.queued",
        "power.job.started",
        "power.step.started",
        "power.step.succeeded",
        "power.job.succeeded",
        "power.changed",
    ):
        assert kind in seen, (kind, seen)
    again = api.post("/api/v1/machines/p1/power", json={"action": "on"}, params={"wait": 30})
    assert again.json()["results"][0]["message"] == "already on"
    refused = api.post("/api/v1/machines/p1/power", json={"action": "sideways"})
    assert refused.status_code == 422 and "action" in refused.text


def test_a_refusing_bmc_fails_the_job_with_its_message(
    api: httpx.Client, powered: LiveServer
) -> None:
    add_machine(api, powered, "p2", "52:54:00:00:99:02", fail="power on")
    job = api.post("/api/v1/machines/p2/power", json={"action": "on"}, params={"wait": 30}).json()
    assert job["state"] == "failed"
    assert job["message"].startswith("power on: ") and "secret" not in job["message"]
    no_bmc = """\
apiVersion: metalflow/v1
kind: Machine
metadata: {name: p3}
spec:
  interfaces: [{mac: "52:54:00:00:99:03"}]
"""
    assert apply(api, no_bmc).status_code == 200
    refused = api.post("/api/v1/machines/p3/power", json={"action": "on"})
    assert refused.status_code == 409 and "has no BMC" in refused.text


def test_one_job_at_a_time_per_bmc(api: httpx.Client, powered: LiveServer) -> None:
    add_machine(api, powered, "p4", "52:54:00:00:99:04", delay=0.5)
    first = api.post("/api/v1/machines/p4/power", json={"action": "on"}).json()
    second = api.post("/api/v1/machines/p4/power", json={"action": "off"}).json()
    done = [
        api.get(f"/api/v1/power-jobs/{job['id']}", params={"wait": 30}).json()
        for job in (first, second)
    ]
    assert [job["state"] for job in done] == ["succeeded", "succeeded"]
    assert done[1]["started_at"] >= done[0]["finished_at"], "the second waited for the first"


def test_netboot_workflow_is_powered_into_pxe_and_onto_its_disk(
    api: httpx.Client, powered: LiveServer
) -> None:
    host = add_machine(api, powered, "w1", "52:54:00:00:99:11", state="on", delay=0.2)
    assert apply(api, simple_template("one", count=1)).status_code == 200
    started = api.post("/api/v1/machines/w1/provision", json={"template": "one", "reboot": True})
    assert started.status_code == 201, started.text
    workflow = started.json()
    assert workflow["boot"] == "netboot" and workflow["state"] == "PREPARING"

    def prepared() -> bool:
        try:
            bmc = fake.inspect(host)
        except KeyError:  # no driver made for it yet
            return False
        return bmc.power is PowerState.ON and bmc.boot is not None and "power off" in bmc.calls

    assert wait_for(prepared), fake.inspect(host)
    boot = fake.inspect(host).boot
    assert boot is not None and boot.device is BootDevice.PXE and not boot.persistent
    token = api.post("/api/v1/machines/w1/agent-token").json()["token"]
    agent = AgentClient(powered.url, token, "52:54:00:00:99:11")
    try:
        action = wait_for(lambda: agent.next(wait=1))
        assert action is not None, "the agent gets its action once the netboot job is done"
        assert api.get(f"/api/v1/workflows/{workflow['id']}").json()["state"] == "RUNNING"
        assert agent.report(action["id"], "running").status_code == 200
        assert agent.report(action["id"], "success").status_code == 200
    finally:
        agent.close()

    def succeeded() -> bool:
        return bool(api.get(f"/api/v1/workflows/{workflow['id']}").json()["state"] == "SUCCESS")

    assert wait_for(succeeded), api.get(f"/api/v1/workflows/{workflow['id']}").json()
    boot = fake.inspect(host).boot
    assert boot is not None and boot.device is BootDevice.DISK and boot.persistent
    assert fake.inspect(host).calls.count("power reset") == 1, "rebooted into the disk once"
    assert api.get("/api/v1/machines/w1").json()["state"] == "provisioned"


def test_a_bmc_failure_fails_the_workflow_with_the_bmcs_words(
    api: httpx.Client, powered: LiveServer
) -> None:
    add_machine(api, powered, "w2", "52:54:00:00:99:12", fail="boot-device")
    assert apply(api, simple_template("two", count=1)).status_code == 200
    workflow = api.post("/api/v1/machines/w2/provision", json={"template": "two"}).json()

    def failed() -> dict[str, Any] | None:
        found: dict[str, Any] = api.get(f"/api/v1/workflows/{workflow['id']}").json()
        return found if found["state"] == "FAILED" else None

    found = wait_for(failed)
    assert found is not None, "the workflow must fail when its BMC does"
    assert found["reason"].startswith("BMC: boot device pxe (once, efi): ")
    assert api.get("/api/v1/machines/w2").json()["state"] == "failed"
    without = api.post("/api/v1/machines/w2/provision", json={"template": "two", "power": False})
    assert without.status_code == 201 and without.json()["boot"] is None


def test_the_sync_sees_a_change_made_behind_its_back(
    api: httpx.Client, powered: LiveServer
) -> None:
    host = add_machine(api, powered, "s1", "52:54:00:00:99:21")
    assert wait_for(lambda: api.get("/api/v1/machines/s1/power").json()["state"] == "off")
    fake.FakeDriver(Bmc("fake", host)).set_power(PowerAction.ON)  # someone at the console
    assert wait_for(lambda: api.get("/api/v1/machines/s1/power").json()["state"] == "on")
    assert "power.changed" in kinds(api, "s1")


def test_boot_device_steps_are_skipped_where_the_bmc_is_told_not_to(
    api: httpx.Client, powered: LiveServer
) -> None:
    """A BMC that refuses boot-device commands (ipmi_sim, some old IPMI): the NIC boots first
    and metalflow's iPXE script decides, so the netboot job only powers."""
    host = add_machine(
        api, powered, "w3", "52:54:00:00:99:13", fail="boot-device", boot_device="off"
    )
    assert apply(api, simple_template("three", count=1)).status_code == 200
    workflow = api.post("/api/v1/machines/w3/provision", json={"template": "three"}).json()

    def jobs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = api.get("/api/v1/machines/w3/power").json()["jobs"]
        return found

    assert wait_for(lambda: jobs() and jobs()[0]["state"] == "succeeded"), jobs()
    assert [result["what"] for result in jobs()[0]["results"]] == ["power off", "power on"]
    assert fake.inspect(host).boot is None
    assert api.get(f"/api/v1/workflows/{workflow['id']}").json()["state"] == "PREPARING"
