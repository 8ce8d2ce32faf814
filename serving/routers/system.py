"""Health, readiness, metrics and the model in service."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from serving.auth import THRESHOLD_ROLES
from serving.deps import Admin, AnyRole, MetricsDep, ModelsDep, SessionsDep
from serving.errors import ApiError
from serving.policy.config import PolicyError
from serving.schemas.system import (
    Health,
    ModelStatus,
    ModelSummary,
    ModelSwitch,
    ModelSwitched,
    Readiness,
)
from touchstone.model_card import ModelCard, ModelCardError
from touchstone.registry import RegistryError

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (the container's HEALTHCHECK)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(response: Response, sessions: SessionsDep, models: ModelsDep) -> Readiness:
    """Ready: a model loaded and warmed, and the database answering (503 otherwise)."""
    database = True
    try:
        await asyncio.to_thread(_ping, sessions)
    except Exception:
        database = False
    body = Readiness(
        ready=database and models.ready,
        database=database,
        model=models.ready,
        model_loading=models.loading,
        model_error=models.error,
    )
    response.status_code = 200 if body.ready else 503
    return body


def _ping(sessions: sessionmaker) -> None:
    with sessions() as session:
        session.execute(text("SELECT 1"))


@router.get("/metrics", response_class=Response)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus exposition (scraped inside the cluster; no key needed)."""
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", response_model=ModelStatus)
async def current_model(models: ModelsDep, caller: AnyRole) -> ModelStatus:
    """The model in service and its card: the whole card (thresholds included) for the
    platform, admins and reviewers; its name, version, regions and categories for the
    members' side, which must not learn what score passes."""
    runtime = models.current
    staff = caller.role in THRESHOLD_ROLES
    card: ModelCard | ModelSummary | None = None
    if runtime is not None:
        card = runtime.card if staff else ModelSummary.of(runtime.card)
    return ModelStatus(
        ready=models.ready,
        loading=models.loading,
        error=models.error if staff else None,
        source=runtime.source if runtime and staff else None,
        card=card,
    )


@router.post("/v1/models", response_model=ModelSwitched)
async def switch_model(switch: ModelSwitch, models: ModelsDep, _: Admin) -> ModelSwitched:
    """Load, warm and switch to another model; requests in flight finish on the old one."""
    try:
        runtime = await models.load(switch.source)
    except (ModelCardError, RegistryError, FileNotFoundError) as exc:
        raise ApiError(422, "model_unusable", f"{switch.source}: {exc}") from exc
    except PolicyError as exc:  # the card is fine; the policy in force would loosen it
        raise ApiError(422, "policy_loosens_card", f"{switch.source}: {exc}") from exc
    return ModelSwitched(source=switch.source, name=runtime.card.name, version=runtime.card.version)
