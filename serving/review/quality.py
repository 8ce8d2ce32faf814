"""The review queue's quality numbers: what an admin watches on /review/admin and in
/metrics (queue age, throughput, gold accuracy, agreement, overturns, audit error rate)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.appraisals.status import Status
from serving.db import Appraisal, ReviewTask, Verdict, as_utc
from serving.review.tasks import AUDIT_SAMPLE, FINAL_OUTCOMES, claimable
from serving.schemas.review import ReviewQuality


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Agreement between two raters beyond chance; None without pairs or variety."""
    if not pairs:
        return None
    labels = sorted({label for pair in pairs for label in pair})
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    expected = sum(
        (sum(a == k for a, _ in pairs) / n) * (sum(b == k for _, b in pairs) / n) for k in labels
    )
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def quality_numbers(session: Session, now: dt.datetime) -> ReviewQuality:
    """What an admin watches: the queue, throughput, reviewers against gold items, agreement
    of double reviews, how often people overturn the model, and the model's error rate on the
    audit sample (the live estimate of its false-authentic rate)."""
    waiting = claimable(now)
    oldest = session.scalar(select(func.min(ReviewTask.created_at)).where(waiting))
    oldest_hours = (now - as_utc(oldest)).total_seconds() / 3600 if oldest else 0.0
    per_reviewer = dict(
        session.execute(
            select(Verdict.reviewer, func.count(Verdict.id))
            .where(Verdict.created_at >= now - dt.timedelta(hours=24))
            .group_by(Verdict.reviewer)
        ).all()
    )
    gold = session.execute(
        select(Verdict.reviewer, Verdict.outcome, Appraisal.gold_outcome)
        .join(Appraisal, Appraisal.id == Verdict.appraisal_id)
        .where(Appraisal.is_gold.is_(True), Verdict.outcome.in_(FINAL_OUTCOMES))
    ).all()
    gold_by_reviewer: dict[int, list[bool]] = {}
    for reviewer, outcome, truth in gold:
        gold_by_reviewer.setdefault(reviewer, []).append(outcome == truth)
    doubles: dict[str, list[str]] = {}
    for appraisal_id, outcome in session.execute(
        select(ReviewTask.appraisal_id, Verdict.outcome)
        .join(Verdict, Verdict.task_id == ReviewTask.id)
        .where(ReviewTask.stage == "double")
        .order_by(ReviewTask.id)
    ).all():
        doubles.setdefault(appraisal_id, []).append(outcome)
    pairs = [(o[0], o[1]) for o in doubles.values() if len(o) >= 2]
    finished = session.execute(
        select(Appraisal.model_outcome, Appraisal.outcome, Appraisal.rule).where(
            Appraisal.status == Status.FINALIZED,
            Appraisal.is_gold.is_(False),
            Appraisal.model_outcome.in_(("authentic", "counterfeit")),
            Appraisal.outcome.in_(("authentic", "counterfeit")),
        )
    ).all()
    audit = [(m, o) for m, o, rule in finished if rule == AUDIT_SAMPLE]
    audit_authentic = [o for m, o in audit if m == "authentic"]
    return ReviewQuality(
        queue_open=int(session.scalar(select(func.count(ReviewTask.id)).where(waiting)) or 0),
        queue_oldest_hours=round(oldest_hours, 2),
        verdicts_24h_by_reviewer={str(k): int(v) for k, v in per_reviewer.items()},
        gold_verdicts=len(gold),
        gold_accuracy=_share([ok for oks in gold_by_reviewer.values() for ok in oks]),
        gold_accuracy_by_reviewer={str(k): _share(v) for k, v in gold_by_reviewer.items()},
        double_review_pairs=len(pairs),
        double_review_kappa=cohen_kappa(pairs),
        model_decisions_reviewed=len(finished),
        human_overturn_rate=_share([m != o for m, o, _ in finished]),
        audit_sample_reviewed=len(audit),
        audit_error_rate=_share([m != o for m, o in audit]),
        audit_false_authentic_rate=_share([o == "counterfeit" for o in audit_authentic]),
    )


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None
