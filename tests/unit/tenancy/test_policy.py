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
    OrgAction,
    OrgRole,
    Outcome,
    Principal,
    PrincipalKind,
    ProjectRole,
    decide,
    decide_key,
    decide_new_organization,
    decide_org,
    decide_org_membership,
    decide_project_deletion,
    visible_organizations,
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


# --- the tenancy API's own rules ---------------------------------------------------------------

OTHER_ORG = "o-other"
ORG_ACTIONS = list(OrgAction)
ME = "u-me"
# Columns, in OrgAction's order: read create_project manage_members delete.
ORG_TABLE: dict[str, dict[str, list[str]]] = {
    "provider": {"own": ["ok"] * 4, "other": ["ok"] * 4},
    "provider read-only key": {
        "own": ["ok"] + ["read-write"] * 3,
        "other": ["ok"] + ["read-write"] * 3,
    },
    "viewer": {"own": ["404"] * 4, "other": ["404"] * 4},
    "org member": {"own": ["ok"] + ["admin"] * 3, "other": ["404"] * 4},
    "org admin": {"own": ["ok"] * 4, "other": ["404"] * 4},
    "org owner": {"own": ["ok"] * 4, "other": ["404"] * 4},
    "org member and viewer": {"own": ["ok"] + ["admin"] * 3, "other": ["404"] * 4},
    "project key": {"own": ["404"] * 4, "other": ["404"] * 4},
    "agent": {"own": ["404"] * 4, "other": ["404"] * 4},
}
"""A plain "viewer" has no `project_orgs`, so knows no organization; "org member and viewer"
sees the org both ways."""


def outcome_of(decision: Decision) -> str:
    if decision.allowed:
        return "ok"
    if decision.outcome is Outcome.NOT_FOUND:
        return "404"
    assert decision.needed is not None
    return decision.needed


@pytest.mark.parametrize("name", ORG_TABLE)
@pytest.mark.parametrize("where", ["own", "other"])
def test_organization_decision_table(name: str, where: str) -> None:
    organization = ORG if where == "own" else OTHER_ORG
    found = [outcome_of(decide_org(PRINCIPALS[name], a, organization)) for a in ORG_ACTIONS]
    assert found == ORG_TABLE[name][where]


def test_a_member_of_an_orgs_project_sees_the_org_but_runs_nothing_there() -> None:
    viewer = user(project_roles={OWN: ProjectRole.VIEWER}, project_orgs={OWN: ORG})
    assert visible_organizations(viewer) == frozenset({ORG})
    assert decide_org(viewer, OrgAction.READ, ORG).allowed
    refused = decide_org(viewer, OrgAction.CREATE_PROJECT, ORG)
    assert refused.needed == "admin" and "a member of one of its projects" in refused.reason


def test_who_may_found_an_organization() -> None:
    assert decide_new_organization(PRINCIPALS["provider"]).allowed
    assert decide_new_organization(user(user_id=ME)).allowed
    assert decide_new_organization(user(user_id=ME, read_only=True)).needed == "read-write"
    assert decide_new_organization(PRINCIPALS["project key"]).needed == "user key"
    assert not decide_new_organization(PRINCIPALS["agent"]).allowed


ORG_ADMIN = user(user_id=ME, org_roles={ORG: OrgRole.ADMIN})
ORG_OWNER = user(user_id=ME, org_roles={ORG: OrgRole.OWNER})
ORG_MEMBER = user(user_id=ME, org_roles={ORG: OrgRole.MEMBER})
OWNS, ADMIN, MEMBER = OrgRole.OWNER, OrgRole.ADMIN, OrgRole.MEMBER
MEMBERSHIP_CASES = [
    ("admin adds a member", ORG_ADMIN, "u-x", None, MEMBER, "ok"),
    ("admin adds an owner", ORG_ADMIN, "u-x", None, OWNS, "owner"),
    ("admin promotes to owner", ORG_ADMIN, "u-x", MEMBER, OWNS, "owner"),
    ("admin demotes an owner", ORG_ADMIN, "u-x", OWNS, ADMIN, "owner"),
    ("admin removes an owner", ORG_ADMIN, "u-x", OWNS, None, "owner"),
    ("admin removes a member", ORG_ADMIN, "u-x", MEMBER, None, "ok"),
    ("owner adds an owner", ORG_OWNER, "u-x", None, OWNS, "ok"),
    ("owner demotes an owner", ORG_OWNER, "u-x", OWNS, MEMBER, "ok"),
    ("owner leaves", ORG_OWNER, ME, OWNS, None, "ok"),
    ("member leaves", ORG_MEMBER, ME, MEMBER, None, "ok"),
    ("member removes another", ORG_MEMBER, "u-x", MEMBER, None, "admin"),
    ("member promotes themselves", ORG_MEMBER, ME, MEMBER, ADMIN, "admin"),
    (
        "read-only key leaves",
        dataclasses.replace(ORG_MEMBER, read_only=True),
        ME,
        MEMBER,
        None,
        "read-write",
    ),
    ("outsider", user(user_id=ME), "u-x", None, MEMBER, "404"),
    ("provider makes an owner", PRINCIPALS["provider"], "u-x", None, OWNS, "ok"),
    ("project key", PRINCIPALS["project key"], "u-x", None, MEMBER, "404"),
]


@pytest.mark.parametrize(
    ("principal", "member", "current", "new", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in MEMBERSHIP_CASES],
)
def test_membership_decisions(
    principal: Principal,
    member: str,
    current: OrgRole | None,
    new: OrgRole | None,
    expected: str,
) -> None:
    decision = decide_org_membership(principal, ORG, member, current, new)
    assert outcome_of(decision) == expected, decision.reason


org_users = st.builds(
    lambda orgs, read_only: user(
        user_id=ME, org_roles=orgs, project_orgs=PROJECT_ORGS, read_only=read_only
    ),
    org_roles,
    st.booleans(),
)
maybe_roles = st.one_of(st.none(), st.sampled_from(list(OrgRole)))


@given(org_users, st.sampled_from(ORGS), st.sampled_from([ME, "u-x"]), maybe_roles, maybe_roles)
def test_only_an_owner_touches_an_owner_but_for_leaving(
    principal: Principal,
    org: str,
    member: str,
    current: OrgRole | None,
    new: OrgRole | None,
) -> None:
    decision = decide_org_membership(principal, org, member, current, new)
    leaving = member == ME and new is None
    if decision.allowed and OrgRole.OWNER in (current, new) and not leaving:
        assert principal.org_roles.get(org) is OrgRole.OWNER


@given(users, st.sampled_from([*ORGS, "o-unknown"]))
def test_a_user_sees_exactly_the_organizations_decide_lets_it_read(
    principal: Principal, org: str
) -> None:
    seen = visible_organizations(principal)
    assert seen is not None
    assert (org in seen) is decide_org(principal, OrgAction.READ, org).allowed


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("provider", "ok"),
        ("owner", "ok"),
        ("org admin", "ok"),
        ("org owner", "ok"),
        ("editor", "owner"),
        ("viewer", "owner"),
        ("org member", "404"),
        ("project key", "owner"),
        ("owner's read-only key", "read-write"),
    ],
)
def test_who_may_delete_a_project(name: str, expected: str) -> None:
    decision = decide_project_deletion(PRINCIPALS[name], OWN)
    assert outcome_of(decision) == expected
    if expected == "owner":
        assert decision.reason.startswith("deleting a project needs its owner")
    assert outcome_of(decide_project_deletion(PRINCIPALS[name], OTHER)) in ("ok", "404")


@pytest.mark.parametrize(
    ("principal", "key_user", "key_project", "expected"),
    [
        pytest.param(PRINCIPALS["provider"], "u-x", None, "ok", id="provider, anyone's"),
        pytest.param(user(user_id=ME), ME, None, "ok", id="one's own user key"),
        pytest.param(user(user_id=ME), "u-x", None, "404", id="another's user key"),
        pytest.param(PRINCIPALS["owner"], None, OWN, "ok", id="the project owner's"),
        pytest.param(PRINCIPALS["org admin"], None, OWN, "ok", id="the org admin's"),
        pytest.param(PRINCIPALS["editor"], None, OWN, "owner", id="an editor"),
        pytest.param(PRINCIPALS["owner"], None, OTHER, "404", id="another project's"),
        pytest.param(PRINCIPALS["project key"], None, OWN, "owner", id="a project key"),
        pytest.param(PRINCIPALS["project key"], "u-x", None, "404", id="a project key, user's"),
    ],
)
def test_key_decisions(
    principal: Principal, key_user: str | None, key_project: str | None, expected: str
) -> None:
    assert outcome_of(decide_key(principal, key_user, key_project)) == expected


@given(tenants, st.sampled_from([ME, "u-x"]))
def test_a_tenant_never_learns_that_another_persons_key_exists(
    principal: Principal, key_user: str
) -> None:
    decision = decide_key(dataclasses.replace(principal, user_id=ME), key_user, None)
    assert decision.outcome is not Outcome.FORBIDDEN
