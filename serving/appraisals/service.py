"""The appraisal service: the one place that writes appraisals, their photos and events.

An upload is taken apart in this order, so that nothing acknowledged is ever lost: photos are
decoded (a bad one is a 4xx before anything is kept), stored content-addressed with their
metadata stripped (fsynced), scored through the micro-batcher when a model is ready, routed by
the policy, and only then is the appraisal committed in one transaction. The 201 follows the
commit. Idempotency keys make a retried upload return the appraisal it created the first time.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from serving.appraisals.judgement import Judgement, judge
from serving.appraisals.uploads import AppraisalRequest, PhotoUpload, photo_rows, prepare_photos
from serving.db import Appraisal, AppraisalEvent, AuditEntry, utcnow
from serving.errors import ApiError
from serving.lifecycle import Lifecycle
from serving.metrics import ServiceMetrics
from serving.photos import PhotoStore
from serving.policy.config import PolicyConfig
from serving.policy.routing import RoutingDecision, sla_due
from serving.review.tasks import MAX_PHOTO_ROUNDS, tasks_for
from serving.runtime import ModelManager


class AppraisalService:
    def __init__(
        self,
        sessions: sessionmaker,
        store: PhotoStore,
        policy: PolicyConfig,
        models: ModelManager,
        metrics: ServiceMetrics,
        lifecycle: Lifecycle,
        max_pixels: int,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.policy = policy
        self.models = models
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.max_pixels = max_pixels

    # -- reading ---------------------------------------------------------------------------

    def get(self, appraisal_id: str) -> Appraisal:
        with self.sessions() as session:
            appraisal = session.scalar(_with_photos().where(Appraisal.id == appraisal_id))
        if appraisal is None:
            raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
        return appraisal

    def list_for_member(self, member_id: str, limit: int, offset: int) -> list[Appraisal]:
        with self.sessions() as session:
            query = (
                _with_photos()
                .where(Appraisal.member_id == member_id)
                .order_by(Appraisal.created_at.desc(), Appraisal.id)
                .limit(limit)
                .offset(offset)
            )
            return list(session.scalars(query))

    # -- writing ---------------------------------------------------------------------------

    async def create(self, request: AppraisalRequest) -> tuple[Appraisal, bool]:
        """The appraisal, and whether it was created now (False: an idempotent replay)."""
        fingerprint = request.fingerprint()
        if request.idempotency_key:
            existing = await asyncio.to_thread(self._replay, request.idempotency_key, fingerprint)
            if existing is not None:
                return existing, False
        await prepare_photos(request.photos, self.store, self.policy, self.max_pixels)
        async with self.models.use() as runtime:
            judgement = await judge(request, request.photos, runtime, self.policy, self.metrics)
        created = await asyncio.to_thread(self._insert, request, fingerprint, judgement)
        if created is None:  # a concurrent retry with the same key committed first
            existing = await asyncio.to_thread(self._replay, request.idempotency_key, fingerprint)
            assert existing is not None
            return existing, False
        self._count(judgement.decision)
        return created, True

    async def create_gold(self, request: AppraisalRequest, truth: str) -> Appraisal:
        """An item with a known truth for the review queue. It looks like any other task to
        reviewers (a member-like id, a generic reason), so their accuracy on it is honest."""
        await prepare_photos(request.photos, self.store, self.policy, self.max_pixels)
        async with self.models.use() as runtime:
            judgement = await judge(request, request.photos, runtime, self.policy, self.metrics)
        judgement.decision = RoutingDecision(
            status="in_review",
            outcome=None,
            path="human",
            rule="gold",
            reasons=["the model is not sure enough to decide alone"],
            reviews_required=1,
            sla_hours=self.policy.sla_for(request.member_tier),
        )
        created = await asyncio.to_thread(
            self._insert, request, request.fingerprint(), judgement, truth
        )
        assert created is not None
        return created

    async def add_photos(self, appraisal_id: str, photos: list[PhotoUpload]) -> Appraisal:
        appraisal = await asyncio.to_thread(self.get, appraisal_id)
        if appraisal.status != "awaiting_photos":
            raise ApiError(
                409,
                "invalid_state",
                f"appraisal {appraisal_id} is {appraisal.status}, not awaiting photos",
            )
        await prepare_photos(photos, self.store, self.policy, self.max_pixels)
        round_ = appraisal.photo_rounds + 1
        earlier = [
            PhotoUpload(p.region, b"", usable=True, log_odds=p.log_odds)
            for p in appraisal.photos
            if p.usable
        ]
        request = AppraisalRequest(
            appraisal.member_id,
            appraisal.member_tier,
            appraisal.category,
            appraisal.brand,
            appraisal.declared_value_cny,
            [*earlier, *photos],
            None,
        )
        async with self.models.use() as runtime:
            judgement = await judge(
                request,
                photos,
                runtime,
                self.policy,
                self.metrics,
                earlier=earlier,
                last_round=round_ >= MAX_PHOTO_ROUNDS,
            )
        if appraisal.rule == "reviewer_needs_more_photos" and judgement.decision.status != (
            "awaiting_photos"
        ):
            # A reviewer asked for these photos: a reviewer decides, whatever the model says.
            judgement.decision = RoutingDecision(
                status="in_review",
                outcome=None,
                path="human",
                rule="photos_for_reviewer",
                reasons=["new photos for the reviewer who asked for them"],
                reviews_required=max(1, appraisal.reviews_required),
                sla_hours=self.policy.sla_for(appraisal.member_tier),
            )
        updated = await asyncio.to_thread(self._update, appraisal_id, photos, round_, judgement)
        self._count(judgement.decision)
        return updated

    async def request_human_review(self, appraisal_id: str) -> Appraisal:
        def write() -> Appraisal:
            with self.sessions() as session, session.begin():
                appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
                if appraisal is None:
                    raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
                if appraisal.status != "decided" or appraisal.path != "auto":
                    raise ApiError(
                        409,
                        "invalid_state",
                        f"appraisal {appraisal_id} is {appraisal.status}; only an automated "
                        "decision can be sent to a person",
                    )
                appraisal.status, appraisal.path, appraisal.rule = (
                    "in_review",
                    "human",
                    ("member_requested"),
                )
                appraisal.reasons = [
                    *appraisal.reasons,
                    "the member asked for a person to review the automated result",
                ]
                appraisal.reviews_required = max(appraisal.reviews_required, 1)
                appraisal.updated_at = utcnow()
                session.add(
                    AppraisalEvent(
                        appraisal_id=appraisal.id,
                        kind="human_review_requested",
                        rule="member_requested",
                        detail={},
                    )
                )
                session.add_all(tasks_for(appraisal))
            return self.get(appraisal_id)

        return await asyncio.to_thread(write)

    def overturn(self, appraisal_id: str, outcome: str, reason: str, actor: int) -> Appraisal:
        """Correct a final verdict (appeal, dispute, QC re-review): the outcome changes, the
        change is logged, and the lifecycle compensates the member by policy."""
        with self.sessions() as session, session.begin():
            appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
            if appraisal is None:
                raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
            if appraisal.status not in ("finalized", "decided") or appraisal.outcome is None:
                raise ApiError(
                    409,
                    "invalid_state",
                    f"appraisal {appraisal_id} is {appraisal.status}; only a final verdict can "
                    "be overturned",
                )
            previous = appraisal.outcome
            if previous == outcome:
                raise ApiError(409, "invalid_state", f"the verdict is already {previous}")
            now = utcnow()
            appraisal.outcome, appraisal.status, appraisal.path = outcome, "finalized", "human"
            appraisal.finalized_at = appraisal.finalized_at or now
            appraisal.updated_at = now
            detail = {"previous": previous, "outcome": outcome, "reason": reason}
            session.add(
                AppraisalEvent(
                    appraisal_id=appraisal.id,
                    kind="overturned",
                    rule="overturn",
                    detail={**detail, "by": actor},
                )
            )
            session.add(
                AuditEntry(actor=actor, action="overturn", appraisal_id=appraisal.id, detail=detail)
            )
            session.flush()
            self.lifecycle.emit(
                session, "appraisal.overturned", appraisal, previous=previous, reason=reason
            )
        return self.get(appraisal_id)

    # -- the steps ---------------------------------------------------------------------------

    def _replay(self, key: str | None, fingerprint: str) -> Appraisal | None:
        with self.sessions() as session:
            existing = session.scalar(_with_photos().where(Appraisal.idempotency_key == key))
        if existing is None:
            return None
        if existing.request_sha256 != fingerprint:
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used for a different request; use a new key",
            )
        return existing

    def _insert(
        self,
        request: AppraisalRequest,
        fingerprint: str,
        judgement: Judgement,
        gold_outcome: str | None = None,
    ) -> Appraisal | None:
        now = utcnow()
        appraisal = Appraisal(
            id=str(uuid.uuid4()),
            member_id=request.member_id,
            member_tier=request.member_tier,
            category=request.category,
            brand=request.brand,
            declared_value_cny=request.declared_value,
            photo_rounds=1,
            idempotency_key=request.idempotency_key,
            request_sha256=fingerprint,
            created_at=now,
            updated_at=now,
            sla_due_at=sla_due(request.member_tier, now, self.policy),
            is_gold=gold_outcome is not None,
            gold_outcome=gold_outcome,
            **judgement.columns(),
        )
        appraisal.photos = photo_rows(request.photos, 1, judgement.runtime)
        appraisal.events = [_event("created", judgement.decision)]
        try:
            with self.sessions() as session, session.begin():
                session.add(appraisal)
                if appraisal.status == "in_review":
                    session.add_all(tasks_for(appraisal))
                session.flush()
                self.lifecycle.emit(session, "appraisal.created", appraisal)
                self._announce_decision(session, appraisal)
        except IntegrityError:
            if request.idempotency_key:
                return None
            raise
        return self.get(appraisal.id)

    def _update(
        self,
        appraisal_id: str,
        photos: list[PhotoUpload],
        round_: int,
        judgement: Judgement,
    ) -> Appraisal:
        with self.sessions() as session, session.begin():
            appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
            if appraisal is None or appraisal.status != "awaiting_photos":
                raise ApiError(409, "invalid_state", "the appraisal changed meanwhile; reload it")
            for name, value in judgement.columns().items():
                if name in ("model_name", "model_version") and value is None:
                    continue
                setattr(appraisal, name, value)
            appraisal.photo_rounds = round_
            appraisal.updated_at = utcnow()
            for row in photo_rows(photos, round_, judgement.runtime):
                row.appraisal_id = appraisal.id
                session.add(row)
            event = _event("photos_added", judgement.decision)
            event.appraisal_id = appraisal.id
            session.add(event)
            if appraisal.status == "in_review":
                session.add_all(tasks_for(appraisal))
            session.flush()
            self._announce_decision(session, appraisal)
        return self.get(appraisal_id)

    def _announce_decision(self, session: Session, appraisal: Appraisal) -> None:
        """A decision the model took alone is also the final verdict, unless a person later
        overturns it."""
        if appraisal.status == "decided":
            self.lifecycle.emit(session, "appraisal.decided", appraisal)
            self.lifecycle.emit(session, "appraisal.finalized", appraisal)

    def _count(self, decision: RoutingDecision) -> None:
        self.metrics.decisions.labels(
            decision.path or "none", decision.outcome or "none", decision.rule
        ).inc()


def _with_photos():  # -> Select[tuple[Appraisal]]
    return select(Appraisal).options(selectinload(Appraisal.photos))


def _event(kind: str, decision: RoutingDecision) -> AppraisalEvent:
    return AppraisalEvent(
        kind=kind,
        rule=decision.rule,
        detail={"status": decision.status, "outcome": decision.outcome, "path": decision.path},
    )
