"""Authentication (who is calling) and the single authorisation function (may they do it).

Every endpoint goes through `authorize`, so projects and roles can later be added here without
touching the endpoints. Callers are the provider (the admin token, or a provider user's key),
tenants (a user's or a project's key: `tenancy.policy` holds their memberships), and agents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.inventory.tables import Machine
from metalflow.tenancy import policy
from metalflow.tenancy.keys import hash_key
from metalflow.tenancy.secrets import Keyring, hash_token, new_api_token
from metalflow.tenancy.tables import ApiToken
from metalflow.tenancy.tokens import (
    BOOT_PREFIX,
    RUN_PREFIX,
    BootClaim,
    RunClaim,
    RunRecord,
    run_valid,
)


class Role(StrEnum):
    ADMIN = "admin"
    """The provider: the admin token, or the key of a provider user."""
    AGENT = "agent"
    TENANT = "tenant"
    """A user's or a project's key; what it may touch is `Principal.access`'s to decide."""


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    AGENT = "agent"
    HELLO = "hello"
    """The agent's hello: the one call that also takes a boot token, to exchange it."""


@dataclass(frozen=True)
class Principal:
    role: Role
    name: str
    machine_id: str | None = None
    boot: BootClaim | None = None
    """Set when the caller sent a boot token: good for the exchange at hello only."""
    run: RunClaim | None = None
    """Set when the caller sent a run token."""
    read_only: bool = False
    """A read-only API key: it passes no write."""
    access: policy.Principal | None = None
    """For API keys: who the key acts for, as `tenancy.policy.decide` reads it."""


class Forbidden(Exception):
    pass


def authorize(principal: Principal, action: Action, *, machine_id: str | None = None) -> None:
    """Raise Forbidden unless `principal` may perform `action` (on `machine_id`, when given)."""
    if action in (Action.AGENT, Action.HELLO) and principal.role is not Role.AGENT:
        raise Forbidden("the agent endpoints take a machine's agent token")
    if principal.read_only and action is not Action.READ:
        raise Forbidden("this API key is read-only: use a read-write key for changes")
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.TENANT:
        raise Forbidden(
            "this route is the provider's: a tenant's key reaches its projects' resources only"
        )
    if principal.boot is not None and action is not Action.HELLO:
        raise Forbidden(
            "a boot token is good only for POST /api/v1/agent/hello, which exchanges it for the"
            " run token: send that one"
        )
    if principal.role is Role.AGENT and action in (Action.AGENT, Action.HELLO):
        if machine_id is None or machine_id == principal.machine_id:
            return
        raise Forbidden("this agent token belongs to another machine")
    raise Forbidden(f"{principal.role} tokens may not {action}")


API_TOKEN_CACHE_SECONDS = 60.0
KEY_CACHE_SECONDS = 10.0
"""How long a key's principal is reused: a revoked or expired key stops working within this."""
AGENT_GENERATION_CACHE_SECONDS = 5.0
RunRecords = Callable[[Session, str], RunRecord | None]
"""A workflow's RunRecord by workflow id; server.py wires the workflows' one (a layer above)."""
KeyResolver = Callable[[Session, str, str | None], tuple[bool, policy.Principal] | None]
"""An API key and the caller's address to (read-only?, who it acts for), recording its last use,
or None when the key is unknown, revoked or expired; server.py wires the tenancy service's."""


class Authenticator:
    """Maps a bearer token to a Principal.

    Lookups are cached briefly (agents poll often): a deleted API token stops working within a
    minute; a rotated agent token at once in this process (`forget`) and within seconds in
    other processes sharing the database. Run tokens are checked against their workflow row on
    every request, uncached, so a run's end or next start revokes them at once everywhere;
    without `run_records` they are refused.
    """

    def __init__(
        self,
        keyring: Keyring,
        run_records: RunRecords | None = None,
        resolve_key: KeyResolver | None = None,
    ) -> None:
        self.keyring = keyring
        self.run_records = run_records
        self.resolve_key = resolve_key
        self._api_tokens: dict[str, tuple[float, Principal]] = {}
        self._keys: dict[str, tuple[float, Principal]] = {}
        self._agent_generations: dict[str, tuple[float, int | None]] = {}

    def forget(self, machine_id: str) -> None:
        self._agent_generations.pop(machine_id, None)

    def _agent_generation(self, session: Session, machine_id: str, now: float) -> int | None:
        cached = self._agent_generations.get(machine_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        current = session.scalar(
            select(Machine.agent_token_generation).where(Machine.id == machine_id)
        )
        self._agent_generations[machine_id] = (now + AGENT_GENERATION_CACHE_SECONDS, current)
        return current

    def authenticate(self, session: Session, token: str) -> Principal | None:
        """Agent tokens carry their machine and are checked by signature, plus one lookup that the
        machine exists and has not rotated its token since. A boot token's signature is all
        that is checked here: whether it may be exchanged is hello's decision."""
        now = time.monotonic()
        if token.startswith(BOOT_PREFIX + "."):
            boot = self.keyring.parse_boot_token(token)
            if boot is None:
                return None
            return Principal(Role.AGENT, f"agent:{boot.machine_id}", boot.machine_id, boot=boot)
        if token.startswith(RUN_PREFIX + "."):
            run = self.keyring.parse_run_token(token)
            if run is None or self.run_records is None:
                return None
            if not run_valid(run, self.run_records(session, run.workflow_id)):
                return None
            return Principal(Role.AGENT, f"agent:{run.machine_id}", run.machine_id, run=run)
        parsed = self.keyring.parse_agent_token(token)
        if parsed is not None:
            machine_id, generation = parsed
            if self._agent_generation(session, machine_id, now) != generation:
                return None
            return Principal(Role.AGENT, f"agent:{machine_id}", machine_id)
        digest = hash_token(token)
        cached = self._api_tokens.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        if row is None:
            self._api_tokens.pop(digest, None)
            return None
        principal = Principal(Role(row.role), row.name)
        self._api_tokens[digest] = (now + API_TOKEN_CACHE_SECONDS, principal)
        return principal

    def cached_key(self, key: str) -> Principal | None:
        """The principal of an API key looked up less than KEY_CACHE_SECONDS ago, if any: most
        requests with a key need no transaction at all."""
        cached = self._keys.get(hash_key(key))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def authenticate_key(self, session: Session, key: str, address: str | None) -> Principal | None:
        """A user's or project's API key (`mfu_`/`mfp_`), looked up and remembered for
        KEY_CACHE_SECONDS (ask `cached_key` first); the lookup records the key's last use, so
        `session` is a write."""
        now = time.monotonic()
        digest = hash_key(key)
        resolved = None if self.resolve_key is None else self.resolve_key(session, key, address)
        if resolved is None:
            self._keys.pop(digest, None)
            return None
        read_only, access = resolved
        role = Role.ADMIN if access.kind is policy.PrincipalKind.PROVIDER else Role.TENANT
        principal = Principal(role, access.name, read_only=read_only, access=access)
        self._keys[digest] = (now + KEY_CACHE_SECONDS, principal)
        return principal


def create_api_token(session: Session, name: str, role: Role = Role.ADMIN) -> str:
    token = new_api_token()
    session.add(ApiToken(name=name, role=role.value, token_hash=hash_token(token)))
    return token


def has_admin_token(session: Session) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.role == Role.ADMIN.value)) is not None
