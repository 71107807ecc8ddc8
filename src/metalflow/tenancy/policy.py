"""Who may do what: the one decision that every route and CLI command will go through.

`decide` answers from values (the caller's memberships, the action, the resource's project);
loading those is the service's job, so the rules here are tested as a table without a database.
Tenants get NOT_FOUND, never FORBIDDEN, for anything outside their projects, so that a project's
existence is not revealed; inside a project, a role or key scope too weak is FORBIDDEN with the
role or scope that would do.

Authentication comes first and is not decided here: an expired or revoked key, a bad password or
a stale agent token never becomes a Principal, so `decide` never sees one.

Pure (stdlib only). Looked at casbin (pycasbin) and oso: both take policies as text in their own
languages and would hide this short table behind a model file; the rules fit in one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    """Edit a resource: rename, retag, change its settings."""
    POWER = "power"
    PROVISION = "provision"
    DELETE = "delete"
    MANAGE_MEMBERS = "manage_members"
    MANAGE_KEYS = "manage_keys"
    PROVIDER_ONLY = "provider_only"
    """Inventory, BMCs, supernets and prefixes: the operator's own business."""
    AGENT = "agent"
    """A machine's agent reporting and fetching work."""
    HELLO = "hello"
    """The agent's hello: the one call that also takes a boot token, to exchange it."""


AGENT_ACTIONS = frozenset({Action.AGENT, Action.HELLO})


class ProjectRole(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    OWNER = "owner"


class OrgRole(StrEnum):
    MEMBER = "member"
    """Nothing by itself: a member sees the projects they are a member of."""
    ADMIN = "admin"
    OWNER = "owner"


ROLE_ORDER = (ProjectRole.VIEWER, ProjectRole.EDITOR, ProjectRole.OWNER)
ROLE_ACTIONS: Mapping[ProjectRole, frozenset[Action]] = {
    ProjectRole.VIEWER: frozenset({Action.READ}),
    ProjectRole.EDITOR: frozenset(
        {Action.READ, Action.WRITE, Action.POWER, Action.PROVISION, Action.DELETE}
    ),
    ProjectRole.OWNER: frozenset(
        {
            Action.READ,
            Action.WRITE,
            Action.POWER,
            Action.PROVISION,
            Action.DELETE,
            Action.MANAGE_MEMBERS,
            Action.MANAGE_KEYS,
        }
    ),
}
ORG_ROLES_OWNING_PROJECTS = frozenset({OrgRole.OWNER, OrgRole.ADMIN})
PROJECT_KEY_ROLE = ProjectRole.EDITOR
"""What a read-write project key may do: everything but managing members and keys, which takes
a person (a key minting keys would outlive its own revocation)."""


class PrincipalKind(StrEnum):
    PROVIDER = "provider"
    """The operator: the admin token, a user flagged provider, or a key of one."""
    USER = "user"
    """A person, or a user key acting as that person."""
    PROJECT_KEY = "project_key"
    AGENT = "agent"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as the policy needs to see it."""

    kind: PrincipalKind
    name: str
    read_only: bool = False
    """A read-only key: never passes a non-read action, whatever its owner's role."""
    project_roles: Mapping[str, ProjectRole] = field(default_factory=dict)
    """Project id -> the user's role in it (USER)."""
    org_roles: Mapping[str, OrgRole] = field(default_factory=dict)
    """Organization id -> the user's role in it (USER)."""
    project_orgs: Mapping[str, str] = field(default_factory=dict)
    """Project id -> its organization's id, for every project of the orgs in `org_roles`."""
    project: str | None = None
    """The one project of a PROJECT_KEY."""
    machine_id: str | None = None
    """The one machine of an AGENT."""
    boot_only: bool = False
    """An AGENT that sent a boot token: good for the exchange at hello only."""
    user_id: str | None = None
    """The user a USER principal (or a provider user) is: whose own keys and sign-ins these are."""
    key_id: str | None = None
    """The API key the caller sent, if it sent one: the audit names it."""


class Outcome(Enum):
    ALLOWED = "allowed"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str
    needed: str | None = None
    """The role or scope that would be allowed (FORBIDDEN only), e.g. "editor" or "read-write"."""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED


def _allow(reason: str) -> Decision:
    return Decision(Outcome.ALLOWED, reason)


def _forbid(reason: str, needed: str | None = None) -> Decision:
    return Decision(Outcome.FORBIDDEN, reason, needed)


NOT_FOUND = Decision(Outcome.NOT_FOUND, "no such resource in your projects")


def least_role(action: Action) -> ProjectRole | None:
    """The weakest project role allowed `action`, or None when no project role is."""
    return next((role for role in ROLE_ORDER if action in ROLE_ACTIONS[role]), None)


def project_role(principal: Principal, project: str) -> ProjectRole | None:
    """A user's effective role in `project`: the stronger of their own and their org's."""
    if principal.kind is PrincipalKind.PROJECT_KEY:
        return PROJECT_KEY_ROLE if principal.project == project else None
    if principal.kind is not PrincipalKind.USER:
        return None
    roles = [principal.project_roles[project]] if project in principal.project_roles else []
    org = principal.project_orgs.get(project)
    if org is not None and principal.org_roles.get(org) in ORG_ROLES_OWNING_PROJECTS:
        roles.append(ProjectRole.OWNER)
    return max(roles, key=ROLE_ORDER.index, default=None)


def visible_projects(principal: Principal) -> frozenset[str] | None:
    """The projects whose resources `principal` may see at all; None for every one (the
    provider). Lists are narrowed to these, and a resource outside them is NOT_FOUND."""
    if principal.kind is PrincipalKind.PROVIDER:
        return None
    if principal.kind is PrincipalKind.PROJECT_KEY:
        return frozenset() if principal.project is None else frozenset({principal.project})
    if principal.kind is not PrincipalKind.USER:
        return frozenset()
    owned = {
        project
        for project, org in principal.project_orgs.items()
        if principal.org_roles.get(org) in ORG_ROLES_OWNING_PROJECTS
    }
    return frozenset(principal.project_roles) | owned


def _read_only(principal: Principal, action: Action) -> Decision | None:
    if principal.read_only and action is not Action.READ:
        return _forbid(f"this key is read-only and may not {action}", "read-write")
    return None


def _agent(principal: Principal, action: Action, machine_id: str | None) -> Decision:
    if principal.boot_only and action is not Action.HELLO:
        return _forbid(
            "a boot token is good only for POST /api/v1/agent/hello, which exchanges it for the"
            " run token: send that one",
            "run token",
        )
    if action not in AGENT_ACTIONS:
        return _forbid(f"agent tokens may not {action}: only the provider may", "provider")
    if machine_id is not None and machine_id != principal.machine_id:
        return _forbid("this agent token belongs to another machine", "that machine's token")
    return _allow("a machine's agent on its own machine")


def decide(
    principal: Principal,
    action: Action,
    resource_project: str | None,
    *,
    resource_machine: str | None = None,
) -> Decision:
    """May `principal` do `action` on a resource of `resource_project` (None: of no project)?

    `resource_machine` matters to agents only (their token names one machine). With no project
    a tenant may READ only, and the caller must narrow what it lists to the tenant's projects.
    """
    if principal.kind is PrincipalKind.AGENT:
        return _agent(principal, action, resource_machine)
    if principal.kind is PrincipalKind.PROVIDER:
        if action in AGENT_ACTIONS:
            return _forbid("the agent endpoints take a machine's agent token", "agent token")
        return _read_only(principal, action) or _allow("the provider may do anything")
    role = None if resource_project is None else project_role(principal, resource_project)
    if resource_project is not None and role is None:
        return NOT_FOUND
    if action in AGENT_ACTIONS:
        return _forbid("the agent endpoints take a machine's agent token", "agent token")
    if action is Action.PROVIDER_ONLY:
        return _forbid("only the provider may do this", "provider")
    if role is None:
        if action is Action.READ:
            return _allow("a tenant's list, narrowed to their projects")
        return _forbid(f"only the provider may {action} outside a project", "provider")
    if action not in ROLE_ACTIONS[role]:
        needed = least_role(action)
        if principal.kind is PrincipalKind.PROJECT_KEY:
            return _forbid(f"a project key may not {action}: a project {needed} must", str(needed))
        return _forbid(f"{action} needs the project role {needed} (you are {role})", str(needed))
    return _read_only(principal, action) or _allow(f"project role {role}")


# --- the tenancy API's own rules: organizations, memberships, keys ------------------------------


class OrgAction(StrEnum):
    READ = "read"
    """See the organization and its members."""
    CREATE_PROJECT = "create_project"
    MANAGE_MEMBERS = "manage_members"
    DELETE = "delete"


ORG_ROLE_ACTIONS: Mapping[OrgRole, frozenset[OrgAction]] = {
    OrgRole.MEMBER: frozenset({OrgAction.READ}),
    OrgRole.ADMIN: frozenset(OrgAction),
    OrgRole.OWNER: frozenset(OrgAction),
}


def visible_organizations(principal: Principal) -> frozenset[str] | None:
    """The organizations `principal` belongs to (None: every one, the provider): those it has a
    role in, and those of its projects. A project key belongs to none: it acts for one project."""
    if principal.kind is PrincipalKind.PROVIDER:
        return None
    if principal.kind is not PrincipalKind.USER:
        return frozenset()
    through_projects = {
        principal.project_orgs[project]
        for project in principal.project_roles
        if project in principal.project_orgs
    }
    return frozenset(principal.org_roles) | through_projects


def decide_org(principal: Principal, action: OrgAction, organization: str) -> Decision:
    """May `principal` do `action` on `organization`? Outside its organizations: NOT_FOUND."""
    if principal.kind is PrincipalKind.PROVIDER:
        if action is OrgAction.READ:
            return _allow("the provider may do anything")
        return _read_only(principal, Action.WRITE) or _allow("the provider may do anything")
    seen = visible_organizations(principal)
    if seen is None or organization not in seen:
        return NOT_FOUND
    role = principal.org_roles.get(organization)
    if action is OrgAction.READ:
        return _allow("a member of the organization, or of one of its projects")
    if role is None or action not in ORG_ROLE_ACTIONS[role]:
        held = "a member of one of its projects" if role is None else role
        return _forbid(
            f"{action} needs the organization role admin or owner (you are {held})", "admin"
        )
    return _read_only(principal, Action.WRITE) or _allow(f"organization role {role}")


def decide_new_organization(principal: Principal) -> Decision:
    """Any signed-in person may found an organization (and owns it); a project key may not."""
    if principal.kind is PrincipalKind.PROVIDER:
        return _read_only(principal, Action.WRITE) or _allow("the provider may do anything")
    if principal.kind is not PrincipalKind.USER:
        return _forbid(
            "only a person creates organizations: use a user key (`metalflow login`)", "user key"
        )
    return _read_only(principal, Action.WRITE) or _allow("a signed-in user founds an organization")


def decide_org_membership(
    principal: Principal,
    organization: str,
    member: str,
    current: OrgRole | None,
    new: OrgRole | None,
) -> Decision:
    """May `principal` make user `member`, whose role is `current` (None: not a member yet), a
    member with role `new` (None: take them out)? Owners and admins manage members; only an
    owner makes, changes or removes an owner; anyone may leave. That an organization keeps an
    owner is the service's to check (it takes a lock)."""
    seen = decide_org(principal, OrgAction.READ, organization)
    if not seen.allowed:
        return seen
    if new is None and member == principal.user_id and principal.kind is PrincipalKind.USER:
        return _read_only(principal, Action.WRITE) or _allow("a member may leave")
    decision = decide_org(principal, OrgAction.MANAGE_MEMBERS, organization)
    if not decision.allowed or principal.kind is PrincipalKind.PROVIDER:
        return decision
    if OrgRole.OWNER in (current, new) and principal.org_roles.get(organization) is not (
        OrgRole.OWNER
    ):
        return _forbid(
            "only an owner of the organization makes, changes or removes an owner", "owner"
        )
    return decision


def decide_project_deletion(principal: Principal, project: str) -> Decision:
    """Deleting a project takes its owner (or an owner or admin of its organization, who own it
    by `project_role`): an editor deletes the project's resources, not the project."""
    decision = decide(principal, Action.MANAGE_MEMBERS, project)
    if decision.outcome is Outcome.FORBIDDEN and decision.needed == ProjectRole.OWNER:
        return _forbid(
            "deleting a project needs its owner, or an owner or admin of its organization",
            str(ProjectRole.OWNER),
        )
    return decision


def decide_key(principal: Principal, user: str | None, project: str | None) -> Decision:
    """May `principal` see, make or revoke a key of `user` or of `project`? A person their own
    user keys; a project's owner that project's keys; another's: NOT_FOUND. Whether the key
    itself is read-only is the route's `ProjectWriter`'s to check."""
    if principal.kind is PrincipalKind.PROVIDER:
        return _allow("the provider may do anything")
    if user is not None:
        if principal.kind is PrincipalKind.USER and user == principal.user_id:
            return _allow("a person's own key")
        return NOT_FOUND
    if project is None:
        return NOT_FOUND
    role = project_role(principal, project)
    if role is None:
        return NOT_FOUND
    if role is not ProjectRole.OWNER:
        return _forbid(
            f"a project's keys are its owner's to manage (you are {role})", str(ProjectRole.OWNER)
        )
    return _allow("the project's owner")
