"""`metalflow apply -f FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.unit.cli.fakes import FakeServer, Run

APPLY = "/api/v1/apply"
MANIFEST = "kind: Machine\nname: m1\n"


def applied(*results: tuple[str, str, str], dry_run: bool = False) -> dict[str, object]:
    items = [{"kind": kind, "name": name, "action": action} for kind, name, action in results]
    return {"dry_run": dry_run, "results": items}


def test_posts_the_file_as_yaml(server: FakeServer, run: Run, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    server.reply(
        "POST", APPLY, applied(("Machine", "m1", "created"), ("Template", "ubuntu", "unchanged"))
    )

    result = run("apply", "-f", "m.yaml")

    assert result.exit_code == 0, result.output
    assert server.last.content.decode() == MANIFEST
    assert server.last.headers["content-type"] == "application/yaml"
    assert server.last.url.params["dry_run"] == "false"
    assert result.stdout == "machine/m1 created\ntemplate/ubuntu unchanged\n"


def test_dry_run(server: FakeServer, run: Run, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    server.reply("POST", APPLY, applied(("Machine", "m1", "updated"), dry_run=True))

    result = run("apply", "-f", "m.yaml", "--dry-run")

    assert server.last.url.params["dry_run"] == "true"
    assert result.stdout == "machine/m1 updated (dry run)\n"


def test_reads_stdin(server: FakeServer, run: Run) -> None:
    server.reply("POST", APPLY, applied(("Machine", "m1", "created")))

    result = run("apply", "-f", "-", input=MANIFEST)

    assert result.exit_code == 0, result.output
    assert server.last.content.decode() == MANIFEST


def test_several_files_go_in_one_request(server: FakeServer, run: Run, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: Machine\nname: a\n")
    (tmp_path / "b.yaml").write_text("---\nkind: Machine\nname: b")
    body = applied(("Machine", "a", "created"), ("Machine", "b", "created"))
    server.reply("POST", APPLY, body)

    result = run("-o", "json", "apply", "-f", "a.yaml", "-f", "b.yaml")

    assert result.exit_code == 0, result.output
    (request,) = server.requests
    assert request.content.decode() == "kind: Machine\nname: a\n\n---\n---\nkind: Machine\nname: b"
    assert [doc for doc in yaml.safe_load_all(request.content) if doc] == [
        {"kind": "Machine", "name": "a"},
        {"kind": "Machine", "name": "b"},
    ]
    assert json.loads(result.stdout) == body


def test_missing_file_is_bad_input_and_sends_nothing(
    server: FakeServer, run: Run, tmp_path: Path
) -> None:
    (tmp_path / "ok.yaml").write_text(MANIFEST)

    result = run("apply", "-f", "ok.yaml", "-f", "nope.yaml")

    assert result.exit_code == 2
    assert result.stderr == 'error: file "nope.yaml" not found\n'
    assert server.requests == []


def test_unreadable_file_is_bad_input(server: FakeServer, run: Run, tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()

    result = run("apply", "-f", "dir.yaml")

    assert result.exit_code == 2
    assert result.stderr.startswith('error: cannot read "dir.yaml": ')


def test_file_is_required(server: FakeServer, run: Run) -> None:
    result = run("apply")

    assert result.exit_code == 2
    assert server.requests == []


def test_invalid_manifest_shows_the_field(server: FakeServer, run: Run, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    server.error(
        "POST",
        APPLY,
        422,
        {
            "message": "duplicate MAC 52:54:00:00:00:01 (already on machine m1)",
            "field": "spec.interfaces[0].mac",
        },
    )

    result = run("apply", "-f", "m.yaml")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: spec.interfaces[0].mac: duplicate MAC 52:54:00:00:00:01 (already on machine m1)\n"
    )
    assert "Traceback" not in result.output


def test_a_message_that_names_its_field_is_shown_with_it_once(
    server: FakeServer, run: Run, tmp_path: Path
) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    field = "documents[0].spec.userData"
    message = f"{field}: userData is 65537 bytes; the limit is 65536 bytes: gzip it"
    server.error("POST", APPLY, 422, {"message": message, "field": field})

    result = run("apply", "-f", "m.yaml")

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
