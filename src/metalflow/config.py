"""One Settings object for every part of metalflow: environment (METALFLOW_*), then flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("metalflow-data")
DEFAULT_HTTP = "0.0.0.0:7080"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METALFLOW_", extra="forbid")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="where SQLite, keys and tokens live"
    )
    database: str | None = Field(
        default=None, description="SQLAlchemy URL; default is a SQLite file in the data dir"
    )
    http: str = Field(default=DEFAULT_HTTP, description="ADDR:PORT of the API and boot HTTP server")
    db_pool_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="PostgreSQL connections per process; more than the cores in use only adds"
        " contention",
    )
    event_retention_hours: float = Field(
        default=30 * 24,
        ge=0,
        description="events older than this are deleted (0 keeps them forever)",
    )
    controller_interval: float = Field(
        default=1.0, gt=0, description="seconds between timeout and retry sweeps"
    )

    @field_validator("http")
    @classmethod
    def _http_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--http must be ADDR:PORT, e.g. 0.0.0.0:7080 (got {value!r})")
        return value

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0].strip("[]")

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def database_url(self) -> str:
        if self.database:
            url = self.database
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{(self.data_dir / 'metalflow.db').resolve()}"
