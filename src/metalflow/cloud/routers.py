"""The routers served under `/metal/v1`, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

from metalflow.cloud import (
    devices_router,
    hardware_router,
    identity_router,
    ips_router,
    sshkeys_router,
)

METAL_ROUTERS: tuple[APIRouter, ...] = (
    devices_router.router,
    hardware_router.router,
    identity_router.router,
    ips_router.router,
    sshkeys_router.router,
)
