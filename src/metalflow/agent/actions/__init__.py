"""Built-in actions, found by the container image a Tinkerbell template names.

Tinkerbell runs each action as a container; the install environment has no container
runtime, so the common hub actions are reimplemented here under their image names and
with their environment variables. Other images run as containers where a runtime is installed
(``container.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import container, disk, image
from .base import ActionError, After, Context

KNOWN_REPOSITORIES = (
    "quay.io/tinkerbell/actions/",
    "quay.io/tinkerbell-actions/",
    "ghcr.io/tinkerbell/actions/",
    "ghcr.io/tinkerbell/hub/",
    "docker.io/tinkerbell/",
    "index.docker.io/tinkerbell/",
    "tinkerbell/",
    "metalflow/actions/",
)


@dataclass(frozen=True)
class Builtin:
    name: str
    run: Callable[[Context], After | None]
    terminal: bool = False


BUILTINS = {
    b.name: b
    for b in (
        Builtin("image2disk", image.image2disk),
        Builtin("writefile", disk.writefile),
        Builtin("cexec", disk.cexec),
        Builtin("wipe", disk.wipe),
        Builtin("partition", disk.partition),
        Builtin("format", disk.format_),
        Builtin("reboot", disk.reboot, terminal=True),
        Builtin("poweroff", disk.poweroff, terminal=True),
        Builtin("kexec", disk.kexec, terminal=True),
    )
}


def repository(image_ref: str) -> str:
    """The image reference without ``@digest`` and ``:tag`` (a registry's ``:port`` stays)."""
    name = image_ref.strip().split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def lookup(image_ref: str) -> Builtin | None:
    repo = repository(image_ref)
    if "/" not in repo:
        return BUILTINS.get(repo)
    for prefix in KNOWN_REPOSITORIES:
        if repo.startswith(prefix) and "/" not in repo[len(prefix) :]:
            return BUILTINS.get(repo[len(prefix) :])
    return None


def no_builtin_message(image_ref: str) -> str:
    return container.no_runtime_message(image_ref, ", ".join(sorted(BUILTINS)))


__all__ = ["BUILTINS", "ActionError", "After", "Builtin", "Context", "lookup"]
