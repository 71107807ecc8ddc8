"""The workflow engine's transitions on a real (SQLite) database, without a server or an agent:
create, start, an action's success, failure, retry and timeout, the end, cancel, resume, rerun."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from metalflow.apply.documents import parse
from metalflow.apply.service import apply_documents
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.errors import Conflict
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.tenancy.secrets import Keyring
from metalflow.workflows import engine, protocol
from metalflow.workflows.states import ActionState, WorkflowState
from metalflow.workflows.tables import Workflow

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAC = "52:54:00:12:34:56"
MACHINE = f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: m1}}
spec:
  interfaces: [{{mac: "{MAC}"}}]
"""


def template(*, retries: int = 0, global_timeout: int = 600) -> str:
    actions = "".join(
        f"""\
          - name: step-{i}
            image: example/step-{i}:v1
            timeout: 60
            retries: {retries}
            retry_backoff: 10
"""
        for i in range(2)
    )
    return f"""\
apiVersion: metalflow/v1
kind: Template
metadata: {{name: t}}
spec:
  data: |
    version: "0.1"
    name: t
    global_timeout: {global_timeout}
    tasks:
      - name: install
        worker: "{{{{.device_1}}}}"
        actions:
{actions}"""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'engine.sqlite'}")
    upgrade(database)
    yield database
    database.dispose()


def setup(db: Database, **options: Any) -> str:
    """The machine m1 and template t applied; a workflow created; its id."""
    with db.write() as session:
        docs = parse(MACHINE + "---\n" + template(**options))
        apply_documents(session, docs, Keyring(b"k" * 32), metadata_url="http://192.0.2.1:50061")
        machine = inventory.get_machine(session, "m1")
        return engine.create_workflow(session, machine=machine, template_name="t").id


def locked(session: Session) -> Machine:
    return inventory.lock(session, inventory.get_machine(session, "m1"))


def next_action(db: Database, now: dt.datetime) -> protocol.NextAction:
    with db.write() as session:
        return protocol.next_action(session, locked(session), now)


def report(db: Database, attempt: int, status: ActionState, now: dt.datetime) -> None:
    with db.write() as session:
        protocol.report(
            session, locked(session), attempt, status=status, exit_code=None, message=None, now=now
        )


def state(db: Database, workflow_id: str) -> tuple[str, list[str], str]:
    """The workflow's state, its current actions' states, and the machine's state."""
    with db.read() as session:
        workflow = session.get(Workflow, workflow_id)
        assert workflow is not None
        machine = inventory.get_machine(session, "m1")
        return (
            workflow.state,
            [action.state for action in engine.current_actions(workflow)],
            machine.state,
        )


def assigned(found: protocol.NextAction) -> dict[str, Any]:
    assert isinstance(found, dict), found
    return found


def test_a_run_where_every_action_succeeds(db: Database) -> None:
    workflow_id = setup(db)
    assert state(db, workflow_id) == ("PENDING", ["PENDING", "PENDING"], "provisioning")
    first = assigned(next_action(db, START))
    assert (first["name"], first["index"], first["attempt"], first["total"]) == ("step-0", 0, 1, 2)
    assert state(db, workflow_id)[:2] == ("RUNNING", ["RUNNING", "PENDING"])
    assert assigned(next_action(db, START))["id"] == first["id"], "served again while running"
    report(db, first["id"], ActionState.SUCCESS, START)
    second = assigned(next_action(db, START))
    assert second["name"] == "step-1"
    report(db, second["id"], ActionState.SUCCESS, START)
    assert state(db, workflow_id) == ("SUCCESS", ["SUCCESS", "SUCCESS"], "provisioned")
    assert next_action(db, START) is None


def test_a_failed_action_is_retried_after_its_backoff_then_the_run_fails(db: Database) -> None:
    workflow_id = setup(db, retries=1)
    first = assigned(next_action(db, START))
    report(db, first["id"], ActionState.FAILED, START)
    assert state(db, workflow_id)[:2] == ("RUNNING", ["PENDING", "PENDING"])
    assert next_action(db, START) == START + dt.timedelta(seconds=10), "ask again after backoff"
    later = START + dt.timedelta(seconds=10)
    again = assigned(next_action(db, later))
    assert (again["name"], again["attempt"]) == ("step-0", 2)
    report(db, again["id"], ActionState.FAILED, later)
    assert state(db, workflow_id)[:2] == ("FAILED", ["FAILED", "PENDING"])


def test_the_same_report_twice_changes_nothing_and_a_different_one_conflicts(
    db: Database,
) -> None:
    workflow_id = setup(db)
    first = assigned(next_action(db, START))
    report(db, first["id"], ActionState.FAILED, START)
    report(db, first["id"], ActionState.FAILED, START)
    assert state(db, workflow_id)[:2] == ("FAILED", ["FAILED", "PENDING"])
    with pytest.raises(Conflict, match="already ended as FAILED"):
        report(db, first["id"], ActionState.SUCCESS, START)


def test_the_sweep_times_out_an_action_without_a_report(db: Database) -> None:
    workflow_id = setup(db)
    assigned(next_action(db, START))
    with db.write() as session:
        assert engine.sweep(session, START + dt.timedelta(seconds=59), skip_locked=False) == 0
    with db.write() as session:
        assert engine.sweep(session, START + dt.timedelta(seconds=61), skip_locked=False) == 1
    assert state(db, workflow_id)[:2] == ("TIMEOUT", ["TIMEOUT", "PENDING"])


def test_the_sweep_ends_a_workflow_past_its_global_timeout(db: Database) -> None:
    workflow_id = setup(db, global_timeout=30)
    assigned(next_action(db, START))
    with db.write() as session:
        assert engine.sweep(session, START + dt.timedelta(seconds=31), skip_locked=False) == 1
    assert state(db, workflow_id)[:2] == ("TIMEOUT", ["TIMEOUT", "PENDING"])
    with db.read() as session:
        workflow = session.get(Workflow, workflow_id)
        assert workflow is not None and workflow.reason == "global timeout of 30s exceeded"


def test_cancel_then_resume_continues_from_the_unfinished_action(db: Database) -> None:
    workflow_id = setup(db)
    first = assigned(next_action(db, START))
    report(db, first["id"], ActionState.SUCCESS, START)
    assigned(next_action(db, START))
    with db.write() as session:
        workflow, machine = engine.lock_workflow(session, workflow_id)
        engine.cancel(session, workflow, machine, START)
    assert state(db, workflow_id)[:2] == ("CANCELLED", ["SUCCESS", "CANCELLED"])
    with db.write() as session:
        workflow, machine = engine.lock_workflow(session, workflow_id)
        with pytest.raises(Conflict, match="is CANCELLED; nothing to cancel"):
            engine.cancel(session, workflow, machine, START)
    with db.write() as session:
        workflow, machine = engine.lock_workflow(session, workflow_id)
        engine.resume(session, workflow, machine, START)
    assert state(db, workflow_id)[:2] == ("RUNNING", ["SUCCESS", "PENDING"])
    resumed = assigned(next_action(db, START))
    assert (resumed["name"], resumed["attempt"]) == ("step-1", 2)
    report(db, resumed["id"], ActionState.SUCCESS, START)
    assert state(db, workflow_id)[0] == WorkflowState.SUCCESS.value


def test_rerun_starts_a_new_run_of_every_action(db: Database) -> None:
    workflow_id = setup(db)
    for _ in range(2):
        report(db, assigned(next_action(db, START))["id"], ActionState.SUCCESS, START)
    with db.write() as session:
        workflow, machine = engine.lock_workflow(session, workflow_id)
        engine.rerun(session, workflow, machine)
    assert state(db, workflow_id) == ("PENDING", ["PENDING", "PENDING"], "provisioning")
    with db.read() as session:
        rerun = session.get(Workflow, workflow_id)
        assert rerun is not None and rerun.run == 2 and len(rerun.actions) == 4
    first = assigned(next_action(db, START))
    assert (first["name"], first["attempt"]) == ("step-0", 1)


def test_a_machine_runs_one_workflow_at_a_time(db: Database) -> None:
    setup(db)
    with db.write() as session, pytest.raises(Conflict, match="already runs workflow"):
        machine = inventory.get_machine(session, "m1")
        engine.create_workflow(session, machine=machine, template_name="t")
