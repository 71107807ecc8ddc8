"""What the metadata service's API route sends."""

from __future__ import annotations

from pydantic import BaseModel


class MetadataUrl(BaseModel):
    url: str
    """`http://HOST:PORT/instances/TOKEN/`, the machine's metadata under its secret path."""
    token: str
