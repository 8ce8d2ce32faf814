"""Routing policy: which appraisals the model decides alone, which go to reviewers, which wait.

`route` applies the rules below to one item, first match wins. The order is the policy:

1. `needs_more_photos`: too few photos, or any unusable one. Nobody, model or reviewer, can
   give a verdict on a photo that does not show the detail, and a retake is cheap; so this beats
   everything, even a VIP tier or a high value.
2. `model_unavailable`: the model is not loaded or gave no score. The upload is kept and a
   reviewer decides: never lose an upload.
3. `unknown_category`: the model was not trained on the item's category, so its score means
   nothing there, however confident it looks.
4. `missing_region`: the item's scored photos lack a region the card requires of its category
   (`thresholds.required_regions`): the thresholds were certified on items that showed it, and
   a counterfeiter leaves out the region that would give the fake away.
5. `high_value`: declared value above `high_value_cny`: two blind reviews (a fake certified as
   authentic costs the platform three times its price).
6. `vip_tier`: VIP members get the "AI + human" dual channel: a reviewer confirms every verdict.
7. `member_requested`: a member may always ask for a human (PIPL art. 24).
8. `audit_sample`: a random share of every item left, sure or not, goes to a reviewer. Drawn
   before the score is looked at, the audited items are a simple random sample of the traffic
   the certification covers, so their verdicts are unbiased labels for recertifying the card
   and the model's real error rates stay measured. The share is `audit_share`, or the larger
   `audit_share_while_unsupported` while either card threshold is None.
9. `uncertain`: the item's log-odds lies between the thresholds.
10. `auto_authentic` / `auto_counterfeit`: the model decides alone.

Rules 2 to 7 do not need to compare the score, so when one fires the reasons list every one of
them that applies (a reviewer should know that an item is both high-value and a VIP's), and a
high-value item gets two reviews whichever of them fired first.

Thresholds compare the item's log-odds, never its probability, which saturates at 1.0 above a
log-odds of about 37; reasons also give the probability, for people. Pure and torch-free. The
caller draws `audit_draw` (the service uses `random.random()`), so the same request always
routes the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from serving.appraisals.status import Status
from serving.policy.config import PolicyConfig
from serving.policy.photo_quality import PROBLEM_WORDS
from serving.review.tasks import AUDIT_SAMPLE
from touchstone.decision import HUMAN, Route, Thresholds, missing_regions, sigmoid

Outcome = Literal["authentic", "counterfeit"]
DecisionPath = Literal["auto", "human"]


@dataclass(frozen=True, kw_only=True)
class RoutingRequest:
    """One item, as routing sees it.

    `unusable_photos`: (photo, problem codes) for each photo that failed `assess_photo`; the
    photo is a name a person reads ("logo photo 2") or a number counted from 1.
    `log_odds`: the item's log-odds of authentic (the card's aggregation); None: no score.
    `model_categories`: the categories on the model card; empty means the model takes any.
    `thresholds`: the model card's; None when no model is loaded.
    `shown_regions`: the regions of the item's scored photos; `required_regions`: the card's
    regions per category an item must show to be decided alone (empty: none).
    `audit_draw`: uniform in [0, 1), drawn by the caller.
    """

    member_tier: str
    category: str | None
    declared_value_cny: float | None
    photo_count: int
    unusable_photos: Sequence[tuple[str | int, Sequence[str]]] = ()
    model_ready: bool
    log_odds: float | None
    model_categories: tuple[str, ...] = ()
    thresholds: Thresholds | None = None
    shown_regions: tuple[str, ...] = ()
    required_regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    human_review_requested: bool = False
    audit_draw: float


@dataclass(frozen=True)
class RoutingDecision:
    status: Status  # never `finalized`: only a person's verdict finalizes
    outcome: Outcome | None  # None while a reviewer decides or photos are awaited
    path: DecisionPath | None  # None while photos are awaited
    rule: str  # the rule that fired; stable, for metrics and the app
    reasons: list[str]  # sentences a person can read
    reviews_required: int  # 0: the model alone; 1: a reviewer; 2: two blind reviews
    sla_hours: int


def effective_thresholds(card: Thresholds | None, config: PolicyConfig) -> Thresholds:
    """The stricter of the card's thresholds and the policy's overrides, side by side. A side
    the card leaves unsupported (None) stays so: a policy can only narrow what the card
    certified (`check_policy` refuses a looser one before it serves; this never loosens)."""
    authentic_at = card.authentic_at if card is not None else None
    counterfeit_at = card.counterfeit_at if card is not None else None
    if authentic_at is not None and config.authentic_at is not None:
        authentic_at = max(authentic_at, config.authentic_at)
    if counterfeit_at is not None and config.counterfeit_at is not None:
        counterfeit_at = min(counterfeit_at, config.counterfeit_at)
    return Thresholds(authentic_at, counterfeit_at)  # stricter on both sides: never crossed


def route(request: RoutingRequest, config: PolicyConfig) -> RoutingDecision:
    """Route one item; the rules and their order are in the module's docstring."""
    sla = config.sla_for(request.member_tier)  # an unknown tier is a PolicyError
    _check_request(request)

    photo_reasons = _photo_reasons(request, config)
    if photo_reasons:
        return RoutingDecision(
            Status.AWAITING_PHOTOS, None, None, "needs_more_photos", photo_reasons, 0, sla
        )

    value = request.declared_value_cny
    high_value = value is not None and value > config.high_value_cny
    human_rules = _model_rules(request) + _policy_rules(request, config, high_value)
    if human_rules:
        return _to_human(human_rules, high_value, sla)

    # Drawn before the score is compared, so that sure and unsure items alike are sampled.
    share = config.audit_share_for(request.thresholds.sides if request.thresholds else 0)
    if request.audit_draw < share:
        # The model's verdict stays out of the reason, so it cannot steer the reviewer.
        reason = (
            f"picked at random for a quality check of the model ({share:.0%} of the items it "
            "may judge go to a reviewer)"
        )
        return _to_human([(AUDIT_SAMPLE, reason)], False, sla)

    assert request.log_odds is not None  # _model_rules sent a missing score to a reviewer
    z = request.log_odds
    thresholds = effective_thresholds(request.thresholds, config)
    verdict = thresholds.route(z)
    if verdict == HUMAN:
        return _to_human([("uncertain", _uncertain_reason(z, thresholds))], False, sla)
    if verdict == "authentic":
        reason = f"{_score(z)} is at or above the authentic threshold {_at(thresholds)}"
    else:
        reason = f"{_score(z)} is at or below the counterfeit threshold {_ct(thresholds)}"
    return RoutingDecision(
        Status.DECIDED,
        verdict,
        "auto",
        f"auto_{verdict}",
        [f"decided by the model: {reason}"],
        0,
        sla,
    )


def model_alone(request: RoutingRequest, config: PolicyConfig) -> Route | None:
    """What the model alone would decide, whatever the policy's other rules say (kept for the
    audit numbers): None without a score; a person where its certification does not cover the
    item's regions; else the (effective) thresholds' verdict."""
    if request.log_odds is None:
        return None
    if _missing_regions(request):
        return HUMAN
    return effective_thresholds(request.thresholds, config).route(request.log_odds)


def sla_due(tier: str, submitted_at: datetime, config: PolicyConfig) -> datetime:
    """When the final verdict is due; keeps `submitted_at`'s time zone (or lack of one)."""
    return submitted_at + timedelta(hours=config.sla_for(tier))


def _check_request(request: RoutingRequest) -> None:
    if request.photo_count < 0:
        raise ValueError(f"photo_count must be >= 0, got {request.photo_count}")
    if not 0.0 <= request.audit_draw < 1.0:
        raise ValueError(f"audit_draw must lie in [0, 1), got {request.audit_draw}")


def _photo_reasons(request: RoutingRequest, config: PolicyConfig) -> list[str]:
    reasons = []
    if request.photo_count < config.min_photos:
        sent = "was" if request.photo_count == 1 else "were"
        reasons.append(
            f"at least {config.min_photos} photos are needed, {request.photo_count} {sent} sent"
        )
    for photo, problems in request.unusable_photos:
        name = f"photo {photo}" if isinstance(photo, int) else photo
        words = [PROBLEM_WORDS.get(code, code.replace("_", " ")) for code in problems]
        reasons.append(f"{name} is {' and '.join(words) or 'unusable'}")
    return reasons


def _missing_regions(request: RoutingRequest) -> list[str]:
    return missing_regions(request.category, request.shown_regions, dict(request.required_regions))


def _model_rules(request: RoutingRequest) -> list[tuple[str, str]]:
    """Why the model's score cannot be used for this item, if it cannot: the model is down,
    or every reason the certification does not cover the item."""
    z = request.log_odds
    if not request.model_ready:
        return [("model_unavailable", "the model is unavailable, so a reviewer decides")]
    if z is None or not math.isfinite(z):
        # An infinite log-odds comes from a broken model, not a sure one.
        return [("model_unavailable", "the model gave no usable score, so a reviewer decides")]
    rules = []
    known = request.model_categories
    if known and request.category not in known:
        what = f"category {request.category!r}" if request.category else "an unnamed category"
        rules.append(
            (
                "unknown_category",
                f"the model was not trained on {what} (it knows {', '.join(known)})",
            )
        )
    missing = _missing_regions(request)
    if missing:
        category = request.category or ""
        whose = (
            f"every {category}"
            if category in request.required_regions
            else "every item of a category the model was not certified on"
        )
        rules.append(
            (
                "missing_region",
                f"the photos show no {' or '.join(missing)}, which {whose} must show for "
                "the model to decide alone",
            )
        )
    return rules


def _policy_rules(
    request: RoutingRequest, config: PolicyConfig, high_value: bool
) -> list[tuple[str, str]]:
    """Why policy sends this item to a reviewer whatever the model says."""
    rules = []
    if high_value:
        rules.append(
            (
                "high_value",
                f"the declared value {request.declared_value_cny:,.0f} CNY is above "
                f"{config.high_value_cny:,.0f} CNY, so two reviewers check it blind",
            )
        )
    if config.is_vip(request.member_tier):
        rules.append(
            (
                "vip_tier",
                f"a reviewer confirms every verdict for {request.member_tier} members",
            )
        )
    if request.human_review_requested:
        rules.append(("member_requested", "the member asked for a human review"))
    return rules


def _to_human(rules: list[tuple[str, str]], high_value: bool, sla: int) -> RoutingDecision:
    reasons = [reason for _, reason in rules]
    return RoutingDecision(
        Status.IN_REVIEW, None, "human", rules[0][0], reasons, 2 if high_value else 1, sla
    )


def _score(z: float) -> str:
    """The item's log-odds, and its probability for people."""
    return f"log-odds {z:.4g} (p_authentic {float(sigmoid(z)):.4g})"


def _uncertain_reason(z: float, thresholds: Thresholds) -> str:
    if thresholds.authentic_at is None and thresholds.counterfeit_at is None:
        return f"the model may not decide alone (no thresholds are set); {_score(z)}"
    return (
        f"the model is not sure: {_score(z)} lies between the counterfeit threshold "
        f"{_ct(thresholds)} and the authentic threshold {_at(thresholds)}"
    )


def _at(thresholds: Thresholds) -> str:
    value = thresholds.authentic_at
    return "(none: never authentic alone)" if value is None else f"{value:.4g}"


def _ct(thresholds: Thresholds) -> str:
    value = thresholds.counterfeit_at
    return "(none: never counterfeit alone)" if value is None else f"{value:.4g}"
