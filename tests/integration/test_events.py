"""The event log: old events are pruned in batches, newer ones stay; boot and metadata events
keep the time they happened, and a machine's log lists causes before what they caused."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from metalflow.config import Settings
from metalflow.db.base import utcnow
from metalflow.events import (
    PRUNE_BATCH,
    Event,
    EventFilter,
    list_events,
    persist,
    prune_events,
    record,
)
from metalflow.index.views import MachineView
from metalflow.recorder import BootEventRecorder
from metalflow.server import build_app, build_services
from metalflow.services import Services
from tests.integration.bootlab import wait_for
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.integration.test_workflows import provision, run_to_end
from tests.manifests import machine_yaml, simple_template

MAC = "52:54:00:00:e7:01"
OTHER_MAC = "52:54:00:00:e7:02"


def test_prune_deletes_only_old_events_in_batches(settings: Settings) -> None:
    services = build_services(settings)
    now = utcnow()
    old = now - dt.timedelta(days=40)
    try:
        with services.db.write() as session:
            session.add_all(
                Event(time=old, kind="test.old", data={}) for _ in range(PRUNE_BATCH + 5)
            )
            session.add(Event(time=now, kind="test.new", data={}))
        cutoff = now - dt.timedelta(days=30)
        with services.db.write() as session:
            assert prune_events(session, cutoff) == PRUNE_BATCH
        with services.db.write() as session:
            assert prune_events(session, cutoff) == 5
        with services.db.write() as session:
            assert prune_events(session, cutoff) == 0
        with services.db.read() as session:
            left = list_events(session, EventFilter(kind_prefix="test."))
        assert [event.kind for event in left] == ["test.new"]
    finally:
        services.db.dispose()


class FakeClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def indexed(services: Services, mac: str) -> MachineView:
    """The machine as the boot servers see it (the index follows changes in the background)."""
    wait_for(lambda: services.index.by_mac(mac) is not None)
    found = services.index.by_mac(mac)
    assert found is not None
    return found


def machine_events(services: Services, name: str) -> list[Event]:
    with services.db.read() as session:
        return list_events(session, EventFilter(machine=name))


def test_batched_boot_events_keep_the_times_they_were_recorded_at(
    live: LiveServer, api: httpx.Client
) -> None:
    services = live.services
    assert apply(api, machine_yaml("m1", MAC, "192.0.2.11")).status_code == 200
    m1 = indexed(services, MAC)
    start = utcnow() - dt.timedelta(minutes=5)
    clock = FakeClock(start)
    recorder = BootEventRecorder(services.db, clock)
    recorder.record("dhcp.offer", m1, MAC, mac=MAC)
    clock.now = start + dt.timedelta(seconds=1)
    recorder.record("tftp.transfer", m1, "ipxe.efi:done", file="ipxe.efi")
    clock.now = start + dt.timedelta(seconds=2)
    recorder.record("boot.script", m1, f"workflow:{MAC}", script="workflow")

    asyncio.run(recorder.flush())

    written = [
        e for e in machine_events(services, "m1") if e.kind.startswith(("dhcp", "tftp", "boot"))
    ]
    assert [e.kind for e in written] == ["dhcp.offer", "tftp.transfer", "boot.script"]
    assert [(e.time - start).total_seconds() for e in written] == [0, 1, 2]


def test_a_transaction_about_a_machine_writes_its_queued_events_first(
    live: LiveServer, api: httpx.Client
) -> None:
    """Queued events of other machines stay queued; this machine's get the lower ids."""
    services = live.services
    both = machine_yaml("m1", MAC, "192.0.2.11") + "---\n" + machine_yaml("m2", OTHER_MAC)
    assert apply(api, both).status_code == 200
    m1, m2 = indexed(services, MAC), indexed(services, OTHER_MAC)
    recorder = BootEventRecorder(services.db)
    recorder.record("boot.script", m1, f"exit:{MAC}", script="exit")
    recorder.record("boot.script", m2, f"exit:{OTHER_MAC}", script="exit")
    with services.db.write() as session:
        record(session, "test.caused", machine_id=m1.id, machine_name=m1.name)

    assert [e.kind for e in machine_events(services, "m1")][-2:] == ["boot.script", "test.caused"]
    assert len(recorder.pending) == 1, "m2's event waits for the next flush"
    asyncio.run(recorder.flush())
    assert machine_events(services, "m2")[-1].kind == "boot.script"


def test_an_event_recorded_while_a_transaction_commits_keeps_ids_and_times_in_step(
    live: LiveServer, api: httpx.Client
) -> None:
    """A phone-home recorded after a transaction about its machine has been joined by the
    recorder, but before the transaction stamps its events, is still listed in time order."""
    services = live.services
    assert apply(api, machine_yaml("m1", MAC, "192.0.2.11")).status_code == 200
    m1 = indexed(services, MAC)
    recorder = BootEventRecorder(services.db)

    def record_meanwhile(session: object, outbox: object) -> None:
        recorder.record("metadata.phone_home", m1, "phone-home")

    hooks = services.db.before_commit
    hooks.insert(hooks.index(persist), record_meanwhile)
    try:
        with services.db.write() as session:
            record(session, "test.caused", machine_id=m1.id, machine_name=m1.name)
    finally:
        hooks.remove(record_meanwhile)
    asyncio.run(recorder.flush())

    written = machine_events(services, "m1")
    assert [e.kind for e in written][-2:] == ["metadata.phone_home", "test.caused"]
    times = [e.time for e in written]
    assert times == sorted(times), [(e.kind, e.time.isoformat()) for e in written]


@pytest.fixture
def metadata_live(settings: Settings) -> Iterator[LiveServer]:
    """A live server answering the metadata paths on its API port, the caller named by
    X-Forwarded-For from 127.0.0.1 (as behind a proxy)."""
    settings = settings.model_copy(
        update={"metadata_on_api_port": True, "metadata_trusted_proxies": ["127.0.0.1/32"]}
    )
    services = build_services(settings)
    app = build_app(services)
    config = uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{settings.http}"
    wait_for(lambda: server.started)
    token = (settings.data_dir / "admin-token").read_text().strip()
    live = LiveServer(settings, services, url, token, thread, server)
    try:
        yield live
    finally:
        live.stop()


def test_phone_home_is_listed_before_the_active_it_causes(metadata_live: LiveServer) -> None:
    live = metadata_live
    with live.client() as api:
        applied = apply(api, machine_yaml("m1", MAC, "192.0.2.11") + "---\n" + simple_template())
        assert applied.status_code == 200, applied.text
        token = api.post("/api/v1/machines/m1/agent-token").json()["token"]
        agent = AgentClient(live.url, token, MAC)
        try:
            assert agent.hello().status_code == 200
            provision(api)
            run_to_end(agent)
        finally:
            agent.close()
        assert api.get("/api/v1/machines/m1").json()["state"] == "provisioned"
        wait_for(lambda: indexed(live.services, MAC).state == "provisioned")

        posted = httpx.post(
            f"{live.url}/phone-home",
            data={"instance_id": "m1"},
            headers={"X-Forwarded-For": "192.0.2.11"},
        )
        assert posted.status_code == 204, posted.text
        wait_for(lambda: api.get("/api/v1/machines/m1").json()["state"] == "active")

        listed = api.get("/api/v1/events", params={"machine": "m1", "limit": 1000}).json()
    items = listed["items"]
    kinds = [item["kind"] for item in items]
    active = next(
        i
        for i, item in enumerate(items)
        if item["kind"] == "machine.state" and item["data"]["after"] == "active"
    )
    assert "metadata.phone_home" in kinds[:active], f"the phone-home comes first: {kinds}"
    times = [dt.datetime.fromisoformat(item["time"]) for item in items]
    assert times == sorted(times), f"times go forward with the log: {kinds}"
    ids = [item["id"] for item in items]
    assert ids == sorted(ids)
