"""The review queue: what a reviewer sends (a verdict) and sees (a task, the queue), and the
quality numbers seniors and admins watch."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class RegionFinding(BaseModel):
    region: str = Field(..., max_length=32)
    note: str = Field("", max_length=2000)


class VerdictBody(BaseModel):
    outcome: Literal["authentic", "counterfeit", "inconclusive", "needs_more_photos"]
    notes: str = Field("", max_length=5000)
    findings: list[RegionFinding] = Field(default_factory=list, max_length=50)


class TaskInfo(BaseModel):
    id: int
    stage: str  # review, double or escalation
    blind: bool
    status: str
    due_at: dt.datetime | None
    overdue: bool
    lease_expires_at: dt.datetime | None


class TaskItem(BaseModel):
    """The item as a reviewer sees it: the member masked, the score hidden on blind tasks."""

    id: str
    member: str
    member_tier: str
    category: str
    brand: str | None
    declared_value: float | None
    photo_rounds: int
    routed_because: list[str]
    p_authentic: float | None


class TaskPhoto(BaseModel):
    sha256: str
    region: str
    round: int
    usable: bool
    problems: list[str]
    score: float | None


class OtherVerdict(BaseModel):
    outcome: str
    notes: str | None
    findings: list[dict[str, Any]] | None


class TaskView(BaseModel):
    task: TaskInfo
    appraisal: TaskItem
    photos: list[TaskPhoto]
    other_verdicts: list[OtherVerdict]  # both earlier verdicts, on an escalation only


class QueueCounts(BaseModel):
    """Open tasks by SLA state (due soon: within 2 hours), claimed ones and escalations."""

    open: int
    on_time: int
    due_soon: int
    overdue: int
    claimed: int
    escalations: int


class Lease(BaseModel):
    lease_expires_at: dt.datetime


class WebLease(Lease):
    seconds_left: float


class ReviewQuality(BaseModel):
    """Queue depth and age, throughput per reviewer, accuracy on gold items, agreement of
    double reviews (Cohen's kappa), overturns of the model, error rate on the audit sample.
    Reviewers are named by their key id."""

    queue_open: int
    queue_oldest_hours: float
    verdicts_24h_by_reviewer: dict[str, int]
    gold_verdicts: int
    gold_accuracy: float | None
    gold_accuracy_by_reviewer: dict[str, float | None]
    double_review_pairs: int
    double_review_kappa: float | None
    model_decisions_reviewed: int
    human_overturn_rate: float | None
    audit_sample_reviewed: int
    audit_error_rate: float | None
    audit_false_authentic_rate: float | None
