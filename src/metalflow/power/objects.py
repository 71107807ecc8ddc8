"""rufio Machines and Secrets in the database, so a Hardware finds the BMC its bmcRef names
in any later apply, and machines follow when that Machine or its Secret changes.

Each call writes within the caller's transaction. Secret values are stored encrypted and
appear in no error, event or log line: only the Secret's namespace/name and which key is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from metalflow import events
from metalflow.errors import Invalid
from metalflow.inventory import service as inventory
from metalflow.inventory.schemas import BmcSpec
from metalflow.inventory.service import ApplyOutcome
from metalflow.inventory.tables import Machine
from metalflow.power.rufio import RUFIO_API, SECRET_VALUE_KEYS, Login, ObjectRef, RufioMachine
from metalflow.power.tables import BmcObject
from metalflow.tenancy.secrets import Keyring

MACHINE, SECRET = "Machine", "Secret"

CheckBmc = Callable[[BmcSpec, RufioMachine], None]
"""Raises Invalid naming the rufio Machine's field when its driver refuses the BMC."""


def _row(session: Session, kind: str, ref: ObjectRef) -> BmcObject | None:
    return session.scalar(
        select(BmcObject).where(
            BmcObject.kind == kind, BmcObject.namespace == ref.namespace, BmcObject.name == ref.name
        )
    )


def _login(row: BmcObject, keyring: Keyring) -> Login:
    values = json.loads(keyring.decrypt(row.secret_encrypted)) if row.secret_encrypted else {}
    return Login(*(values.get(key) for key in SECRET_VALUE_KEYS))


def _store(
    session: Session, kind: str, ref: ObjectRef, fields: dict[str, object], sealed: str | None
) -> BmcObject:
    row = _row(session, kind, ref)
    if row is None:
        row = BmcObject(kind=kind, namespace=ref.namespace, name=ref.name)
        session.add(row)
    row.fields = fields
    row.secret_encrypted = sealed
    session.flush()
    return row


def _record(session: Session, kind: str, outcome: ApplyOutcome, ref: ObjectRef) -> None:
    events.record(session, f"bmc.{kind.lower()}.{outcome}", namespace=ref.namespace, name=ref.name)


def _resolve(session: Session, machine: RufioMachine, keyring: Keyring, secret_at: str) -> BmcSpec:
    """`machine` with its Secret's login; `secret_at` is the field an error about it names."""
    login = None
    if machine.secret is not None:
        row = _row(session, SECRET, machine.secret)
        if row is None:
            raise Invalid(
                f"{secret_at}: Secret {machine.secret} is not in this apply and was not applied"
                f" before; apply it (apiVersion: v1, kind: Secret, data:"
                f" {', '.join(machine.secret_keys)}) with rufio Machine {machine.ref}",
                field=secret_at,
            )
        login = _login(row, keyring)
        missing = login.missing(machine.secret_keys)
        if missing:
            use = "signs its requests with" if machine.driver == "webhook" else "logs in with"
            raise Invalid(
                f"{secret_at}: Secret {machine.secret} has no {' or '.join(missing)}, which rufio"
                f" Machine {machine.ref} {use}; add data.{missing[0]} (base64) or"
                f" stringData.{missing[0]}",
                field=secret_at,
            )
    return machine.bmc(login)


def _hardware_naming(session: Session, ref: ObjectRef) -> list[Machine]:
    """Machines applied as Hardware in `ref`'s namespace whose bmcRef names it."""
    machines = session.scalars(
        select(Machine)
        .where(Machine.project == ref.namespace)
        .options(undefer(Machine.applied))
        .order_by(Machine.name)
    )
    return [
        machine
        for machine in machines
        if machine.applied.get("kind") == "Hardware"
        and ((machine.applied.get("hardware_spec") or {}).get("bmcRef") or {}).get("name")
        == ref.name
    ]


def _follow(
    session: Session, ref: ObjectRef, bmc: BmcSpec, keyring: Keyring, skip: Collection[str]
) -> list[str]:
    """Give `bmc` to the stored Hardware naming `ref` (but those in `skip`, applied in this
    stream anyway); the names of those that changed."""
    changed = []
    for machine in _hardware_naming(session, ref):
        if machine.name in skip:
            continue
        if inventory.set_bmc(session, machine, bmc, keyring) == "updated":
            changed.append(machine.name)
    return changed


def apply_secret(
    session: Session,
    ref: ObjectRef,
    login: Login,
    keyring: Keyring,
    *,
    where: str,
    skip_machines: Collection[str],
    skip_rufio: Collection[ObjectRef],
) -> tuple[ApplyOutcome, list[str]]:
    """Store a Secret; the rufio Machines using it (but those in `skip_rufio`, applied in this
    stream) pass its new login on. The outcome and the machines that changed."""
    row = _row(session, SECRET, ref)
    if row is not None and _login(row, keyring) == login:
        return "unchanged", []
    outcome: ApplyOutcome = "created" if row is None else "updated"
    sealed = keyring.encrypt(json.dumps({key: getattr(login, key) for key in SECRET_VALUE_KEYS}))
    _store(session, SECRET, ref, {}, sealed)
    _record(session, SECRET, outcome, ref)
    changed: list[str] = []
    users = session.scalars(
        select(BmcObject).where(BmcObject.kind == MACHINE).order_by(BmcObject.id)
    ).all()
    for user in users:
        machine = RufioMachine.from_stored(ObjectRef(user.namespace, user.name), user.fields)
        if machine.secret != ref or machine.ref in skip_rufio:
            continue
        bmc = _resolve(session, machine, keyring, f"{where}.data")
        changed += _follow(session, machine.ref, bmc, keyring, skip_machines)
    return outcome, changed


def apply_machine(
    session: Session,
    machine: RufioMachine,
    keyring: Keyring,
    check: CheckBmc,
    *,
    where: str,
    skip_machines: Collection[str],
) -> tuple[ApplyOutcome, list[str]]:
    """Store a rufio Machine once its Secret is found and its driver accepts it; the stored
    Hardware naming it get its BMC. The outcome and the machines that changed."""
    secret_at = machine.origin.get("password", f"{where}.spec.connection.authSecretRef")
    bmc = _resolve(session, machine, keyring, f"{secret_at}.name")
    check(bmc, machine)
    row = _row(session, MACHINE, machine.ref)
    outcome: ApplyOutcome = "created" if row is None else "updated"
    if row is not None and row.fields == machine.stored():
        outcome = "unchanged"
    else:
        _store(session, MACHINE, machine.ref, machine.stored(), None)
        _record(session, MACHINE, outcome, machine.ref)
    return outcome, _follow(session, machine.ref, bmc, keyring, skip_machines)


def bmc_for(session: Session, ref: ObjectRef, keyring: Keyring, *, where: str) -> BmcSpec:
    """The BMC of a Hardware whose bmcRef names `ref` (applied in this stream or before)."""
    row = _row(session, MACHINE, ref)
    at = f"{where}.spec.bmcRef.name"
    if row is None:
        raise Invalid(
            f"{at}: no rufio Machine {ref} (apiVersion: {RUFIO_API}, kind:"
            " Machine) is in this apply or was applied before; apply it, with its Secret, in"
            " the same stream or first",
            field=at,
        )
    machine = RufioMachine.from_stored(ref, row.fields)
    return _resolve(session, machine, keyring, at)
