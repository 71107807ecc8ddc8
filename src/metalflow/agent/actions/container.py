"""Actions whose image has no built-in run as containers, as Tinkerbell's worker runs them all.

Privileged, on the host network (the install environment has no container networking), with the
action's environment, volumes and `pid: host`, through whichever of docker, podman or nerdctl is
installed: all three take the same `run` flags. The runtime's CLI is driven as a program; a
Docker Engine API client would tie the agent to one runtime and a dependency.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from ..system import System
from .base import Context

RUNTIMES = ("docker", "podman", "nerdctl")


def find_runtime(system: System) -> str | None:
    for name in RUNTIMES:
        path = system.which(name)
        if path is not None:
            return path
    return None


def container_name(attempt_id: int) -> str:
    return f"metalflow-action-{attempt_id}"


def run_argv(
    runtime: str,
    image: str,
    *,
    name: str,
    environment: Mapping[str, str],
    volumes: Sequence[str],
    pid: str | None,
    command: Sequence[str],
) -> list[str]:
    argv = [runtime, "run", "--rm", "--name", name, "--privileged", "--network", "host"]
    if pid == "host":
        argv += ["--pid", "host"]
    for volume in volumes:
        argv += ["--volume", volume]
    for key, value in sorted(environment.items()):
        argv += ["--env", f"{key}={value}"]
    return [*argv, image, *command]


def run_container(
    ctx: Context,
    runtime: str,
    image: str,
    *,
    attempt_id: int,
    volumes: Sequence[str],
    pid: str | None,
    command: Sequence[str],
) -> None:
    """Run to completion; a cancelled action (timeout, server) removes the container too,
    since killing the runtime's CLI leaves a docker container running."""
    name = container_name(attempt_id)
    argv = run_argv(
        runtime,
        image,
        name=name,
        environment=ctx.env,
        volumes=volumes,
        pid=pid,
        command=command,
    )
    ctx.log(f"running {image} with {runtime.rsplit('/', 1)[-1]} as container {name}")
    try:
        ctx.run(*argv)
    finally:
        if ctx.cancelled.is_set():
            with contextlib.suppress(Exception):
                ctx.system.run([runtime, "rm", "--force", name], ctx.log, check=False)


def no_runtime_message(image: str, builtins: str) -> str:
    return (
        f"image {image!r} has no built-in implementation (built-ins: {builtins}, under"
        " quay.io/tinkerbell/actions/ and the other Tinkerbell repositories), and no container"
        " runtime (docker, podman or nerdctl) is installed to run it; use a built-in or add a"
        " runtime to the install environment"
    )
