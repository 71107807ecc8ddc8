"""What a built-in action gets to work with, and how it says it failed."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from ..system import Log, System

After = Callable[[], None]


class ActionError(Exception):
    """The action failed for a reason its message explains; no traceback is sent."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Context:
    env: Mapping[str, str]
    log: Log
    system: System
    cancelled: threading.Event = field(default_factory=threading.Event)
    action: str = "action"

    def require(self, name: str, example: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            raise ActionError(
                f"{self.action}: environment variable {name} is not set; add it to the"
                f" action's environment in the template, e.g. {name}: {example}",
                exit_code=2,
            )
        return value

    def optional(self, name: str, default: str = "") -> str:
        return self.env.get(name, default).strip() or default

    def flag(self, name: str, default: bool = False) -> bool:
        text = self.env.get(name, "").strip().lower()
        if not text:
            return default
        if text in ("1", "true", "yes", "y", "on"):
            return True
        if text in ("0", "false", "no", "n", "off"):
            return False
        raise ActionError(
            f"{self.action}: {name}={text!r} is not a boolean; use true or false", exit_code=2
        )

    def octal(self, name: str, default: int) -> int:
        text = self.env.get(name, "").strip()
        try:
            return int(text, 8) if text else default
        except ValueError:
            raise ActionError(
                f"{self.action}: {name}={text!r} is not an octal mode; use e.g. 0644",
                exit_code=2,
            ) from None

    def number(self, name: str, default: int) -> int:
        text = self.env.get(name, "").strip()
        try:
            return int(text) if text else default
        except ValueError:
            raise ActionError(
                f"{self.action}: {name}={text!r} is not a whole number", exit_code=2
            ) from None

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise ActionError(f"{self.action} was cancelled", exit_code=124)

    def need_tool(self, name: str, package: str) -> str:
        path = self.system.which(name)
        if path is None:
            raise ActionError(
                f"{self.action} needs {name}, which is not in this environment;"
                f" add the {package} package to the install environment",
                exit_code=127,
            )
        return path

    def run(self, *argv: str, stdin: str | None = None) -> None:
        self.system.run(argv, self.log, cancelled=self.cancelled, stdin=stdin)


@contextlib.contextmanager
def mounted(ctx: Context, device: str, fs_type: str) -> Iterator[str]:
    """``device`` mounted on a fresh directory, unmounted and removed again afterwards."""
    if not os.path.exists(device):
        raise ActionError(f"{ctx.action}: device {device} does not exist", exit_code=2)
    ctx.need_tool("mount", "util-linux (or busybox)")
    target = tempfile.mkdtemp(prefix="metalflow-mnt-")
    try:
        ctx.run("mount", "-t", fs_type, device, target)
        try:
            yield target
        finally:
            ctx.system.run(["umount", target], ctx.log)
    finally:
        os.rmdir(target)


def inside(root: str, path: str) -> str:
    """``path`` taken as absolute inside ``root``: ``..`` cannot climb out."""
    clean = os.path.normpath("/" + path).lstrip("/")
    return os.path.join(root, clean)
