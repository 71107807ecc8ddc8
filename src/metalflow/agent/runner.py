"""The agent loop of docs/agent-protocol.md: hello, long-poll next, run, stream logs, report.

Each action runs in a worker thread so the main thread can enforce its timeout while a
second thread ships log batches and ``running`` heartbeats.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .actions import Builtin, Context, lookup, no_builtin_message
from .actions.base import ActionError, After
from .actions.container import find_runtime, run_container
from .client import Client, Conflict, ProtocolError, Stopped
from .hardware import macs_by_preference
from .logbatch import LogBuffer, resend_from
from .system import Cancelled, CommandError, Log, System

HEARTBEAT = 15.0
CANCEL_GRACE = 10.0
TICK = 0.2


def stderr_log(**fields: str | None) -> Log:
    """key=value lines on stderr, the console of the install environment."""
    context = [f"{key}={value}" for key, value in fields.items() if value]

    def log(message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(" ".join([f"ts={stamp}", *context, f"msg={message!r}"]), file=sys.stderr, flush=True)

    return log


@dataclass(frozen=True)
class Outcome:
    status: str
    exit_code: int
    message: str | None = None


class LogShipper:
    """Sends an attempt's log lines in batches and a ``running`` heartbeat meanwhile.

    If a heartbeat shows the server ended the attempt (timeout, cancel), ``cancelled`` is
    set so the action stops.
    """

    def __init__(
        self,
        client: Client,
        attempt_id: int,
        buffer: LogBuffer,
        *,
        log: Log,
        cancelled: threading.Event,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.client = client
        self.attempt_id = attempt_id
        self.buffer = buffer
        self.log = log
        self.cancelled = cancelled
        self.heartbeat = heartbeat
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="log-shipper", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def line(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            with self.lock:
                self.buffer.append(part)
            self.log(part)

    def _loop(self) -> None:
        beat = time.monotonic()
        while not self.closed.wait(TICK):
            now = time.monotonic()
            with self.lock:
                due = self.buffer.due(now)
            if due:
                self.flush(attempts=1)
            if now - beat >= self.heartbeat:
                beat = now
                self._beat()

    def _beat(self) -> None:
        try:
            shown = self.client.status(self.attempt_id, "running", attempts=1)
        except (ConnectionError, ProtocolError, Stopped) as error:
            self.log(f"heartbeat failed: {error}")
            return
        if shown.get("state") != "RUNNING" and not self.cancelled.is_set():
            self.log(f"the server ended this attempt as {shown.get('state')}; stopping it")
            self.cancelled.set()

    def flush(self, *, attempts: int) -> bool:
        """Send every pending line; False if the server could not be reached."""
        while True:
            with self.lock:
                batch = self.buffer.batch()
            if batch is None:
                return True
            seq, lines = batch
            try:
                received = self.client.logs(self.attempt_id, seq, lines, attempts=attempts)
            except Conflict as error:
                restart = resend_from(error.message)
                if restart is None or restart >= seq:
                    self.log(f"log batch refused: {error}")
                    return False
                with self.lock:
                    self.buffer.rebase(restart)
                continue
            except (ConnectionError, ProtocolError, Stopped) as error:
                self.log(f"could not send logs: {error}")
                return False
            with self.lock:
                self.buffer.acknowledge(received, time.monotonic())

    def close(self) -> None:
        self.closed.set()
        if self.thread.is_alive():
            self.thread.join()
        self.flush(attempts=3)


def _call(builtin: Builtin, ctx: Context) -> tuple[Outcome, After | None]:
    try:
        after = builtin.run(ctx)
    except ActionError as error:
        return Outcome("failed", error.exit_code, str(error)), None
    except CommandError as error:
        return Outcome("failed", error.code, str(error)), None
    except Cancelled as error:
        return Outcome("failed", 124, str(error)), None
    except Exception as error:
        traceback.print_exc()
        return Outcome("failed", 1, f"{ctx.action}: internal error: {error!r}"), None
    return Outcome("success", 0), after


def execute(builtin: Builtin, ctx: Context, timeout: float) -> tuple[Outcome, After | None]:
    """Run in a worker thread; past ``timeout`` seconds (0 = none) it is cancelled."""
    result: list[tuple[Outcome, After | None]] = []
    worker = threading.Thread(
        target=lambda: result.append(_call(builtin, ctx)), name=ctx.action, daemon=True
    )
    worker.start()
    worker.join(timeout or None)
    if result:
        return result[0]
    ctx.cancelled.set()
    worker.join(CANCEL_GRACE)
    if worker.is_alive():
        ctx.log(f"{ctx.action} did not stop within {CANCEL_GRACE:g}s of its timeout")
    return Outcome("timeout", 124, f"{ctx.action} exceeded its timeout of {timeout:g}s"), None


class Runner:
    def __init__(
        self,
        client: Client,
        system: System,
        *,
        attributes: dict[str, Any],
        mac: str | None = None,
        wait: float = 30.0,
        heartbeat: float = HEARTBEAT,
        log_interval: float = 1.0,
        log: Log | None = None,
        lookup_builtin: Callable[[str], Builtin | None] = lookup,
    ) -> None:
        self.client = client
        self.system = system
        self.attributes = attributes
        self.mac = mac
        self.wait = wait
        self.heartbeat = heartbeat
        self.log_interval = log_interval
        self.log = log or stderr_log()
        self.lookup = lookup_builtin

    def hello(self) -> dict[str, Any]:
        """Hello with the given MAC, else each NIC's MAC until the server knows one."""
        candidates = [self.mac] if self.mac else macs_by_preference(self.attributes)
        if not candidates:
            raise ProtocolError(0, "no MAC to say hello with: pass --mac or metalflow.mac=")
        refused: ProtocolError | None = None
        for mac in candidates:
            try:
                answer = self.client.hello(mac, self.attributes)
            except ProtocolError as error:
                if error.status != 422:
                    raise
                refused = error
                continue
            self.mac = mac
            self.log(f"hello as {mac}: machine {answer.get('machine')} is {answer.get('state')}")
            return answer
        assert refused is not None
        raise refused

    def run(self) -> int:
        """Until stopped, or until a terminal action was performed (then 0)."""
        try:
            self.hello()
            while True:
                action = self.client.next(self.wait)
                if action is not None and self.run_action(action):
                    return 0
        except Stopped:
            return 0
        except ProtocolError as error:
            self.log(f"giving up: {error}")
            return 1

    def run_action(self, action: dict[str, Any]) -> bool:
        """Run one attempt and report it; True if it was terminal and was performed."""
        attempt_id = int(action["id"])
        name = str(action.get("name", "action"))
        image = str(action.get("image", ""))
        log = stderr_log(action=name, attempt=str(action.get("attempt")))
        cancelled = threading.Event()
        buffer = LogBuffer(int(action.get("log_seq") or 0), interval=self.log_interval)
        shipper = LogShipper(
            self.client, attempt_id, buffer, log=log, cancelled=cancelled, heartbeat=self.heartbeat
        )
        ctx = Context(
            env=dict(action.get("environment") or {}),
            log=shipper.line,
            system=self.system,
            cancelled=cancelled,
            action=name,
        )
        timeout = float(action.get("timeout") or 0)
        shipper.start()
        builtin = self.lookup(image) or self._container(action, attempt_id, image)
        if builtin is None:
            shipper.line(no_builtin_message(image))
            self._finish(shipper, Outcome("failed", 127, no_builtin_message(image)))
            return False
        shipper.line(f"running {name} ({builtin.name}, attempt {action.get('attempt')})")
        if action.get("terminal") and not builtin.terminal:
            if not self._finish(shipper, Outcome("success", 0, "terminal: reported first")):
                return False
            outcome, _ = execute(builtin, ctx, timeout)
            shipper.line(f"{name} ended {outcome.status}: {outcome.message or ''}")
            shipper.close()
            return True
        outcome, after = execute(builtin, ctx, timeout)
        if outcome.status != "success":
            shipper.line(outcome.message or outcome.status)
        accepted = self._finish(shipper, outcome)
        if after is None:
            return False
        if not accepted:
            shipper.line(f"not performing {name}: the server did not accept its success")
            return False
        after()
        shipper.close()
        return True

    def _container(self, action: dict[str, Any], attempt_id: int, image: str) -> Builtin | None:
        """The action as a container, when a runtime is installed (None otherwise)."""
        runtime = find_runtime(self.system)
        if runtime is None:
            return None

        def run(ctx: Context) -> None:
            run_container(
                ctx,
                runtime,
                image,
                attempt_id=attempt_id,
                volumes=[str(v) for v in action.get("volumes") or []],
                pid=action.get("pid"),
                command=[str(c) for c in action.get("command") or []],
            )

        return Builtin("container", run)

    def _finish(self, shipper: LogShipper, outcome: Outcome) -> bool:
        """Logs first, then the final report, retried until the server answers it."""
        shipper.close()
        try:
            self.client.status(
                shipper.attempt_id,
                outcome.status,
                exit_code=outcome.exit_code,
                message=outcome.message,
            )
        except Conflict as error:
            shipper.log(f"report {outcome.status} dropped: {error}")
            return False
        except ProtocolError as error:
            shipper.log(f"report {outcome.status} refused: {error}")
            return False
        shipper.log(f"reported {outcome.status} (exit {outcome.exit_code})")
        return True
