"""Tinkerbell workflow templates: Go text/template, then YAML, then validated frozen specs."""

from metalflow.templates.render import MAX_RENDERED_BYTES, check_template, render_template
from metalflow.templates.spec import ActionSpec, TaskSpec, TemplateError, WorkflowSpec

__all__ = [
    "MAX_RENDERED_BYTES",
    "ActionSpec",
    "TaskSpec",
    "TemplateError",
    "WorkflowSpec",
    "check_template",
    "render_template",
]
