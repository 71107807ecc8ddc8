"""`metalflow user|org|project|key|audit|login`: tenants, their members and keys, the audit log.

Resources are named by id (what `list` shows). `login` writes its key to the credentials file
(`context.credentials_path`) with mode 0600, atomically: a temporary file in the same directory,
created 0600 by `tempfile.mkstemp`, then renamed over the old one, so no reader sees half a key
or a wider mode. Looked at atomicwrites (archived by its author; it does the same mkstemp and
rename) and platformdirs for the path (on macOS it answers ~/Library, not the ~/.config the
CLI documents): neither fit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from metalflow.cli import render
from metalflow.cli.client import ApiClient, resource
from metalflow.cli.context import cli_context, credentials_path, make_transport
from metalflow.cli.exit_codes import CliError, ExitCode

Json = dict[str, Any]

user_app = typer.Typer(no_args_is_help=True, help="Users: people who sign in.")
org_app = typer.Typer(no_args_is_help=True, help="Organizations: tenants, owning projects.")
project_app = typer.Typer(no_args_is_help=True, help="Projects: where machines belong.")
key_app = typer.Typer(no_args_is_help=True, help="API keys of users and projects.")
org_member_app = typer.Typer(no_args_is_help=True, help="An organization's members.")
project_member_app = typer.Typer(no_args_is_help=True, help="A project's members.")
org_app.add_typer(org_member_app, name="member")
project_app.add_typer(project_member_app, name="member")

PARENT_HELP = "The organization's or project's id."
ROLE_HELP = "Organizations: member, admin or owner; projects: viewer, editor or owner."


def _utc_iso(value: dt.datetime | None) -> str | None:
    """A time typed without a zone is UTC, as the server keeps every time."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()


def _items(data: Json) -> list[Json]:
    items: list[Json] = data["items"]
    return items


# --- users --------------------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="Their address; sign-in ignores its case.")],
    name: Annotated[str, typer.Option(help="Their name, as people know them.")],
    password: Annotated[
        bool, typer.Option("--password", help="Prompt for a password they sign in with.")
    ] = False,
    provider: Annotated[
        bool, typer.Option(help="The operator's staff: above every tenant.")
    ] = False,
) -> None:
    """Add a user; without --password they use keys only."""
    cli = cli_context(ctx)
    secret = (
        typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
        if password
        else None
    )
    body = {"email": email, "name": name, "password": secret, "provider": provider}
    created = cli.api.post(resource("users"), json=body, check="metalflow user list")
    cli.out.emit(created, _user)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """Every user (a tenant: you and the people in your organizations)."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("users")), _users)


@user_app.command("show")
def user_show(ctx: typer.Context, user_id: Annotated[str, typer.Argument(help="Id.")]) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("users", user_id)), _user)


@user_app.command("delete")
def user_delete(ctx: typer.Context, user_id: Annotated[str, typer.Argument(help="Id.")]) -> None:
    """Delete a user with their keys and memberships (not an organization's last owner)."""
    cli = cli_context(ctx)
    cli.api.delete(resource("users", user_id))
    cli.out.write(f"user/{user_id} deleted\n")


def _user(user: Json) -> RenderableType:
    return render.fields(
        [
            ("ID", user["id"]),
            ("EMAIL", user["email"]),
            ("NAME", user["name"]),
            ("PROVIDER", render.text(user["provider"])),
            ("PASSWORD", "set" if user["has_password"] else "none (keys only)"),
            ("CREATED", render.timestamp(user["created_at"])),
        ]
    )


def _users(data: Json) -> RenderableType:
    grid = render.listing("EMAIL", "NAME", "PROVIDER", "ID")
    for user in _items(data):
        grid.add_row(user["email"], user["name"], render.text(user["provider"]), user["id"])
    return grid


# --- organizations ------------------------------------------------------------------------------


@org_app.command("create")
def org_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits, '.', '_', '-'.")],
    owner: Annotated[
        str | None,
        typer.Option(help="The owning user's id (the provider's choice); default: you."),
    ] = None,
) -> None:
    """Add an organization, owned by you (signed in) or by --owner from the start."""
    cli = cli_context(ctx)
    body = {"name": name, "owner_id": owner}
    created = cli.api.post(resource("organizations"), json=body, check="metalflow org list")
    cli.out.emit(created, _org)


@org_app.command("list")
def org_list(ctx: typer.Context) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("organizations")), _orgs)


@org_app.command("show")
def org_show(ctx: typer.Context, org_id: Annotated[str, typer.Argument(help="Id.")]) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("organizations", org_id)), _org)


@org_app.command("delete")
def org_delete(ctx: typer.Context, org_id: Annotated[str, typer.Argument(help="Id.")]) -> None:
    """Delete an organization without projects."""
    cli = cli_context(ctx)
    cli.api.delete(resource("organizations", org_id))
    cli.out.write(f"organization/{org_id} deleted\n")


def _org(org: Json) -> RenderableType:
    return render.fields(
        [("ID", org["id"]), ("NAME", org["name"]), ("CREATED", render.timestamp(org["created_at"]))]
    )


def _orgs(data: Json) -> RenderableType:
    grid = render.listing("NAME", "ID", "CREATED")
    for org in _items(data):
        grid.add_row(org["name"], org["id"], render.timestamp(org["created_at"]))
    return grid


# --- projects -----------------------------------------------------------------------------------


@project_app.command("create")
def project_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique within the organization.")],
    org: Annotated[str, typer.Option(help="The organization's id (`metalflow org list`).")],
) -> None:
    """Add a project to an organization you own or administer; you become its owner."""
    cli = cli_context(ctx)
    created = cli.api.post(
        resource("organizations", org, "projects"),
        json={"name": name},
        check="metalflow project list",
    )
    cli.out.emit(created, _project)


@project_app.command("list")
def project_list(
    ctx: typer.Context, org: Annotated[str | None, typer.Option(help="Organization id.")] = None
) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("projects"), {"organization": org}), _projects)


@project_app.command("show")
def project_show(
    ctx: typer.Context, project_id: Annotated[str, typer.Argument(help="Id.")]
) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("projects", project_id)), _project)


@project_app.command("delete")
def project_delete(
    ctx: typer.Context, project_id: Annotated[str, typer.Argument(help="Id.")]
) -> None:
    """Delete a project with its memberships and project keys."""
    cli = cli_context(ctx)
    cli.api.delete(resource("projects", project_id))
    cli.out.write(f"project/{project_id} deleted\n")


def _project(project: Json) -> RenderableType:
    return render.fields(
        [
            ("ID", project["id"]),
            ("NAME", project["name"]),
            ("ORGANIZATION", project["organization_id"]),
            ("CREATED", render.timestamp(project["created_at"])),
        ]
    )


def _projects(data: Json) -> RenderableType:
    grid = render.listing("NAME", "ORGANIZATION", "ID")
    for project in _items(data):
        grid.add_row(project["name"], project["organization_id"], project["id"])
    return grid


# --- members ------------------------------------------------------------------------------------


def _members(data: Json) -> RenderableType:
    grid = render.listing("USER", "ROLE", "SINCE")
    for member in _items(data):
        grid.add_row(member["user_id"], member["role"], render.timestamp(member["created_at"]))
    return grid


def _member(member: Json) -> RenderableType:
    return render.fields([("USER", member["user_id"]), ("ROLE", member["role"])])


def _member_commands(app: typer.Typer, collection: str, noun: str, default_role: str) -> None:
    """add, list, set and remove, alike for organizations and projects. Their annotations name
    module constants only: typer evaluates them in the module's namespace, not this one."""

    def add(
        ctx: typer.Context,
        parent: Annotated[str, typer.Argument(help=PARENT_HELP)],
        user_id: Annotated[str, typer.Argument(help="The user's id.")],
        role: Annotated[str, typer.Option(help=ROLE_HELP)] = default_role,
    ) -> None:
        cli = cli_context(ctx)
        body = {"user_id": user_id, "role": role}
        added = cli.api.post(
            resource(collection, parent, "members"),
            json=body,
            check=f"metalflow {noun} member list",
        )
        cli.out.emit(added, _member)

    def list_members(
        ctx: typer.Context, parent: Annotated[str, typer.Argument(help=PARENT_HELP)]
    ) -> None:
        cli = cli_context(ctx)
        cli.out.emit(cli.api.get(resource(collection, parent, "members")), _members)

    def set_role(
        ctx: typer.Context,
        parent: Annotated[str, typer.Argument(help=PARENT_HELP)],
        user_id: Annotated[str, typer.Argument(help="The user's id.")],
        role: Annotated[str, typer.Argument(help=ROLE_HELP)],
    ) -> None:
        cli = cli_context(ctx)
        changed = cli.api.patch(
            resource(collection, parent, "members", user_id),
            json={"role": role},
            check="the member list",
        )
        cli.out.emit(changed, _member)

    def remove(
        ctx: typer.Context,
        parent: Annotated[str, typer.Argument(help=PARENT_HELP)],
        user_id: Annotated[str, typer.Argument(help="The user's id.")],
    ) -> None:
        cli = cli_context(ctx)
        cli.api.delete(resource(collection, parent, "members", user_id))
        cli.out.write(f"{noun}/{parent} member {user_id} removed\n")

    commands: tuple[tuple[str, Callable[..., None], str], ...] = (
        ("add", add, f"Add a member to the {noun}."),
        ("list", list_members, f"The {noun}'s members and their roles."),
        ("set", set_role, "Change a member's role."),
        ("remove", remove, f"Take a member out of the {noun}."),
    )
    for name, command, help_text in commands:
        app.command(name, help=help_text)(command)


_member_commands(org_member_app, "organizations", "org", "member")
_member_commands(project_member_app, "projects", "project", "viewer")


# --- keys ---------------------------------------------------------------------------------------


@key_app.command("create")
def key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. ci.")],
    user: Annotated[
        str | None, typer.Option(help="A user key: the user's id; default: your own key.")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="A project key (you own the project): its id.")
    ] = None,
    read_only: Annotated[bool, typer.Option(help="The key may only read.")] = False,
    expires_at: Annotated[
        dt.datetime | None, typer.Option(help="When it stops working (UTC unless a zone is given).")
    ] = None,
) -> None:
    """Make a key; its secret is shown this once."""
    cli = cli_context(ctx)
    body = {
        "name": name,
        "user_id": user,
        "project_id": project,
        "read_only": read_only,
        "expires_at": _utc_iso(expires_at),
    }
    created = cli.api.post(resource("keys"), json=body, check="metalflow key list")
    cli.out.emit(created, _created_key)


@key_app.command("list")
def key_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="A user's keys only.")] = None,
    project: Annotated[str | None, typer.Option(help="A project's keys only.")] = None,
) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("keys"), {"user": user, "project": project}), _keys)


@key_app.command("show")
def key_show(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Id.")]) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("keys", key_id)), _key)


@key_app.command("delete")
def key_delete(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Id.")]) -> None:
    """Revoke a key: it stops working and stays listed."""
    cli = cli_context(ctx)
    cli.api.delete(resource("keys", key_id))
    cli.out.write(f"key/{key_id} revoked\n")


def _owner(key: Json) -> str:
    return f"user {key['user_id']}" if key.get("user_id") else f"project {key['project_id']}"


def _key_rows(key: Json) -> list[tuple[str, str | Text]]:
    return [
        ("ID", key["id"]),
        ("NAME", key["name"]),
        ("PREFIX", key["prefix"]),
        ("OWNER", _owner(key)),
        ("READ ONLY", render.text(key["read_only"])),
        ("EXPIRES", render.timestamp(key["expires_at"])),
        ("REVOKED", render.timestamp(key["revoked_at"])),
        ("LAST USED", render.timestamp(key["last_used_at"])),
        ("FROM", render.text(key["last_used_address"])),
    ]


def _key(key: Json) -> RenderableType:
    return render.fields(_key_rows(key))


def _created_key(key: Json) -> RenderableType:
    return render.fields(
        [*_key_rows(key), ("SECRET", Text(f"{key['secret']}  (shown this once)", style="bold"))]
    )


def _keys(data: Json) -> RenderableType:
    grid = render.listing("NAME", "PREFIX", "OWNER", "READ ONLY", "EXPIRES", "REVOKED", "ID")
    for key in _items(data):
        grid.add_row(
            key["name"],
            key["prefix"],
            _owner(key),
            render.text(key["read_only"]),
            render.timestamp(key["expires_at"]),
            render.timestamp(key["revoked_at"]),
            key["id"],
        )
    return grid


# --- audit --------------------------------------------------------------------------------------


def audit(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="A project's entries only (its id).")] = None,
    since: Annotated[dt.datetime | None, typer.Option(help="Entries from this time on.")] = None,
    actor: Annotated[str | None, typer.Option(help="An actor's id or name.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
) -> None:
    """Who changed what, newest first."""
    cli = cli_context(ctx)
    params = {
        "project": project,
        "since": _utc_iso(since),
        "actor": actor,
        "limit": limit,
    }
    cli.out.emit(cli.api.get(resource("audit"), params), _audit)


def _audit(data: Json) -> RenderableType:
    grid = render.listing("AT", "ACTOR", "ACTION", "RESOURCE", "RESULT")
    for entry in _items(data):
        target = "/".join(
            str(part) for part in (entry["resource_type"], entry["resource_id"]) if part
        )
        grid.add_row(
            render.timestamp(entry["at"]),
            entry["actor_name"],
            entry["action"],
            render.text(target),
            entry["result"] if entry["status"] is None else f"{entry['result']} {entry['status']}",
        )
    return grid


# --- login --------------------------------------------------------------------------------------


def write_credentials(path: Path, key: str) -> None:
    """Mode 0600 from the first byte (mkstemp's, whatever the umask), in a directory of mode 0700
    when it is made here; a file an earlier login left wider is replaced, not reused."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def login(
    ctx: typer.Context,
    email: Annotated[
        str | None, typer.Option(help="Your address; prompted for if not given.")
    ] = None,
) -> None:
    """Sign in with your email and password; the key it gives is kept for later commands."""
    cli = cli_context(ctx)
    address = email or typer.prompt("Email", err=True)
    password = typer.prompt("Password", hide_input=True, err=True)
    client = ApiClient(cli.url, None, transport=make_transport())
    try:
        answer = client.post(
            resource("login"),
            json={"email": address, "password": password},
            check="metalflow key list",
        )
    finally:
        client.close()
    path = credentials_path()
    try:
        write_credentials(path, answer["key"]["secret"])
    except OSError as exc:
        raise CliError(f'cannot write "{path}": {exc}', ExitCode.BAD_INPUT) from None
    expires = render.timestamp(answer["key"]["expires_at"])
    cli.out.write(f"signed in as {answer['user']['email']}; key kept in {path} until {expires}\n")
