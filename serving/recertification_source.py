"""The audit stream as `touchstone recertify` reads it: finalised appraisals that the routing
policy sent to people as the audit sample, with their final outcome and scored photos.

An appraisal belongs to the audit sample when it was routed by rule `audit_sample` (an event
records the rule of each routing, so an audited item whose reviewer then asked for more photos,
which changes the appraisal's rule, still counts: leaving those out would bias the sample toward
items with good photos). Only the scores of the same ONNX file are comparable with the card's
calib items, so an appraisal whose model_version names another file is left out.

Left out, and counted: `gold` (admins' items with a known truth, not traffic, though routed like
it), `other_model` (scored by another ONNX file) and `erased_member` (the member's photo scores
were erased). Reads only; the appraisals' status is the service's to write.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from serving.appraisals.status import Status
from serving.db import Appraisal, AppraisalEvent, ErasedMember, Photo
from serving.review.tasks import AUDIT_SAMPLE
from touchstone.evaluation.recertification import AuditedItem

AUDIT_RULE = AUDIT_SAMPLE
DB_REASONS = ("gold", "other_model", "erased_member")
_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


@dataclass
class AuditStream:
    items: list[AuditedItem] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)


def read_audit_stream(
    sessions: sessionmaker,
    same_model: Callable[[str | None], bool],
    since: dt.datetime | None = None,
) -> AuditStream:
    """The finalised audit appraisals (finalised at or after `since`) whose model_version passes
    `same_model`, each with its category, outcome and (region, log-odds) of its scored photos."""
    stream = AuditStream()
    audited = select(AppraisalEvent.appraisal_id).where(AppraisalEvent.rule == AUDIT_RULE)
    query = select(
        Appraisal.id,
        Appraisal.member_id,
        Appraisal.category,
        Appraisal.outcome,
        Appraisal.model_version,
        Appraisal.is_gold,
    ).where(Appraisal.status == Status.FINALIZED.value, Appraisal.id.in_(audited))
    if since is not None:
        query = query.where(Appraisal.finalized_at >= since)
    with sessions() as session:
        rows = session.execute(query.order_by(Appraisal.finalized_at, Appraisal.id)).all()
        erased = set(session.scalars(select(ErasedMember.member_id)))
        kept = []
        for row in rows:
            if row.is_gold:
                stream.left_out["gold"] += 1
            elif not same_model(row.model_version):
                stream.left_out["other_model"] += 1
            elif row.member_id in erased:
                stream.left_out["erased_member"] += 1
            else:
                kept.append(row)
        photos: dict[str, list[tuple[str, float]]] = {}
        for chunk in _chunks([row.id for row in kept]):
            for appraisal_id, region, log_odds in session.execute(
                select(Photo.appraisal_id, Photo.region, Photo.log_odds)
                .where(
                    Photo.appraisal_id.in_(chunk),
                    Photo.usable.is_(True),
                    Photo.log_odds.is_not(None),
                )
                .order_by(Photo.id)
            ):
                photos.setdefault(appraisal_id, []).append((region, float(log_odds)))
    stream.items = [
        AuditedItem(row.category, row.outcome or "", tuple(photos.get(row.id, ()))) for row in kept
    ]
    return stream


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
