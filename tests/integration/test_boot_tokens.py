"""No token harvested from an iPXE script can fake an install (docs/agent-protocol.md, Identity).

The attacks, against a live server: fetch a machine's script from another address; replay the
boot token and the run token after the run ended, after the workflow started again, after the
boot token's TTL, and a second time while the run is active. And what must keep working: the
agent that restarts in the same boot, a lease instead of a reservation, the operator's opt-outs.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metalflow.agent.client import Client, ProtocolError
from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.config import ScriptToken, Settings
from tests.integration.conftest import LiveServer, apply, start_server
from tests.manifests import machine_yaml, simple_template

MAC = "52:54:00:aa:0b:01"
KEY = "k" * 43
OTHER_KEY = "o" * 43


@pytest.fixture
def serve(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"kernel" * 100)
    initrd.write_bytes(b"initrd" * 100)
    started: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        update = {"kernel": kernel, "initrd": initrd, **overrides}
        server = start_server(settings.model_copy(update=update))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def enrol(api: httpx.Client, ip: str | None = "127.0.0.1", count: int = 2) -> dict[str, Any]:
    """web1 at `ip` (the test's own address by default) with a workflow of `count` steps."""
    response = apply(api, machine_yaml("web1", MAC, ip) + "---\n" + simple_template(count=count))
    assert response.status_code == 200, response.text
    started = api.post("/api/v1/machines/web1/provision", json={"template": "ubuntu"})
    assert started.status_code == 201, started.text
    workflow: dict[str, Any] = started.json()
    return workflow


def fetch_script(live: LiveServer, words: str, path: str = f"/boot/{MAC}.ipxe") -> str:
    """What firmware gets, once the index has followed the last change."""
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(live.url + path, timeout=10).text
        if words in text or time.monotonic() > deadline:
            assert words in text, text
            return text
        time.sleep(0.02)


def boot_token(live: LiveServer, start: int = 1) -> str:
    """A boot token of the workflow's `start`, from the script as a machine fetches it."""
    deadline = time.monotonic() + 10
    while True:
        found = re.search(r" metalflow\.token=(\S+) ", fetch_script(live, "metalflow.token="))
        assert found is not None
        claim = live.services.keyring.parse_boot_token(found.group(1))
        if claim is not None and claim.start == start:
            return found.group(1)
        assert time.monotonic() < deadline, f"no boot token of start {start}: {found.group(1)}"
        time.sleep(0.02)


def hello(live: LiveServer, token: str, key: str | None = KEY) -> httpx.Response:
    body: dict[str, Any] = {"mac": MAC, "attributes": {"cpu": "test"}}
    if key is not None:
        body["key"] = key
    return httpx.post(
        f"{live.url}/api/v1/agent/hello",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def agent_get(live: LiveServer, token: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{live.url}/api/v1/agent/{path}", headers=headers, timeout=30)


def report(live: LiveServer, token: str, attempt: int, status: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/agent/actions/{attempt}/status",
        json={"status": status, "exit_code": 0 if status == "success" else 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def events(api: httpx.Client, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """Boot events are written in batches: poll until `count` are there."""
    deadline = time.monotonic() + 10
    while True:
        params = {"kind": kind, "limit": "1000"}
        items: list[dict[str, Any]] = api.get("/api/v1/events", params=params).json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            assert len(items) >= count, items
            return items
        time.sleep(0.05)


def refused_with(response: httpx.Response, words: str) -> None:
    assert response.status_code == 401, response.text
    assert words in response.json()["detail"]["message"], response.text


def test_a_script_fetched_from_another_address_carries_no_token(
    live: LiveServer, api: httpx.Client
) -> None:
    """The attack of the issue: any caller asks for the script of a machine by its MAC."""
    enrol(api, ip="192.0.2.31")
    for path in (f"/boot/{MAC}.ipxe", f"/boot/auto.ipxe?mac={MAC}"):
        text = fetch_script(live, "refused:", path)
        assert "metalflow.token" not in text and "mfa." not in text and "mfb." not in text
        assert (
            f"echo metalflow: refused: metalflow gave {MAC} the address 192.0.2.31 and this"
            " request came from 127.0.0.1" in text
        )
        assert "--script-token-any-address" in text
        assert text.rstrip().endswith("exit 1")
    refused = events(api, "boot.script")[0]
    assert refused["machine"] == "web1"
    assert refused["data"]["script"] == "refused" and refused["data"]["remote"] == "127.0.0.1"
    assert httpx.get(f"{live.url}/healthz").status_code == 200


def test_harvested_tokens_die_with_the_run_and_with_the_next_start(
    live: LiveServer, api: httpx.Client
) -> None:
    workflow = enrol(api, count=1)
    harvested = boot_token(live)
    exchanged = hello(live, harvested)
    assert exchanged.status_code == 200, exchanged.text
    run_token = exchanged.json()["token"]
    assert run_token.startswith("mfr.") and exchanged.json()["machine"] == "web1"
    action = agent_get(live, run_token, "next").json()
    assert report(live, run_token, action["id"], "failed").status_code == 200
    shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
    assert shown["state"] == "FAILED"

    # The run ended: neither token can report the success that would make web1 `provisioned`.
    refused_with(hello(live, harvested, key=None), "exchanged already")
    refused_with(hello(live, harvested, key=OTHER_KEY), "exchanged already")
    assert agent_get(live, run_token, "next").status_code == 401
    assert report(live, run_token, action["id"], "success").status_code == 401
    assert agent_get(live, run_token, "ping").status_code == 401
    # The agent that exchanged it (it holds the key) is told to wait, and gets no token either.
    waiting = hello(live, harvested)
    refused_with(waiting, "not running")
    assert waiting.json()["detail"]["field"] == "workflow" and "mfr." not in waiting.text
    assert api.get("/api/v1/machines/web1").json()["state"] == "failed"

    # The next start: the run token of start 1 stays refused, and so does the boot token
    # without the key; with it, the waiting agent goes on with a run token of start 2.
    rerun = api.post(f"/api/v1/workflows/{workflow['id']}/rerun")
    assert rerun.status_code == 200, rerun.text
    refused_with(hello(live, harvested, key=None), "exchanged already")
    assert agent_get(live, run_token, "next").status_code == 401
    renewed = hello(live, harvested)
    assert renewed.status_code == 200, renewed.text
    renewed_token = renewed.json()["token"]
    claim = live.services.keyring.parse_run_token(renewed_token)
    assert claim is not None and claim.start == 2
    assert agent_get(live, renewed_token, "ping").status_code == 200
    assert agent_get(live, run_token, "ping").status_code == 401
    # The machine netboots again: a fresh script's token replaces the older exchange.
    fresh = hello(live, boot_token(live, start=2), key=OTHER_KEY)
    assert fresh.status_code == 200, fresh.text
    assert agent_get(live, fresh.json()["token"], "ping").status_code == 200
    assert agent_get(live, renewed_token, "ping").status_code == 401
    refused_with(hello(live, harvested), "started again since")
    assert api.get("/api/v1/machines/web1").json()["state"] == "provisioning"

    exchanges = events(api, "agent.token.exchanged", 3)
    assert sorted((e["data"]["start"], e["data"]["again"]) for e in exchanges) == [
        (1, False),
        (2, False),
        (2, True),
    ]
    assert all(e["workflow"] == workflow["id"] for e in exchanges)
    assert all(e["data"]["remote"] == "127.0.0.1" for e in exchanges)
    refusals = events(api, "agent.token.refused", 5)
    assert all(e["data"]["remote"] == "127.0.0.1" for e in refusals)
    assert harvested not in str(exchanges + refusals) and run_token not in str(exchanges)


def test_a_boot_token_is_exchanged_once_except_by_the_agent_that_did(
    live: LiveServer, api: httpx.Client
) -> None:
    enrol(api)
    token = boot_token(live)
    first = hello(live, token)
    assert first.status_code == 200, first.text
    refused_with(hello(live, token, key=None), "exchanged already")
    refused_with(hello(live, token, key=OTHER_KEY), "exchanged already")
    again = hello(live, token)
    assert again.status_code == 200, again.text
    assert again.json()["token"] == first.json()["token"], "the restarted agent goes on"

    # The machine netboots again in the same run: the newer token replaces the older one.
    newer = hello(live, boot_token(live), key=OTHER_KEY)
    assert newer.status_code == 200, newer.text
    assert agent_get(live, first.json()["token"], "ping").status_code == 401
    assert agent_get(live, newer.json()["token"], "ping").status_code == 200
    refused_with(hello(live, token), "a newer boot token")
    # A boot token is for hello only.
    assert agent_get(live, token, "next").status_code == 403


def test_a_boot_token_past_its_ttl_is_refused(serve: Callable[..., LiveServer]) -> None:
    live = serve(boot_token_ttl=1)
    with live.client() as api:
        enrol(api)
        token = boot_token(live)
        claim = live.services.keyring.parse_boot_token(token)
        assert claim is not None
        while time.time() < claim.expires:
            time.sleep(0.05)
        refused_with(hello(live, token), "expired")
        assert api.get("/api/v1/machines/web1").json()["state"] == "provisioning"


def test_the_real_agent_client_exchanges_and_a_restarted_one_goes_on(
    live: LiveServer, api: httpx.Client
) -> None:
    enrol(api, count=1)
    token = boot_token(live)
    agent = Client(live.url, token, boot_key=KEY)
    agent.hello(MAC, {"cpu": "test"})
    assert agent.token.startswith("mfr.")
    action = agent.next(wait=0)
    assert action is not None
    restarted = Client(live.url, token, boot_key=KEY)
    restarted.hello(MAC, {"cpu": "test"})
    assert restarted.token == agent.token
    assert restarted.status(int(action["id"]), "success", exit_code=0)["state"] == "SUCCESS"
    assert api.get("/api/v1/machines/web1").json()["state"] == "provisioned"
    stranger = Client(live.url, token, boot_key=OTHER_KEY)
    with pytest.raises(ProtocolError) as caught:
        stranger.hello(MAC, {})
    assert caught.value.status == 401 and "netboot the machine again" in str(caught.value)


def test_the_agent_waits_through_a_failure_and_goes_on_after_the_resume(
    live: LiveServer, api: httpx.Client
) -> None:
    workflow = enrol(api, count=1)
    agent = Client(live.url, boot_token(live), boot_key=KEY, retry_delays=quick)
    agent.hello(MAC, {})
    action = agent.next(wait=0)
    assert action is not None
    agent.status(int(action["id"]), "failed", exit_code=1)
    found: list[dict[str, Any] | None] = []
    waiter = threading.Thread(target=lambda: found.append(agent.next(wait=0)), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 10
    while not any("not running" in str(e["data"]) for e in api_events(api)):
        assert time.monotonic() < deadline, "the agent never asked while the workflow failed"
        time.sleep(0.05)
    assert not found, "nothing to run while the workflow is FAILED"
    resumed = api.post(f"/api/v1/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    waiter.join(timeout=30)
    assert found and found[0] is not None and found[0]["name"] == action["name"]
    assert found[0]["attempt"] == 2
    agent.stop.set()


def quick() -> Iterator[float]:
    while True:
        yield 0.05


def api_events(api: httpx.Client) -> list[dict[str, Any]]:
    params = {"kind": "agent.token.refused", "limit": "1000"}
    items: list[dict[str, Any]] = api.get("/api/v1/events", params=params).json()["items"]
    return items


def test_a_pool_lease_counts_as_the_address_metalflow_gave(
    live: LiveServer, api: httpx.Client
) -> None:
    enrol(api, ip=None)
    fetch_script(live, "no address (no reservation, no lease)")
    with live.services.db.write() as session:
        session.add(
            DhcpLease(
                mac=MAC,
                address="127.0.0.1",
                subnet="127.0.0.0/8",
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            )
        )
    assert hello(live, boot_token(live)).status_code == 200


def test_any_address_opt_out(serve: Callable[..., LiveServer]) -> None:
    live = serve(script_token_any_address=True)
    with live.client() as api:
        enrol(api, ip="192.0.2.31")
        assert hello(live, boot_token(live)).status_code == 200


def test_tinkerbell_setting_puts_the_agent_token_in_the_script(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(script_token=ScriptToken.AGENT, script_token_any_address=True)
    with live.client() as api:
        enrol(api, ip="192.0.2.31")
        agent_token = api.post("/api/v1/machines/web1/agent-token").json()["token"]
        text = fetch_script(live, "metalflow.token=")
        assert f" metalflow.token={agent_token} " in text
        answer = hello(live, agent_token, key=None)
        assert answer.status_code == 200 and "token" not in answer.json()
        served = events(api, "boot.script")
        assert served[0]["data"]["token"] == "agent"
