"""Template text → WorkflowSpec, the way tink-controller renders a Workflow.

Go template first, against the hardware map plus the Hardware data, then YAML, then
validation. Pure: no I/O, so the same text renders the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metalflow.templates.gotemplate import (
    FieldMap,
    GoTemplateError,
    Node,
    OutputTooLarge,
    execute,
    parse,
)
from metalflow.templates.spec import TemplateError, WorkflowSpec, parse_workflow

MAX_RENDERED_BYTES = 256 * 1024
RESERVED_KEYS = frozenset({"hardware", "Hardware"})


def _fields(value: Any) -> Any:
    """Maps become FieldMaps, so `.NameServers` finds `name_servers` as Go struct fields would."""
    if isinstance(value, Mapping):
        return FieldMap({str(key): _fields(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return [_fields(item) for item in value]
    return value


def _disk_devices(spec: Mapping[str, Any]) -> list[Any]:
    disks = spec.get("disks") or []
    if not isinstance(disks, list):
        return []
    return [disk.get("device") if isinstance(disk, Mapping) else disk for disk in disks]


def template_data(hardware: Mapping[str, Any], hardware_map: Mapping[str, str]) -> dict[str, Any]:
    """The render context: hardware-map keys at the top, `.Hardware` (the spec, Go field names,
    Disks as device paths) and `.hardware` (the whole object); the map cannot shadow either."""
    spec = hardware.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    data: dict[str, Any] = {
        str(key): value for key, value in hardware_map.items() if key not in RESERVED_KEYS
    }
    view = _fields(spec)
    view["disks"] = _disk_devices(spec)
    data["Hardware"] = view
    data["hardware"] = _fields(hardware)
    return data


def _compile(text: str) -> list[Node]:
    try:
        return parse(text)
    except GoTemplateError as exc:
        raise TemplateError(exc.message, line=exc.line) from None


def _render(tree: list[Node], data: Any, probe: bool) -> WorkflowSpec:
    try:
        rendered = execute(tree, data, limit=MAX_RENDERED_BYTES, probe=probe)
    except OutputTooLarge:
        raise TemplateError(
            f"the rendered template exceeds {MAX_RENDERED_BYTES // 1024} KiB"
        ) from None
    except GoTemplateError as exc:
        raise TemplateError(exc.message, line=exc.line) from None
    return parse_workflow(rendered)


def check_template(text: str) -> WorkflowSpec:
    """Validate at apply time, before any machine is known: unknown data renders as probes."""
    return _render(_compile(text), {}, probe=True)


def render_template(
    text: str, hardware: Mapping[str, Any], hardware_map: Mapping[str, str]
) -> WorkflowSpec:
    """Render for one machine; a missing key is an error naming the key and the line."""
    return _render(_compile(text), template_data(hardware, hardware_map), probe=False)
