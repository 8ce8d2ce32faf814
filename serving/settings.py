"""Service settings: command-line options and environment, validated once at start."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from serving.db import default_database_url, make_engine, make_sessionmaker, upgrade

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "configs" / "policy.yaml"


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # a model directory or models:/NAME@ALIAS; None: humans only
    data_dir: Path = Path("data")
    database_url: str | None = None  # TOUCHSTONE_DATABASE_URL; default SQLite in data_dir
    policy: Path | None = None
    # Upload limits: the body is counted while it streams in, so an oversized upload is
    # refused before it is buffered; one photo may not exceed max_photo_bytes.
    max_request_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_photo_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_pixels: int = Field(50_000_000, gt=0)
    # Micro-batching (serving/batching.py).
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    max_queue: int = Field(256, ge=1)
    batching: bool = True
    threads: int | None = Field(None, ge=1)  # ONNX Runtime threads; default: all cores
    # The review queue: how long a claim lasts without a heartbeat, whether double reviews hide
    # the model's scores, and how often tasks past their SLA are flagged.
    review_lease_seconds: float = Field(600.0, gt=0)
    blind_scores: bool = True
    sla_sweep_seconds: float = Field(30.0, gt=0)

    @classmethod
    def from_env(cls, **values: object) -> ServiceSettings:
        url = values.pop("database_url", None) or os.environ.get("TOUCHSTONE_DATABASE_URL")
        return cls(database_url=url, **values)  # type: ignore[arg-type]

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)

    def policy_path(self) -> Path | None:
        if self.policy is not None:
            return self.policy
        return DEFAULT_POLICY if DEFAULT_POLICY.exists() else None


def open_database(data_dir: Path) -> tuple[Engine, sessionmaker]:
    """The service's database for a command-line tool: `TOUCHSTONE_DATABASE_URL`, else SQLite in
    `data_dir`, created if needed and upgraded to the newest schema, as `touchstone serve` does."""
    settings = ServiceSettings.from_env(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    return engine, make_sessionmaker(engine)
