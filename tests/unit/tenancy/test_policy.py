"""The decision table: every kind of caller, role and action, on their own project, another
project and no project; then the properties the table is meant to have."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.tenancy import auth
from metalflow.tenancy.policy import (
    ROLE_ORDER,
    Action,
    Decision,
    OrgRole,
    Outcome,
    Principal,
    PrincipalKind,
    ProjectRole,
    decide,
    visible_projects,
)
from metalflow.tenancy.tokens import BootClaim

OWN, OTHER = "p-own", "p-other"
ORG = "o-own"
MACHINE, OTHER_MACHINE = "m-own", "m-other"
ACTIONS = list(Action)


def user(**fields: object) -> Principal:
    return dataclasses.replace(Principal(PrincipalKind.USER, "ada"), **fields)  # type: ignore[arg-type]


PRINCIPALS = {
    "provider": Principal(PrincipalKind.PROVIDER, "admin"),
    "provider read-only key": Principal(PrincipalKind.PROVIDER, "admin", read_only=True),
    "viewer": user(project_roles={OWN: ProjectRole.VIEWER}),
    "editor": user(project_roles={OWN: ProjectRole.EDITOR}),
    "owner": user(project_roles={OWN: ProjectRole.OWNER}),
    "owner's read-only key": user(project_roles={OWN: ProjectRole.OWNER}, read_only=True),
    "org member": user(org_roles={ORG: OrgRole.MEMBER}, project_orgs={OWN: ORG}),
    "org admin": user(org_roles={ORG: OrgRole.ADMIN}, project_orgs={OWN: ORG}),
    "org owner": user(org_roles={ORG: OrgRole.OWNER}, project_orgs={OWN: ORG}),
    "org member and viewer": user(
        project_roles={OWN: ProjectRole.VIEWER},
        org_roles={ORG: OrgRole.MEMBER},
        project_orgs={OWN: ORG},
    ),
    "project key": Principal(PrincipalKind.PROJECT_KEY, "ci", project=OWN),
    "read-only project key": Principal(
        PrincipalKind.PROJECT_KEY, "ci", project=OWN, read_only=True
    ),
    "agent": Principal(PrincipalKind.AGENT, "agent:m-own", machine_id=MACHINE),
    "agent with a boot token": Principal(
        PrincipalKind.AGENT, "agent:m-own", machine_id=MACHINE, boot_only=True
    ),
}

# Columns, in Action's order: read write power provision delete manage_members manage_keys
# provider_only agent hello. "ok" is allowed, "404" not found, anything else is forbidden
# and names what would be allowed.
AT = "agent token"
PROVIDER_ALL = ["ok"] * 8 + [AT, AT]
PROVIDER_RO = ["ok"] + ["read-write"] * 7 + [AT, AT]
HIDDEN = ["404"] * 10
TENANT_NO_PROJECT = ["ok"] + ["provider"] * 7 + [AT, AT]
AS_OWNER = ["ok"] * 7 + ["provider", AT, AT]
AS_EDITOR = ["ok"] * 5 + ["owner", "owner", "provider", AT, AT]
AS_VIEWER = ["ok"] + ["editor"] * 4 + ["owner", "owner", "provider", AT, AT]
AGENT_OWN = ["provider"] * 8 + ["ok", "ok"]
BOOT_OWN = ["run token"] * 9 + ["ok"]
TM = "that machine's token"

TABLE: dict[str, dict[str, list[str]]] = {
    "provider": {"own": PROVIDER_ALL, "other": PROVIDER_ALL, "none": PROVIDER_ALL},
    "provider read-only key": {"own": PROVIDER_RO, "other": PROVIDER_RO, "none": PROVIDER_RO},
    "viewer": {"own": AS_VIEWER, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "editor": {"own": AS_EDITOR, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "owner": {"own": AS_OWNER, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "owner's read-only key": {
        "own": ["ok"] + ["read-write"] * 6 + ["provider", AT, AT],
        "other": HIDDEN,
        "none": TENANT_NO_PROJECT,
    },
    "org member": {"own": HIDDEN, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "org admin": {"own": AS_OWNER, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "org owner": {"own": AS_OWNER, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "org member and viewer": {"own": AS_VIEWER, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "project key": {"own": AS_EDITOR, "other": HIDDEN, "none": TENANT_NO_PROJECT},
    "read-only project key": {
        "own": ["ok"] + ["read-write"] * 4 + ["owner", "owner", "provider", AT, AT],
        "other": HIDDEN,
        "none": TENANT_NO_PROJECT,
    },
    "agent": {
        "own": AGENT_OWN,
        "other": ["provider"] * 8 + [TM, TM],
        "none": AGENT_OWN,
    },
    "agent with a boot token": {
        "own": BOOT_OWN,
        "other": ["run token"] * 9 + [TM],
        "none": BOOT_OWN,
    },
}
REASONS = {
    AT: "the agent endpoints take a machine's agent token",
    "read-write": "this key is read-only and may not",
    "provider": "only the provider may",
    "editor": "editor",
    "owner": "owner",
    "run token": "a boot token is good only for POST /api/v1/agent/hello",
    TM: "this agent token belongs to another machine",
}
"""What the reason says, by what a FORBIDDEN decision names as needed."""
RESOURCES = {"own": (OWN, MACHINE), "other": (OTHER, OTHER_MACHINE), "none": (None, None)}
CASES = [
    pytest.param(name, where, action, TABLE[name][where][column], id=f"{name}-{where}-{action}")
    for name in PRINCIPALS
    for where in RESOURCES
    for column, action in enumerate(ACTIONS)
]


def test_the_table_covers_every_principal_and_action() -> None:
    assert set(TABLE) == set(PRINCIPALS)
    assert all(len(row) == len(ACTIONS) for rows in TABLE.values() for row in rows.values())


@pytest.mark.parametrize(("name", "where", "action", "expected"), CASES)
def test_decision_table(name: str, where: str, action: Action, expected: str) -> None:
    project, machine = RESOURCES[where]
    decision = decide(PRINCIPALS[name], action, project, resource_machine=machine)
    if expected == "ok":
        assert decision.outcome is Outcome.ALLOWED, decision.reason
        assert decision.allowed
    elif expected == "404":
        assert decision.outcome is Outcome.NOT_FOUND, decision.reason
        assert decision.reason == "no such resource in your projects"
    else:
        assert decision.outcome is Outcome.FORBIDDEN, decision.reason
        assert decision.needed == expected
        assert REASONS[expected] in decision.reason


def test_forbidden_reasons_say_what_is_needed() -> None:
    viewer = PRINCIPALS["viewer"]
    assert decide(viewer, Action.POWER, OWN).reason == (
        "power needs the project role editor (you are viewer)"
    )
    key = PRINCIPALS["read-only project key"]
    assert decide(key, Action.DELETE, OWN).reason == "this key is read-only and may not delete"
    assert decide(PRINCIPALS["project key"], Action.MANAGE_KEYS, OWN).reason == (
        "a project key may not manage_keys: a project owner must"
    )
    assert decide(PRINCIPALS["owner"], Action.PROVIDER_ONLY, OWN).reason == (
        "only the provider may do this"
    )
    assert decide(PRINCIPALS["agent"], Action.HELLO, None, resource_machine=OTHER_MACHINE) == (
        Decision(Outcome.FORBIDDEN, "this agent token belongs to another machine", TM)
    )


PROJECTS = ["p1", "p2", "p3"]
ORGS = ["o1", "o2"]
PROJECT_ORGS = {"p1": "o1", "p2": "o1", "p3": "o2"}
project_roles = st.dictionaries(st.sampled_from(PROJECTS), st.sampled_from(list(ProjectRole)))
org_roles = st.dictionaries(st.sampled_from(ORGS), st.sampled_from(list(OrgRole)))
users = st.builds(
    lambda projects, orgs, read_only: user(
        project_roles=projects, org_roles=orgs, project_orgs=PROJECT_ORGS, read_only=read_only
    ),
    project_roles,
    org_roles,
    st.booleans(),
)
project_keys = st.builds(
    lambda project, read_only: Principal(
        PrincipalKind.PROJECT_KEY, "key", project=project, read_only=read_only
    ),
    st.sampled_from(PROJECTS),
    st.booleans(),
)
tenants = st.one_of(users, project_keys)
principals = st.one_of(
    tenants,
    st.builds(
        lambda read_only: Principal(PrincipalKind.PROVIDER, "admin", read_only=read_only),
        st.booleans(),
    ),
)
actions = st.sampled_from(ACTIONS)
resources = st.one_of(st.none(), st.sampled_from([*PROJECTS, "p-unknown"]))


@given(principals, actions, resources)
def test_a_read_only_principal_is_never_allowed_more_than_read(
    principal: Principal, action: Action, project: str | None
) -> None:
    if principal.read_only and decide(principal, action, project).allowed:
        assert action is Action.READ


@given(tenants, resources)
def test_a_tenant_is_never_allowed_provider_only(principal: Principal, project: str | None) -> None:
    assert not decide(principal, Action.PROVIDER_ONLY, project).allowed


def member_of(principal: Principal, project: str) -> bool:
    if principal.kind is PrincipalKind.PROJECT_KEY:
        return principal.project == project
    org = principal.project_orgs.get(project)
    org_owns = org is not None and principal.org_roles.get(org) in (OrgRole.OWNER, OrgRole.ADMIN)
    return project in principal.project_roles or org_owns


@given(tenants, actions, st.sampled_from([*PROJECTS, "p-unknown"]))
def test_a_tenant_gets_only_not_found_outside_its_projects(
    principal: Principal, action: Action, project: str
) -> None:
    if not member_of(principal, project):
        assert decide(principal, action, project).outcome is Outcome.NOT_FOUND


@given(tenants, st.sampled_from([*PROJECTS, "p-unknown"]))
def test_a_tenant_sees_exactly_the_projects_decide_lets_it_read(
    principal: Principal, project: str
) -> None:
    seen = visible_projects(principal)
    assert seen is not None
    assert (project in seen) is decide(principal, Action.READ, project).allowed


def test_the_provider_sees_every_project_and_an_agent_none() -> None:
    assert visible_projects(Principal(PrincipalKind.PROVIDER, "admin")) is None
    agent = Principal(PrincipalKind.AGENT, "agent:m", machine_id="m")
    assert visible_projects(agent) == frozenset()


def stronger(role: ProjectRole, other: ProjectRole) -> ProjectRole:
    return max(role, other, key=ROLE_ORDER.index)


@given(users, st.sampled_from(PROJECTS), st.sampled_from(list(ProjectRole)), actions, resources)
def test_adding_a_project_role_never_removes_a_permission(
    principal: Principal, project: str, role: ProjectRole, action: Action, where: str | None
) -> None:
    current = principal.project_roles.get(project, ProjectRole.VIEWER)
    more = dataclasses.replace(
        principal, project_roles={**principal.project_roles, project: stronger(role, current)}
    )
    if decide(principal, action, where).allowed:
        assert decide(more, action, where).allowed


@given(users, st.sampled_from(ORGS), st.sampled_from(list(OrgRole)), actions, resources)
def test_adding_an_org_role_never_removes_a_permission(
    principal: Principal, org: str, role: OrgRole, action: Action, where: str | None
) -> None:
    order = list(OrgRole)
    current = principal.org_roles.get(org, OrgRole.MEMBER)
    added = max(role, current, key=order.index)
    more = dataclasses.replace(principal, org_roles={**principal.org_roles, org: added})
    if decide(principal, action, where).allowed:
        assert decide(more, action, where).allowed


BOOT_CLAIM = BootClaim(MACHINE, "w1", start=1, issued_ms=0, expires=0)
AUTH_PRINCIPALS = {
    "admin token": (
        auth.Principal(auth.Role.ADMIN, "admin"),
        Principal(PrincipalKind.PROVIDER, "admin"),
    ),
    "agent token": (
        auth.Principal(auth.Role.AGENT, "agent:m-own", MACHINE),
        PRINCIPALS["agent"],
    ),
    "boot token": (
        auth.Principal(
            auth.Role.AGENT, "agent:m-own", MACHINE, boot=BootClaim(MACHINE, "w", 1, 0, 0)
        ),
        PRINCIPALS["agent with a boot token"],
    ),
}


@pytest.mark.parametrize("name", AUTH_PRINCIPALS)
@pytest.mark.parametrize("action", list(auth.Action))
@pytest.mark.parametrize("machine", [None, MACHINE, OTHER_MACHINE])
def test_todays_authorize_is_expressed_by_decide(
    name: str, action: auth.Action, machine: str | None
) -> None:
    today, principal = AUTH_PRINCIPALS[name]
    try:
        auth.authorize(today, action, machine_id=machine)
        allowed_today = True
    except auth.Forbidden:
        allowed_today = False
    decision = decide(principal, Action(action.value), None, resource_machine=machine)
    assert decision.allowed == allowed_today, decision.reason
