"""The API's response bodies (pydantic): what OpenAPI at /docs shows."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, RootModel

from serving.appraisals.status import Status
from serving.db import Appraisal, as_utc
from serving.policy.photo_quality import PROBLEM_WORDS
from serving.review.tasks import REVIEWER_ASKED_FOR_PHOTOS


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


def _item_fields(appraisal: Appraisal) -> dict[str, object]:
    """What both views say of the item itself, as they both name it."""
    return {
        "id": appraisal.id,
        "status": Status(appraisal.status),
        "member_id": appraisal.member_id,
        "member_tier": appraisal.member_tier,
        "category": appraisal.category,
        "brand": appraisal.brand,
        "declared_value": appraisal.declared_value_cny,
        "model": ModelRef(name=appraisal.model_name, version=appraisal.model_version),
        "photo_rounds": appraisal.photo_rounds,
        "created_at": as_utc(appraisal.created_at),
        "updated_at": as_utc(appraisal.updated_at),
        "sla_due_at": as_utc(appraisal.sla_due_at),
    }


class AppraisalOut(BaseModel):
    id: str
    status: Status
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
            **_item_fields(appraisal),
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
        )


# -- what members see ---------------------------------------------------------------------------
# The outcome and each photo's findings in words: never the model's scores, its thresholds or
# the routing rule, which would let a counterfeiter re-shoot until an item passes.

MEMBER_REASONS = {
    Status.AWAITING_PHOTOS: "more photos are needed",
    Status.IN_REVIEW: "an authenticator is reviewing the item",
    Status.DECIDED: "decided by the automated check",
    Status.FINALIZED: "decided by an authenticator",
}


class MemberDecision(BaseModel):
    outcome: Literal["authentic", "counterfeit", "inconclusive"] | None
    path: Literal["auto", "human"] | None
    reasons: list[str]  # in words: what to retake, or who decides


class MemberFinding(BaseModel):
    region: str
    round: int
    sha256: str
    usable: bool
    problems: list[str]  # in words: "too dark", "blurred"


class MemberAppraisalOut(BaseModel):
    """An appraisal as the members' app and member back ends see it."""

    id: str
    status: Status
    member_id: str
    member_tier: str
    category: str
    brand: str | None
    declared_value: float | None
    decision: MemberDecision
    findings: list[MemberFinding]
    model: ModelRef  # which model took part: its name and version, none of its numbers
    photo_rounds: int
    created_at: dt.datetime
    updated_at: dt.datetime
    sla_due_at: dt.datetime

    @classmethod
    def of(cls, appraisal: Appraisal) -> MemberAppraisalOut:
        status = Status(appraisal.status)
        # Only the photo checks' reasons are for members (they say what to retake); the others
        # may quote the score and the thresholds.
        if appraisal.rule == "needs_more_photos" and appraisal.reasons:
            reasons = list(appraisal.reasons)
        elif appraisal.rule == REVIEWER_ASKED_FOR_PHOTOS:
            reasons = ["an authenticator asked for more photos"]
        else:
            reasons = [MEMBER_REASONS[status]]
        return cls(
            **_item_fields(appraisal),
            decision=MemberDecision(
                outcome=appraisal.outcome,  # type: ignore[arg-type]
                path=appraisal.path,  # type: ignore[arg-type]
                reasons=reasons,
            ),
            findings=[
                MemberFinding(
                    region=p.region,
                    round=p.round,
                    sha256=p.sha256,
                    usable=p.usable,
                    problems=[PROBLEM_WORDS.get(c, c.replace("_", " ")) for c in p.problems or []],
                )
                for p in appraisal.photos
            ],
        )


class AppraisalView(RootModel[AppraisalOut | MemberAppraisalOut]):
    """The whole appraisal for the full-view roles (`serving.auth.FULL_VIEW_ROLES`), else the
    member's view."""

    @classmethod
    def of(cls, appraisal: Appraisal, full: bool) -> AppraisalView:
        return cls(AppraisalOut.of(appraisal) if full else MemberAppraisalOut.of(appraisal))


class AppraisalPage(BaseModel):
    items: list[AppraisalView]
    limit: int
    offset: int
    next_offset: int | None


class VerdictRecorded(BaseModel):
    """What a reviewer gets back for a verdict: the task's answer, never the appraisal (its
    member, scores or final outcome would tell what the task view hides)."""

    task_id: int
    appraisal_id: str
    status: Literal["done"] = "done"
