"""Rendered workflow YAML → frozen specs, with Tinkerbell's validation rules.

The YAML is composed into nodes rather than loaded, so string fields keep the text as
written: tink decodes into `map[string]string`, where `COMPRESSED: true` stays "true" and
`MODE: 0600` stays "0600", which plain `yaml.safe_load` would turn into a bool and an int.
Composing uses the bounded loader applied documents use (metalflow.yamlload): nesting and alias
expansion are refused past its limits, with the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

from metalflow import yamlload


class TemplateError(ValueError):
    """Bad template, located by a dotted field path (or 'template') and, when known, a line."""

    def __init__(self, message: str, *, field: str = "template", line: int | None = None) -> None:
        self.field = field
        self.line = line
        self.message = message
        if field != "template":
            text = f"{field}: {message}"
        elif line is not None:
            text = f"line {line}: {message}"
        else:
            text = message
        super().__init__(text)


MAX_NAME = 200  # tink: "name cannot have more than 200 characters"
MAX_VERSION = 32  # the stored column's width
MAX_TIMEOUT = 30 * 24 * 3600
"""Seconds; a month bounds every timeout and backoff, so deadlines stay representable."""
MAX_RETRIES = 100
TERMINAL_IMAGES = frozenset({"reboot", "kexec", "poweroff"})

_IMAGE = re.compile(
    r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ActionSpec:
    """One container run; environment and volumes already include the task's."""

    name: str
    image: str
    timeout: int
    command: tuple[str, ...]
    environment: Mapping[str, str]
    volumes: tuple[str, ...]
    pid: str | None
    retries: int = 0
    retry_backoff: float = 0.0
    terminal: bool = False


@dataclass(frozen=True)
class TaskSpec:
    name: str
    worker: str
    volumes: tuple[str, ...]
    environment: Mapping[str, str]
    actions: tuple[ActionSpec, ...]


@dataclass(frozen=True)
class WorkflowSpec:
    version: str
    name: str
    global_timeout: int
    tasks: tuple[TaskSpec, ...]


# ---------------------------------------------------------------- YAML nodes → spec

_NULL = "tag:yaml.org,2002:null"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _fail(path: str, node: yaml.Node, message: str) -> TemplateError:
    return TemplateError(message, field=path, line=_line(node))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _value(node: yaml.Node) -> Any:
    """The scalar's value, or None when an explicit tag makes it unreadable (`!!int abc`): the
    callers then report the field as malformed."""
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _fields(node: yaml.Node, path: str, allowed: frozenset[str], what: str) -> dict[str, yaml.Node]:
    """A mapping's keys and value nodes; unknown or repeated keys fail, as tink decodes strictly."""
    if not isinstance(node, yaml.MappingNode):
        raise _fail(path or "template", node, f"{what} must be a mapping")
    out: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        where = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            raise _fail(
                where if key else path or "template", key_node, f"unknown field {key!r} in {what}"
            )
        if key in out:
            raise _fail(where, key_node, f"field {key!r} repeated in {what}")
        if not _is_null(value_node):
            out[key] = value_node
    return out


def _text(node: yaml.Node, path: str) -> str:
    """A scalar's text as written, the way Go decodes any scalar into a string field."""
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(path, node, "must be a string")
    return str(node.value)


def _name(fields: Mapping[str, yaml.Node], path: str, parent: yaml.Node) -> str:
    if "name" not in fields:
        raise _fail(f"{path}.name" if path else "name", parent, "name is required")
    where = f"{path}.name" if path else "name"
    name = _text(fields["name"], where)
    if not name:
        raise _fail(where, fields["name"], "name cannot be empty")
    if len(name) > MAX_NAME:
        raise _fail(where, fields["name"], f"name cannot have more than {MAX_NAME} characters")
    return name


def _number(
    node: yaml.Node, path: str, kinds: tuple[type, ...], check: Callable[[Any], bool], need: str
) -> Any:
    value = _value(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, kinds) or not check(value):
        raise _fail(path, node, f"must be {need}")
    return value


def _strings(node: yaml.Node, path: str, allow_scalar: bool = False) -> tuple[str, ...]:
    if allow_scalar and isinstance(node, yaml.ScalarNode):
        return (str(node.value),)
    if not isinstance(node, yaml.SequenceNode):
        raise _fail(path, node, "must be a list of strings")
    return tuple(_text(item, f"{path}[{i}]") for i, item in enumerate(node.value))


def _environment(node: yaml.Node, path: str) -> dict[str, str]:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(path, node, "must be a mapping of names to strings")
    env: dict[str, str] = {}
    for key_node, value_node in node.value:
        key = _text(key_node, path)
        where = f"{path}.{key}"
        if key in env:
            raise _fail(where, key_node, f"variable {key!r} repeated")
        if not isinstance(value_node, yaml.ScalarNode):
            raise _fail(where, value_node, f"value of {key!r} must be a string, not a collection")
        env[key] = "" if value_node.tag == _NULL else str(value_node.value)
    return env


def _merge_volumes(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(volume for group in groups for volume in group))


def _is_terminal_image(image: str) -> bool:
    base = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return base in TERMINAL_IMAGES


_TOP = frozenset({"version", "name", "id", "global_timeout", "tasks"})
_TASK = frozenset({"name", "worker", "volumes", "environment", "actions"})
_ACTION = frozenset(
    {
        "name",
        "image",
        "timeout",
        "command",
        "environment",
        "volumes",
        "pid",
        "retries",
        "retry_backoff",
        "terminal",
    }
)


def _flag(node: yaml.Node, path: str) -> bool:
    value = _value(node) if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(value, bool):
        raise _fail(path, node, "must be true or false")
    return value


def _action(
    node: yaml.Node, path: str, task_env: Mapping[str, str], task_volumes: tuple[str, ...]
) -> ActionSpec:
    fields = _fields(node, path, _ACTION, "action")
    name = _name(fields, path, node)
    if "image" not in fields:
        raise _fail(f"{path}.image", node, "image is required")
    image = _text(fields["image"], f"{path}.image")
    if not _IMAGE.fullmatch(image):
        raise _fail(f"{path}.image", fields["image"], f"invalid action image: {image!r}")

    def count(key: str, limit: int, need: str) -> int:
        if key not in fields:
            return 0
        value: int = _number(fields[key], f"{path}.{key}", (int,), lambda v: 0 <= v <= limit, need)
        return value

    backoff = 0.0
    if "retry_backoff" in fields:
        backoff = float(
            _number(
                fields["retry_backoff"],
                f"{path}.retry_backoff",
                (int, float),
                lambda v: 0 <= v <= MAX_TIMEOUT,
                f"a number of seconds from 0 to {MAX_TIMEOUT}",
            )
        )
    env = dict(task_env)
    if "environment" in fields:
        env.update(_environment(fields["environment"], f"{path}.environment"))
    own_volumes = _strings(fields["volumes"], f"{path}.volumes") if "volumes" in fields else ()
    return ActionSpec(
        name=name,
        image=image,
        timeout=count("timeout", MAX_TIMEOUT, f"a whole number of seconds from 0 to {MAX_TIMEOUT}"),
        command=_strings(fields["command"], f"{path}.command", allow_scalar=True)
        if "command" in fields
        else (),
        environment=_frozen(env),
        volumes=_merge_volumes(task_volumes, own_volumes),
        pid=_text(fields["pid"], f"{path}.pid") if "pid" in fields else None,
        retries=count("retries", MAX_RETRIES, f"a whole number from 0 to {MAX_RETRIES}"),
        retry_backoff=backoff,
        terminal=_flag(fields["terminal"], f"{path}.terminal")
        if "terminal" in fields
        else _is_terminal_image(image),
    )


def _task(node: yaml.Node, path: str) -> TaskSpec:
    fields = _fields(node, path, _TASK, "task")
    name = _name(fields, path, node)
    if "worker" not in fields:
        raise _fail(f"{path}.worker", node, "worker is required")
    worker = _text(fields["worker"], f"{path}.worker")
    if not worker.strip():
        raise _fail(f"{path}.worker", fields["worker"], "worker cannot be empty")
    volumes = _strings(fields["volumes"], f"{path}.volumes") if "volumes" in fields else ()
    env: dict[str, str] = {}
    if "environment" in fields:
        env = _environment(fields["environment"], f"{path}.environment")
    actions_node = fields.get("actions")
    if not isinstance(actions_node, yaml.SequenceNode) or not actions_node.value:
        raise _fail(f"{path}.actions", actions_node or node, "a task needs at least one action")
    actions: list[ActionSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(actions_node.value):
        action = _action(item, f"{path}.actions[{i}]", env, volumes)
        if action.name in seen:
            raise _fail(
                f"{path}.actions[{i}].name",
                item,
                f"duplicate action name {action.name!r} in task {name!r}",
            )
        seen.add(action.name)
        actions.append(action)
    return TaskSpec(name, worker, volumes, _frozen(env), tuple(actions))


def parse_workflow(text: str) -> WorkflowSpec:
    """Rendered YAML → spec, or TemplateError with the field path and line at fault."""
    try:
        root = yamlload.compose(text)
    except yaml.MarkedYAMLError as exc:
        line = yamlload.error_line(exc, text)
        raise TemplateError(f"invalid YAML: {exc.problem or exc}", line=line) from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"invalid YAML: {exc}") from None
    if root is None:
        raise TemplateError("template is empty")
    fields = _fields(root, "", _TOP, "template")
    name = _name(fields, "", root)
    if "version" not in fields:
        raise _fail("version", root, "version is required")
    version = _text(fields["version"], "version")
    if not version or len(version) > MAX_VERSION:
        raise _fail("version", fields["version"], f"version must be 1 to {MAX_VERSION} characters")
    timeout = 0
    if "global_timeout" in fields:
        timeout = _number(
            fields["global_timeout"],
            "global_timeout",
            (int,),
            lambda v: 0 <= v <= MAX_TIMEOUT,
            f"a whole number of seconds from 0 to {MAX_TIMEOUT}",
        )
    tasks_node = fields.get("tasks")
    if not isinstance(tasks_node, yaml.SequenceNode) or not tasks_node.value:
        raise _fail("tasks", tasks_node or root, "template must have at least one task defined")
    tasks: list[TaskSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(tasks_node.value):
        task = _task(item, f"tasks[{i}]")
        if task.name in seen:
            raise _fail(f"tasks[{i}].name", item, f"duplicate task name {task.name!r}")
        seen.add(task.name)
        tasks.append(task)
    return WorkflowSpec(version, name, timeout, tuple(tasks))
