"""Who the caller is: the cheapest authenticated request, for clients checking their key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from metalflow.services import PrincipalDep

router = APIRouter(tags=["tenancy"])


class Whoami(BaseModel):
    name: str
    role: str
    machine: str | None


@router.get("/whoami", response_model=Whoami)
def whoami(principal: PrincipalDep) -> Whoami:
    return Whoami(name=principal.name, role=principal.role.value, machine=principal.machine_id)
