"""Health, readiness, metrics and the model in service."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from serving.auth import ROLES, Caller, require
from serving.errors import ApiError

router = APIRouter(tags=["service"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (the container's HEALTHCHECK)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready: a model loaded and warmed, and the database answering."""
    state = request.app.state
    database = True
    try:
        await asyncio.to_thread(_ping, state.sessions)
    except Exception:
        database = False
    manager = state.models
    body = {
        "ready": database and manager.ready,
        "database": database,
        "model": manager.ready,
        "model_loading": manager.loading,
        "model_error": manager.error,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


def _ping(sessions: Any) -> None:
    with sessions() as session:
        session.execute(text("SELECT 1"))


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus exposition (scraped inside the cluster; no key needed)."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/v1/models")
async def current_model(request: Request, _: Caller = Depends(require(*ROLES))) -> dict[str, Any]:
    """The model in service and its card."""
    manager = request.app.state.models
    runtime = manager.current
    return {
        "ready": manager.ready,
        "loading": manager.loading,
        "error": manager.error,
        "source": runtime.source if runtime else None,
        "card": runtime.card.model_dump(mode="json") if runtime else None,
    }


class ModelSwitch(BaseModel):
    source: str = Field(..., min_length=1, description="a model directory or models:/NAME@ALIAS")


@router.post("/v1/models")
async def switch_model(
    switch: ModelSwitch, request: Request, _: Caller = Depends(require("admin"))
) -> dict[str, Any]:
    """Load, warm and switch to another model; requests in flight finish on the old one."""
    from touchstone.model_card import ModelCardError
    from touchstone.registry import RegistryError

    try:
        runtime = await request.app.state.models.load(switch.source)
    except (ModelCardError, RegistryError, FileNotFoundError) as exc:
        raise ApiError(422, "model_unusable", f"{switch.source}: {exc}") from exc
    return {"source": switch.source, "name": runtime.card.name, "version": runtime.card.version}
