"""The service itself: health, readiness and the model in service."""

from __future__ import annotations

from pydantic import BaseModel, Field

from touchstone.model_card import ModelCard


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    ready: bool  # the model is warm and the database answers
    database: bool
    model: bool
    model_loading: bool
    model_error: str | None


class ModelStatus(BaseModel):
    ready: bool
    loading: bool
    error: str | None
    source: str | None
    card: ModelCard | None


class ModelSwitch(BaseModel):
    source: str = Field(..., min_length=1, description="a model directory or models:/NAME@ALIAS")


class ModelSwitched(BaseModel):
    source: str
    name: str
    version: str | None
