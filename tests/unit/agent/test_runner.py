"""The runner against an in-memory client: ordering of reports, timeouts, terminal actions."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from metalflow.agent.actions import BUILTINS, Builtin, lookup
from metalflow.agent.actions.base import ActionError, After, Context
from metalflow.agent.actions.container import RUNTIMES
from metalflow.agent.client import Client, Conflict, ProtocolError, Stopped
from metalflow.agent.runner import Runner
from metalflow.agent.system import Log, System


class FakeClient(Client):
    """Records calls in order; serves the given actions, then stops the runner."""

    def __init__(self, actions: list[dict[str, Any]], log_start: int = 0) -> None:
        super().__init__("http://unused", "t")
        self.actions = actions
        self.calls: list[tuple[Any, ...]] = []
        self.lines: list[str] = [f"old{i}" for i in range(log_start)]
        self.state = "RUNNING"

    def hello(self, mac: str, attributes: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("hello", mac))
        return {"machine": "m1", "state": "provisioning"}

    def next(self, wait: float = 30.0) -> dict[str, Any] | None:
        if not self.actions:
            raise Stopped()
        return self.actions.pop(0)

    def status(
        self,
        attempt_id: int,
        status: str,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("status", attempt_id, status, exit_code, message))
        return {"id": attempt_id, "state": self.state if status == "running" else status}

    def logs(self, attempt_id: int, seq: int, lines: list[str], *, attempts: int | None = 3) -> int:
        if seq > len(self.lines):
            raise Conflict(409, f"resend from seq {len(self.lines)}")
        self.lines.extend(lines[len(self.lines) - seq :])
        self.calls.append(("logs", attempt_id, seq, len(lines)))
        return len(self.lines)


class Recorder(System):
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.events = events

    def reboot(self, log: Log) -> None:
        self.events.append(("reboot",))


def action(image: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "attempt": 1,
        "name": "a",
        "image": image,
        "environment": {},
        "timeout": 0,
        "terminal": False,
        "log_seq": 0,
        **extra,
    }


def runner(
    client: FakeClient, extra: dict[str, Builtin] | None = None, system: System | None = None
) -> Runner:
    builtins = {**BUILTINS, **(extra or {})}
    return Runner(
        client,
        system or System(),
        attributes={},
        mac="52:54:00:00:00:01",
        log=lambda _m: None,
        heartbeat=0.05,
        lookup_builtin=lambda image: builtins.get(image) or lookup(image),
    )


def statuses(client: FakeClient) -> list[tuple[Any, ...]]:
    return [c[2:] for c in client.calls if c[0] == "status" and c[2] != "running"]


class NoRuntime(System):
    def which(self, name: str) -> str | None:
        return None if name in RUNTIMES else super().which(name)


class FakeRuntime(System):
    """`podman` is a script that prints its arguments and exits with EXIT_CODE from --env."""

    def __init__(self, script: Path) -> None:
        super().__init__()
        self.script = script
        script.write_text(
            '#!/bin/sh\nfor arg in "$@"; do echo "arg: $arg"; done\n'
            'for arg in "$@"; do\n'
            '    case "$arg" in EXIT_CODE=*) exit "${arg#EXIT_CODE=}" ;; esac\n'
            "done\n"
        )
        script.chmod(0o755)

    def which(self, name: str) -> str | None:
        return str(self.script) if name == "podman" else None


def test_unknown_image_fails_with_the_reason() -> None:
    client = FakeClient([action("example/step:v1")])
    assert runner(client, system=NoRuntime()).run() == 0
    [(status, code, message)] = statuses(client)
    assert (status, code) == ("failed", 127) and "docker, podman or nerdctl" in message
    assert client.calls[0] == ("hello", "52:54:00:00:00:01")


def test_unknown_image_runs_as_a_privileged_container_where_a_runtime_is(tmp_path: Path) -> None:
    step = action(
        "example/step:v1",
        environment={"DEST": "/dev/vda", "EXIT_CODE": "0"},
        volumes=["/dev:/dev", "/lib/firmware:/lib/firmware:ro"],
        pid="host",
        command=["/bin/step", "--now"],
    )
    failing = {**step, "id": 2, "environment": {"EXIT_CODE": "3"}}
    client = FakeClient([step, failing])
    runner(client, system=FakeRuntime(tmp_path / "podman")).run()
    assert [s[:2] for s in statuses(client)] == [("success", 0), ("failed", 3)]
    args = [line[len("arg: ") :] for line in client.lines if line.startswith("arg: ")]
    first = args[: args.index("--now") + 1]
    assert first == [
        "run",
        "--rm",
        "--name",
        "metalflow-action-1",
        "--privileged",
        "--network",
        "host",
        "--pid",
        "host",
        "--volume",
        "/dev:/dev",
        "--volume",
        "/lib/firmware:/lib/firmware:ro",
        "--env",
        "DEST=/dev/vda",
        "--env",
        "EXIT_CODE=0",
        "example/step:v1",
        "/bin/step",
        "--now",
    ]


def test_missing_variable_fails_without_traceback() -> None:
    client = FakeClient([action("quay.io/tinkerbell/actions/image2disk:latest")])
    runner(client).run()
    [(status, code, message)] = statuses(client)
    assert status == "failed" and code == 2 and "IMG_URL is not set" in message
    assert "Traceback" not in " ".join(client.lines)


def test_internal_errors_become_failed_reports() -> None:
    def broken(ctx: Context) -> None:
        raise KeyError("oops")

    client = FakeClient([action("broken")])
    runner(client, {"broken": Builtin("broken", broken)}).run()
    [(status, code, message)] = statuses(client)
    assert (status, code) == ("failed", 1) and "internal error: KeyError('oops')" in message


def test_timeout_cancels_and_reports_timeout() -> None:
    def slow(ctx: Context) -> None:
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)

    client = FakeClient([action("slow", timeout=0.3)])
    started = time.monotonic()
    runner(client, {"slow": Builtin("slow", slow)}).run()
    assert time.monotonic() - started < 5
    [(status, code, message)] = statuses(client)
    assert (status, code) == ("timeout", 124) and "timeout of 0.3s" in message


def test_logs_continue_from_log_seq_and_precede_the_report() -> None:
    def chatty(ctx: Context) -> None:
        for n in range(120):
            ctx.log(f"line {n}")

    client = FakeClient([action("chatty", log_seq=3)], log_start=3)
    runner(client, {"chatty": Builtin("chatty", chatty)}).run()
    assert client.lines[:4] == ["old0", "old1", "old2", "running a (chatty, attempt 1)"]
    assert client.lines[-1] == "line 119" and len(client.lines) == 3 + 1 + 120
    kinds = [c[0] for c in client.calls if c[0] != "status" or c[2] != "running"]
    assert kinds[-1] == "status" and "logs" in kinds
    assert all(c[3] <= 50 for c in client.calls if c[0] == "logs")


def test_log_gap_is_resent_from_where_the_server_is() -> None:
    client = FakeClient([action("chatty", log_seq=5)], log_start=2)
    runner(client, {"chatty": Builtin("chatty", lambda ctx: ctx.log("x"))}).run()
    assert client.lines == ["old0", "old1", "running a (chatty, attempt 1)", "x"]


def test_terminal_builtin_reports_success_before_acting() -> None:
    events: list[tuple[Any, ...]] = []
    client = FakeClient([action("reboot", terminal=True), action("never")])
    client.calls = events
    assert runner(client, system=Recorder(events)).run() == 0
    final = [e for e in events if e[0] == "reboot" or (e[0] == "status" and e[2] != "running")]
    assert final == [("status", 1, "success", 0, None), ("reboot",)]
    assert client.actions == [action("never")]


def test_terminal_prepare_failure_reports_failed_and_does_not_act() -> None:
    events: list[tuple[Any, ...]] = []

    def bad(ctx: Context) -> After:
        raise ActionError("kernel missing", 2)

    client = FakeClient([action("bad", terminal=True)])
    client.calls = events
    runner(client, {"bad": Builtin("bad", bad, terminal=True)}, Recorder(events)).run()
    assert ("reboot",) not in events
    assert statuses(client) == [("failed", 2, "kernel missing")]


def test_action_marked_terminal_is_reported_before_it_runs() -> None:
    seen: list[str] = []
    client = FakeClient([action("work", terminal=True)])

    def work(ctx: Context) -> None:
        seen.append(str(statuses(client)))

    assert runner(client, {"work": Builtin("work", work)}).run() == 0
    assert seen == [str([("success", 0, "terminal: reported first")])]


def test_server_side_end_cancels_the_action() -> None:
    cancelled = threading.Event()

    def wait(ctx: Context) -> None:
        if ctx.cancelled.wait(5):
            cancelled.set()
        ctx.check_cancelled()

    client = FakeClient([action("wait")])
    client.state = "TIMEOUT"
    runner(client, {"wait": Builtin("wait", wait)}).run()
    assert cancelled.is_set()
    assert statuses(client)[0][:2] == ("failed", 124)


def test_timeout_kills_the_running_command() -> None:
    client = FakeClient([action("cexec", timeout=0.5, environment={"CMD_LINE": "sleep 30"})])
    started = time.monotonic()
    runner(client).run()
    assert time.monotonic() - started < 5
    assert statuses(client) == [("timeout", 124, "a exceeded its timeout of 0.5s")]


def test_hello_tries_each_nic_until_the_server_knows_one() -> None:
    class Picky(FakeClient):
        def hello(self, mac: str, attributes: dict[str, Any]) -> dict[str, Any]:
            self.calls.append(("hello", mac))
            if mac != "52:54:00:00:00:02":
                raise ProtocolError(422, f"MAC {mac} is not an interface of machine m1")
            return {"machine": "m1", "state": "provisioning"}

    nics = [
        {"mac": "52:54:00:00:00:01", "carrier": False},
        {"mac": "52:54:00:00:00:03", "carrier": True},
        {"mac": "52:54:00:00:00:02", "carrier": False},
    ]
    client = Picky([])
    agent = Runner(client, System(), attributes={"nics": nics}, log=lambda _m: None)
    assert agent.run() == 0
    assert [c[1] for c in client.calls] == [
        "52:54:00:00:00:03",
        "52:54:00:00:00:01",
        "52:54:00:00:00:02",
    ]
    assert agent.mac == "52:54:00:00:00:02"


def test_unknown_token_ends_the_agent_with_1() -> None:
    class Revoked(FakeClient):
        def hello(self, mac: str, attributes: dict[str, Any]) -> dict[str, Any]:
            raise ProtocolError(401, "unknown agent token")

    assert runner(Revoked([])).run() == 1
