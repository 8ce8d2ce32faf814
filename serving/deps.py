"""The service's typed edge: what a route may ask for.

Everything the service holds is built once at start (`serving.app`) into one `Services`; the
dependencies below hand out its parts by type and check the caller's role, so a route's
signature states all it needs. This is the only module that reads the app's state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.orm import sessionmaker

from serving.appraisals.service import AppraisalService
from serving.auth import FULL_VIEW_ROLES, MEMBER_ROLES, ROLES, Caller, authenticate
from serving.benefits.service import BenefitsService
from serving.errors import ApiError
from serving.lifecycle import Lifecycle
from serving.member_tokens import HEADER as MEMBER_TOKEN_HEADER
from serving.metrics import ServiceMetrics
from serving.photos import PhotoStore
from serving.review.service import ReviewService
from serving.runtime import ModelManager
from serving.settings import Settings
from serving.web.heatmap import HeatmapCache
from touchstone.vocabulary import DEFAULT_REGIONS


@dataclass(frozen=True)
class Services:
    """What the service holds while it runs, each part built once from the `Settings`."""

    settings: Settings
    sessions: sessionmaker
    metrics: ServiceMetrics
    models: ModelManager
    store: PhotoStore
    lifecycle: Lifecycle
    appraisals: AppraisalService
    reviews: ReviewService
    benefits: BenefitsService
    signer: URLSafeTimedSerializer  # the reviewers' session cookies
    heatmaps: HeatmapCache

    def regions(self) -> tuple[str, ...]:
        """The regions photos may be named by: the model's, else the default vocabulary."""
        runtime = self.models.current
        return runtime.card.regions if runtime else DEFAULT_REGIONS


def services_of(request: Request) -> Services:
    """The running service's parts (also for code outside a route's dependencies)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services_of)]


def _settings(services: ServicesDep) -> Settings:
    return services.settings


def _sessions(services: ServicesDep) -> sessionmaker:
    return services.sessions


def _metrics(services: ServicesDep) -> ServiceMetrics:
    return services.metrics


def _models(services: ServicesDep) -> ModelManager:
    return services.models


def _store(services: ServicesDep) -> PhotoStore:
    return services.store


def _appraisals(services: ServicesDep) -> AppraisalService:
    return services.appraisals


def _reviews(services: ServicesDep) -> ReviewService:
    return services.reviews


def _benefits(services: ServicesDep) -> BenefitsService:
    return services.benefits


def _regions(services: ServicesDep) -> tuple[str, ...]:
    return services.regions()


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionsDep = Annotated[sessionmaker, Depends(_sessions)]
MetricsDep = Annotated[ServiceMetrics, Depends(_metrics)]
ModelsDep = Annotated[ModelManager, Depends(_models)]
StoreDep = Annotated[PhotoStore, Depends(_store)]
AppraisalsDep = Annotated[AppraisalService, Depends(_appraisals)]
ReviewsDep = Annotated[ReviewService, Depends(_reviews)]
BenefitsDep = Annotated[BenefitsService, Depends(_benefits)]
RegionsDep = Annotated[tuple[str, ...], Depends(_regions)]

# -- callers -----------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer tsk_...")


def require(*roles: str) -> Callable[..., Caller]:
    """A dependency: the caller, if their API key has one of `roles` (401 without a valid key,
    403 with another role)."""

    def dependency(
        sessions: SessionsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        header = f"Bearer {credentials.credentials}" if credentials else None
        with sessions() as session:
            caller = authenticate(session, header)
        if caller.role not in roles:
            raise ApiError(
                403, "forbidden", f"role {caller.role!r} may not do this (needs {', '.join(roles)})"
            )
        return caller

    return dependency


_member_token = APIKeyHeader(
    name=MEMBER_TOKEN_HEADER,
    scheme_name="MemberToken",
    auto_error=False,
    description="with an app key: the membership platform's token for the member (a JWT)",
)


def for_members(*roles: str) -> Callable[..., Caller]:
    """Like `require`, for a route that acts on members' appraisals or benefits: an `app`
    caller must also send a valid member token (401 without), and then acts for that member
    alone (`Caller.member_id`); the other roles name the member per call."""

    # A default, not an annotation: annotations are read as strings, without this closure.
    def dependency(
        services: ServicesDep,
        token: Annotated[str | None, Depends(_member_token)],
        caller: Caller = Depends(require(*roles)),
    ) -> Caller:
        if caller.role != "app":
            return caller
        tokens = services.settings.member_tokens
        if tokens is None:
            raise ApiError(
                401,
                "member_token_invalid",
                "this service has no member-token key configured, so app keys cannot be used",
            )
        return replace(caller, member_id=tokens.member_of(token))

    return dependency


# Acts for a member: submits, adds photos, asks for a person.
MemberActor = Annotated[Caller, Depends(for_members(*MEMBER_ROLES))]
# Reads a member's appraisals and benefits (reviewers use their task view instead).
MemberReader = Annotated[Caller, Depends(for_members(*MEMBER_ROLES, *FULL_VIEW_ROLES))]
PlatformCaller = Annotated[Caller, Depends(require("platform"))]
Reviewer = Annotated[Caller, Depends(require("reviewer", "senior"))]
ReviewStaff = Annotated[Caller, Depends(require("reviewer", "senior", "admin"))]
SeniorOrAdmin = Annotated[Caller, Depends(require("senior", "admin"))]
Admin = Annotated[Caller, Depends(require("admin"))]
AnyRole = Annotated[Caller, Depends(require(*ROLES))]
