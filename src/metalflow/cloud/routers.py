"""The routers served under `/metal/v1`, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

from metalflow.cloud import ips_router

METAL_ROUTERS: tuple[APIRouter, ...] = (ips_router.router,)
"""The metal cloud: the provider's catalogue (metros, plans matched from discovered hardware,
operating systems), capacity, and the tenants' devices, SSH keys and BGP, served as Equinix
Metal's `/metal/v1`."""
