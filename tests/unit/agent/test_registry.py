"""Which built-in runs a template's image."""

from __future__ import annotations

import pytest

from metalflow.agent.actions import BUILTINS, lookup, no_builtin_message, repository


@pytest.mark.parametrize(
    "image",
    [
        "quay.io/tinkerbell/actions/image2disk:latest",
        "quay.io/tinkerbell-actions/image2disk:v1.0.0",
        "ghcr.io/tinkerbell/actions/image2disk",
        "tinkerbell/image2disk:v1",
        "docker.io/tinkerbell/image2disk@sha256:" + "a" * 64,
        "image2disk",
        "image2disk:latest",
    ],
)
def test_tinkerbell_names_find_image2disk(image: str) -> None:
    assert lookup(image) is BUILTINS["image2disk"]


@pytest.mark.parametrize(
    "image",
    [
        "example/image2disk:v1",
        "quay.io/tinkerbell/actions/nested/image2disk",
        "ghcr.io/jacobweinstock/waitdaemon:0.2.0",
        "quay.io/tinkerbell/actions/oci2disk:latest",
        "localhost:5000/image2disk",
    ],
)
def test_other_images_have_no_builtin(image: str) -> None:
    assert lookup(image) is None


def test_terminal_builtins() -> None:
    assert {name for name, b in BUILTINS.items() if b.terminal} == {"reboot", "poweroff", "kexec"}


def test_repository_keeps_registry_port() -> None:
    assert repository("localhost:5000/a/b:tag") == "localhost:5000/a/b"
    assert repository("localhost:5000/a/b") == "localhost:5000/a/b"


def test_no_builtin_message_says_what_is_missing() -> None:
    message = no_builtin_message("example/x:1")
    assert "docker, podman or nerdctl" in message and "image2disk" in message
