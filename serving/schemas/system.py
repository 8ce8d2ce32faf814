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


class ModelSummary(BaseModel):
    """The model as the members' side sees it: what to photograph, nothing to aim a photo at
    (no thresholds, calibration or metrics)."""

    name: str
    version: str | None
    regions: tuple[str, ...]
    categories: tuple[str, ...]

    @classmethod
    def of(cls, card: ModelCard) -> ModelSummary:
        return cls(
            name=card.name, version=card.version, regions=card.regions, categories=card.categories
        )


class ModelStatus(BaseModel):
    ready: bool
    loading: bool
    error: str | None  # staff only
    source: str | None  # staff only
    card: ModelCard | ModelSummary | None  # the whole card for staff (serving.auth)


class ModelSwitch(BaseModel):
    source: str = Field(..., min_length=1, description="a model directory or models:/NAME@ALIAS")


class ModelSwitched(BaseModel):
    source: str
    name: str
    version: str | None
