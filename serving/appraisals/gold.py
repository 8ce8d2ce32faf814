"""Gold items: an admin's item with a known truth, put in the review queue to measure reviewers.
A reviewer must not be able to tell one from a member's item by anything but its photos (not by
the task page, its fields or its timing), or their accuracy on gold says nothing.

- The member's fields are those of real traffic: the tier, the declared value and the form of
  the member id are copied from a real appraisal drawn at random among the recent ones in review
  (of the gold item's category when there are such), else among the recent real ones whatever
  their status, else the defaults (the policy's first tier, no declared value). The category and
  brand are the admin's, since they describe the photos; one left out is the drawn item's.
- The member id has the drawn id's form (the same letters and punctuation, fresh digits), and
  belongs to nobody: no appraisal or member has it.
- The routing policy routes the item like any other with those fields and its photos' scores,
  so its reasons, rule, number of reviews (two blind ones for a high value) and due time are
  what a real item gets. Where the policy would let the model decide alone, the item goes to a
  reviewer as the audit sample takes such items (that rule's reason), or, if the policy samples
  none, as a member's request for a person does.
- Photos that fail the photo checks are refused: a real item with such photos waits for the
  member, and never reaches a reviewer in its first round.
"""

from __future__ import annotations

import random
import secrets
import string
from dataclasses import replace

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from serving.appraisals.judgement import Judgement
from serving.appraisals.status import Status
from serving.appraisals.uploads import AppraisalRequest, PhotoUpload
from serving.db import Appraisal, Member
from serving.errors import ApiError
from serving.policy.config import PolicyConfig
from serving.policy.routing import RoutingDecision, route

RECENT = 200  # the real appraisals a gold item's fields are drawn from, newest first
# As `AppraisalService.request_human_review` words it: a real item's reason.
MEMBER_ASKED = "the member asked for a person to review the automated result"
_RANDOM = random.SystemRandom()  # reviewers must not be able to predict the draw


def gold_request(
    sessions: sessionmaker,
    policy: PolicyConfig,
    photos: list[PhotoUpload],
    category: str | None,
    brand: str | None,
) -> AppraisalRequest:
    """The gold item as if a member had sent it, its member's fields drawn from real traffic."""
    with sessions() as session:
        drawn = _draw(session, category)
        tier = policy.tiers[0]
        if drawn is not None and drawn.member_tier in policy.tiers:
            tier = drawn.member_tier
        like = drawn.member_id if drawn is not None else f"m-{secrets.token_hex(4)}"
        return AppraisalRequest(
            member_id=_unused_id_like(session, like),
            member_tier=tier,
            category=category or (drawn.category if drawn is not None else "bag"),
            brand=brand or (drawn.brand if drawn is not None else None),
            declared_value=drawn.declared_value_cny if drawn is not None else None,
            photos=photos,
            idempotency_key=None,
        )


def review_decision(
    judgement: Judgement, request: AppraisalRequest, policy: PolicyConfig
) -> RoutingDecision:
    """The routing policy's decision for the gold item, sent to people as a real item would be
    (see the module's doc)."""
    decision = judgement.decision
    if decision.status == Status.AWAITING_PHOTOS:
        raise ApiError(
            422,
            "unusable_photos",
            "a gold item's photos must pass the photo checks: " + "; ".join(decision.reasons),
        )
    if (
        decision.status == Status.IN_REVIEW
        or judgement.runtime is None
        or judgement.routing is None
    ):
        return decision
    # The same item, drawn for the audit sample.
    audit = route(replace(judgement.routing, audit_draw=0.0), policy)
    if audit.status == Status.IN_REVIEW:
        return audit
    return replace(
        decision,
        status=Status.IN_REVIEW,
        outcome=None,
        path="human",
        rule="member_requested",
        reasons=[*decision.reasons, MEMBER_ASKED],
        reviews_required=1,
    )


def _draw(session: Session, category: str | None):  # -> Row | None
    """A recent real appraisal's member fields, at random; the closest kind first."""
    real = Appraisal.is_gold.is_(False)
    in_review = Appraisal.status == Status.IN_REVIEW.value
    same = Appraisal.category == category
    kinds = [(real, in_review, same), (real, in_review), (real, same), (real,)]
    for where in kinds if category else kinds[1::2]:
        rows = session.execute(
            select(
                Appraisal.member_id,
                Appraisal.member_tier,
                Appraisal.category,
                Appraisal.brand,
                Appraisal.declared_value_cny,
            )
            .where(*where)
            .order_by(Appraisal.created_at.desc())
            .limit(RECENT)
        ).all()
        if rows:
            return _RANDOM.choice(rows)
    return None


def _unused_id_like(session: Session, member_id: str) -> str:
    """An id of `member_id`'s form that no appraisal or member has: fresh digits, and fresh
    letters too when the digits alone do not give one."""
    for attempt in range(40):
        candidate = _like(member_id, letters=attempt >= 20)
        taken = session.scalar(
            select(
                or_(
                    exists().where(Appraisal.member_id == candidate),
                    exists().where(Member.id == candidate),
                )
            )
        )
        if candidate != member_id and not taken:
            return candidate
    return f"m-{secrets.token_hex(6)}"


def _like(member_id: str, letters: bool) -> str:
    def fresh(c: str) -> str:
        if c.isascii() and c.isdigit():
            return _RANDOM.choice(string.digits)
        if letters and c.isascii() and c.isalpha():
            return _RANDOM.choice(string.ascii_lowercase if c.islower() else string.ascii_uppercase)
        return c

    return "".join(fresh(c) for c in member_id)
