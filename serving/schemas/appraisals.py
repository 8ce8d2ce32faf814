"""The API's response bodies (pydantic): what OpenAPI at /docs shows."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

from serving.db import Appraisal, as_utc


class Decision(BaseModel):
    outcome: Literal["authentic", "counterfeit", "inconclusive"] | None
    path: Literal["auto", "human"] | None
    p_authentic: float | None
    rule: str
    reasons: list[str]
    reviews_required: int


class Finding(BaseModel):
    region: str
    round: int
    sha256: str
    usable: bool
    problems: list[str]
    log_odds: float | None
    score: float | None  # calibrated p(authentic) of this photo alone


class ModelRef(BaseModel):
    name: str | None
    version: str | None


class AppraisalOut(BaseModel):
    id: str
    status: Literal["decided", "in_review", "awaiting_photos", "finalized"]
    member_id: str
    member_tier: str
    category: str
    brand: str | None
    declared_value: float | None
    decision: Decision
    findings: list[Finding]
    model: ModelRef
    photo_rounds: int
    created_at: dt.datetime
    updated_at: dt.datetime
    sla_due_at: dt.datetime

    @classmethod
    def of(cls, appraisal: Appraisal) -> AppraisalOut:
        return cls(
            id=appraisal.id,
            status=appraisal.status,  # type: ignore[arg-type]
            member_id=appraisal.member_id,
            member_tier=appraisal.member_tier,
            category=appraisal.category,
            brand=appraisal.brand,
            declared_value=appraisal.declared_value_cny,
            decision=Decision(
                outcome=appraisal.outcome,  # type: ignore[arg-type]
                path=appraisal.path,  # type: ignore[arg-type]
                p_authentic=appraisal.p_authentic,
                rule=appraisal.rule,
                reasons=list(appraisal.reasons or []),
                reviews_required=appraisal.reviews_required,
            ),
            findings=[
                Finding(
                    region=p.region,
                    round=p.round,
                    sha256=p.sha256,
                    usable=p.usable,
                    problems=list(p.problems or []),
                    log_odds=p.log_odds,
                    score=p.p_authentic,
                )
                for p in appraisal.photos
            ],
            model=ModelRef(name=appraisal.model_name, version=appraisal.model_version),
            photo_rounds=appraisal.photo_rounds,
            created_at=as_utc(appraisal.created_at),
            updated_at=as_utc(appraisal.updated_at),
            sla_due_at=as_utc(appraisal.sla_due_at),
        )


class AppraisalPage(BaseModel):
    items: list[AppraisalOut]
    limit: int
    offset: int
    next_offset: int | None
