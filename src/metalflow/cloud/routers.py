"""The routers served under `/metal/v1`, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

from metalflow.cloud import identity_router, sshkeys_router

METAL_ROUTERS: tuple[APIRouter, ...] = (
    identity_router.router,
    sshkeys_router.router,
)
