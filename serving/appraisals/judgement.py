"""From scored photos to a decision: the model's scores through the item rule (the item's
log-odds, which routing compares with the thresholds), then the routing policy; what the model
alone would have decided is kept for the audit numbers."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from serving.appraisals.status import Status
from serving.appraisals.uploads import AppraisalRequest, PhotoUpload
from serving.batching import QueueFull
from serving.errors import ApiError
from serving.metrics import ServiceMetrics
from serving.policy.config import PolicyConfig
from serving.policy.routing import RoutingDecision, RoutingRequest, model_alone, route
from serving.review.tasks import MAX_PHOTO_ROUNDS
from serving.runtime import ModelRuntime
from touchstone.decision import sigmoid
from touchstone.imaging import to_model_input


@dataclass
class Judgement:
    """The policy's decision, the model that scored the photos (None: no model took part),
    the item's p(authentic) (stored for people; routing compares the log-odds), and the
    request routing saw (None where routing did not run)."""

    decision: RoutingDecision
    runtime: ModelRuntime | None
    p_authentic: float | None
    model_outcome: str | None = None  # what the model alone would have decided
    routing: RoutingRequest | None = None

    def columns(self) -> dict[str, object]:
        """The appraisal's columns this judgement sets; its status, outcome and path are the
        state machine's to write (`status.move`)."""
        card = self.runtime.card if self.runtime else None
        return {
            "p_authentic": self.p_authentic,
            "rule": self.decision.rule,
            "reasons": list(self.decision.reasons),
            "reviews_required": self.decision.reviews_required,
            "model_name": card.name if card else None,
            "model_version": card.version if card else None,
            "model_outcome": self.model_outcome,
        }


async def judge(
    request: AppraisalRequest,
    new_photos: list[PhotoUpload],
    runtime: ModelRuntime | None,
    policy: PolicyConfig,
    metrics: ServiceMetrics,
    earlier: list[PhotoUpload] | None = None,
    last_round: bool = False,
) -> Judgement:
    """Score the usable new photos (through the micro-batcher), combine them with the earlier
    rounds' scores into the item's log-odds, and route the item by the policy. Without a
    model, or when it fails, people decide; a full queue is a 503."""
    usable = [p for p in new_photos if p.usable]
    model_ready = runtime is not None
    if runtime is not None and usable:
        prep = runtime.model.preprocessing
        pixels = await asyncio.gather(
            *(asyncio.to_thread(to_model_input, p.image, prep) for p in usable)
        )
        try:
            scores = await runtime.log_odds(list(pixels), [p.region for p in usable])
        except QueueFull as exc:
            metrics.overloaded.inc()
            raise ApiError(
                503,
                "overloaded",
                "the model's queue is full; retry shortly",
                {"Retry-After": str(max(1, round(exc.retry_after)))},
            ) from exc
        except Exception:  # the model failed: people decide, the upload is kept
            model_ready = False
        else:
            for photo, score in zip(usable, scores, strict=True):
                photo.log_odds = float(score)
    log_odds = p_authentic = None
    scored = [p for p in [*(earlier or []), *usable] if p.log_odds is not None]
    if model_ready and runtime is not None and scored:
        aggregation = runtime.card.aggregation()
        log_odds = aggregation.item_log_odds([(p.region, p.log_odds) for p in scored])
        p_authentic = float(sigmoid(log_odds))
    # The card's thresholds and required regions: `route` applies the policy's overrides.
    card = runtime.card.thresholds if runtime is not None else None
    unusable = [(p.region, p.problems) for p in new_photos if not p.usable]
    photo_count = len(scored) if model_ready else len([*(earlier or []), *usable])
    routing = RoutingRequest(
        member_tier=request.member_tier,
        category=request.category,
        declared_value_cny=request.declared_value,
        photo_count=photo_count,
        unusable_photos=unusable,
        model_ready=model_ready,
        log_odds=log_odds,
        model_categories=runtime.card.categories if runtime is not None else (),
        thresholds=card.to_thresholds() if card is not None else None,
        shown_regions=tuple(dict.fromkeys(p.region for p in scored)),
        required_regions=dict(card.required_regions) if card is not None else {},
        audit_draw=random.random(),
    )
    model_outcome = model_alone(routing, policy)
    if last_round and (unusable or photo_count < policy.min_photos):
        # The member has tried enough times: a person decides from what there is.
        high_value = (request.declared_value or 0) > policy.high_value_cny
        decision = RoutingDecision(
            status=Status.IN_REVIEW,
            outcome=None,
            path="human",
            rule="photos_exhausted",
            reasons=[
                f"the photos are still not usable after {MAX_PHOTO_ROUNDS} rounds, so a "
                "reviewer decides from what there is"
            ],
            reviews_required=2 if high_value else 1,
            sla_hours=policy.sla_for(request.member_tier),
        )
        return Judgement(decision, runtime if model_ready else None, p_authentic, model_outcome)
    decision = route(routing, policy)
    return Judgement(
        decision, runtime if model_ready else None, p_authentic, model_outcome, routing
    )
