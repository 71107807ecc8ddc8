"""The routers served under `/metal/v1`, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

METAL_ROUTERS: tuple[APIRouter, ...] = ()
