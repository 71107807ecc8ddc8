"""How long the CLI waits for the server, and what it says when it gives up."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from metalflow.cli import client
from tests.manifests import machine, stream
from tests.unit.cli.fakes import FakeServer, Run

APPLY = "/api/v1/apply"
MACHINES = "/api/v1/machines"


def machines_yaml(count: int) -> str:
    return stream(
        *(
            machine(f"n{i:05d}", {"mac": f"02:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x}"})
            for i in range(count)
        )
    )


def applied(count: int) -> dict[str, object]:
    items = [{"kind": "Machine", "name": f"n{i:05d}", "action": "created"} for i in range(count)]
    return {"dry_run": False, "results": items}


def sent_timeout(server: FakeServer) -> dict[str, float]:
    timeout: dict[str, float] = server.last.extensions["timeout"]
    return timeout


def test_an_apply_waits_in_proportion_to_its_body(
    server: FakeServer, run: Run, tmp_path: Path
) -> None:
    (tmp_path / "small.yaml").write_text(machines_yaml(1))
    (tmp_path / "fleet.yaml").write_text(machines_yaml(20_000))
    server.reply("POST", APPLY, applied(1))

    assert run("apply", "-f", "small.yaml").exit_code == 0
    small = sent_timeout(server)
    assert run("apply", "-f", "fleet.yaml").exit_code == 0
    fleet = sent_timeout(server)

    body = len(server.last.content)
    assert body > 2**20
    assert small["read"] >= client.WORK_BASE_SECONDS
    assert fleet["read"] >= small["read"] + client.WORK_SECONDS_PER_MIB * body / 2**20 * 0.99
    assert fleet["write"] == fleet["read"]
    assert fleet["connect"] == small["connect"] == client.CONNECT_SECONDS


def test_a_list_connects_quickly_and_waits_per_read(server: FakeServer, run: Run) -> None:
    server.reply("GET", MACHINES, {"items": [], "count": 0})

    assert run("machine", "list").exit_code == 0

    assert sent_timeout(server)["connect"] == client.CONNECT_SECONDS
    assert sent_timeout(server)["read"] == client.TIMEOUT.read


def test_an_apply_that_times_out_says_it_may_have_been_applied_and_how_to_check(
    server: FakeServer, run: Run, tmp_path: Path
) -> None:
    (tmp_path / "fleet.yaml").write_text(machines_yaml(3))
    server.fail("POST", APPLY, httpx.ReadTimeout)

    result = run("apply", "-f", "fleet.yaml")

    assert result.exit_code == 1
    assert result.stdout == ""
    message = result.stderr
    assert message.startswith("error: timed out after ")
    assert "the server may still have carried out the request" in message
    assert "`metalflow apply --dry-run` with the same files" in message
    assert "unchanged" in message
    assert "`metalflow machine list`" in message
    assert message.count("\n") == 1


def test_a_dropped_connection_on_a_write_is_not_called_a_failure_of_the_write(
    server: FakeServer, run: Run
) -> None:
    server.fail("POST", "/api/v1/machines/m1/provision", httpx.RemoteProtocolError)

    result = run("provision", "m1", "--template", "ubuntu")

    assert result.exit_code == 1
    assert "lost connection to metalflow at http://127.0.0.1:7080" in result.stderr
    assert "the server may still have carried out the request" in result.stderr
    assert "`metalflow workflow list`" in result.stderr


def test_an_assignment_that_timed_out_says_how_to_check_it(server: FakeServer, run: Run) -> None:
    server.fail("PUT", "/api/v1/machines/m1/project", httpx.ReadTimeout)

    result = run("machine", "assign", "m1", "--project", "p-web")

    assert result.exit_code == 1
    assert "the server may still have carried out the request" in result.stderr
    assert "check with `metalflow machine show m1`" in result.stderr


def test_a_read_that_times_out_says_only_that(server: FakeServer, run: Run) -> None:
    server.fail("GET", MACHINES, httpx.ReadTimeout)

    result = run("machine", "list")

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: timed out after {client.TIMEOUT.read:.0f} s waiting for metalflow at "
        "http://127.0.0.1:7080 to answer GET\n"
    )


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (httpx.ConnectTimeout, "nothing was sent"),
        (httpx.PoolTimeout, "nothing was sent"),
        (httpx.WriteTimeout, "it was not sent whole, so nothing was applied"),
    ],
)
def test_a_request_that_never_reached_the_server_says_nothing_was_applied(
    server: FakeServer, run: Run, tmp_path: Path, error: type[httpx.TransportError], says: str
) -> None:
    (tmp_path / "m.yaml").write_text(machines_yaml(1))
    server.fail("POST", APPLY, error)

    result = run("apply", "-f", "m.yaml")

    assert result.exit_code == 1
    assert says in result.stderr
    assert "may still have" not in result.stderr
