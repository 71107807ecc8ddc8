"""What the power API sends: jobs, a machine's power state, direct BMC calls."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class PowerJobPublic(BaseModel):
    id: str
    machine: str
    operation: str
    state: str
    message: str | None
    steps: list[dict[str, Any]]
    """Each step as asked: `{"power": ACTION}` or `{"boot_device", "persistent", "efi"}`."""
    results: list[dict[str, Any]]
    """One per step run: what it was, how it ended, how long it took."""
    workflow: str | None
    requested_by: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class PowerStatus(BaseModel):
    machine: str
    driver: str | None
    state: str | None
    state_at: str | None
    error: str | None
    typical_seconds: dict[str, float]
    """Median seconds of each kind of step over the recent successful jobs."""
    jobs: list[PowerJobPublic]
    """The latest five jobs, newest first."""


class ProbeResult(BaseModel):
    """What the BMC says it can do."""

    machine: str
    driver: str
    power: bool
    boot_device: bool
    virtual_media: bool
    details: dict[str, str]


class MediaResult(BaseModel):
    machine: str
    media: str | None
    """The URL inserted; null once ejected."""
