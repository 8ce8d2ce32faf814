"""Review tasks: the outcomes a reviewer may give, the tasks an appraisal routed to people
needs, and when a task can be claimed (open, or its lease ran out)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_

from serving.db import Appraisal, ReviewTask

OUTCOMES = ("authentic", "counterfeit", "inconclusive", "needs_more_photos")
FINAL_OUTCOMES = ("authentic", "counterfeit", "inconclusive")
# Rounds of "send better photos" (by the policy or a reviewer) before people settle the item.
MAX_PHOTO_ROUNDS = 3
# The rule of an appraisal a reviewer sent back for photos: the photos go back to a reviewer.
REVIEWER_ASKED_FOR_PHOTOS = "reviewer_needs_more_photos"
# The rule of the random audit sample (routing); its finalised verdicts recertify the model.
AUDIT_SAMPLE = "audit_sample"


def tasks_for(appraisal: Appraisal) -> list[ReviewTask]:
    """The review tasks an appraisal routed to people needs: one, or two blind ones; an audit
    sample's one task is blind as well."""
    double = appraisal.reviews_required >= 2
    return [
        ReviewTask(
            appraisal_id=appraisal.id,
            stage="double" if double else "review",
            required_role="reviewer",
            # An audit's verdict is the label that recertifies the model: a reviewer who saw
            # the model's score would lean towards it, so audits are blind too.
            blind=double or appraisal.rule == AUDIT_SAMPLE,
            status="open",
            due_at=appraisal.sla_due_at,
        )
        for _ in range(2 if double else 1)
    ]


@dataclass(frozen=True)
class VerdictIn:
    outcome: str
    notes: str
    findings: list[dict[str, Any]]


def expired_lease(now: dt.datetime) -> Any:
    return and_(ReviewTask.status == "claimed", ReviewTask.lease_expires_at < now)


def claimable(now: dt.datetime) -> Any:
    """Open, or claimed under a lease that ran out."""
    return or_(ReviewTask.status == "open", expired_lease(now))
