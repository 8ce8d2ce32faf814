"""The appraisal service: the one place that writes appraisals, their photos and events.

An upload is taken apart in this order, so that nothing acknowledged is ever lost and nothing
refused is ever kept: the memory its decoded photos take is reserved (`memory.py`), photos are
decoded (a bad one is a 4xx before anything is kept) and
checked, scored through the micro-batcher when a model is ready, and routed by the policy; only
then, the upload accepted, are they stored content-addressed with their metadata stripped
(fsynced), and the appraisal committed in one transaction (a failed commit deletes the files no
row holds). The 201 follows the commit. Idempotency keys make a retried upload return the
appraisal it created the first time. Status changes go through `status.move`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload, sessionmaker

from serving.appraisals import gold
from serving.appraisals.judgement import Judgement, judge
from serving.appraisals.memory import MemoryBudget, process_budget
from serving.appraisals.status import Status, allows, move
from serving.appraisals.uploads import (
    AppraisalRequest,
    PhotoUpload,
    decode_side,
    decoded_photos,
    discard_unreferenced,
    photo_rows,
    store_photos,
)
from serving.db import Appraisal, AuditEntry, utcnow
from serving.errors import ApiError
from serving.lifecycle import Lifecycle
from serving.metrics import ServiceMetrics
from serving.photos import PhotoStore
from serving.policy.config import PolicyConfig
from serving.policy.routing import RoutingDecision, sla_due
from serving.review.tasks import MAX_PHOTO_ROUNDS, REVIEWER_ASKED_FOR_PHOTOS
from serving.runtime import ModelManager, ModelRuntime

T = TypeVar("T")


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
        memory: MemoryBudget | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.policy = policy
        self.models = models
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.max_pixels = max_pixels
        self.memory = memory or process_budget()  # held from decoding to the commit

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
        # In a thread: hashing an item's 12 MP photos would hold the event loop for milliseconds.
        fingerprint = await asyncio.to_thread(request.fingerprint)
        if request.idempotency_key:
            existing = await asyncio.to_thread(self._replay, request.idempotency_key, fingerprint)
            if existing is not None:
                return existing, False
        try:
            # The model is held from decoding on: the photos are decoded for it (`decode_side`).
            async with self.models.use() as runtime, self._decoded(request.photos, runtime):
                judgement = await judge(request, request.photos, runtime, self.policy, self.metrics)
                created = await self._commit(
                    request.photos, partial(self._insert, request, fingerprint, judgement)
                )
        except _KeyTaken:  # a concurrent retry with the same key committed first
            existing = await asyncio.to_thread(self._replay, request.idempotency_key, fingerprint)
            if existing is None:
                raise _write_conflict() from None
            return existing, False
        self._count(judgement.decision)
        return created, True

    async def create_gold(
        self, photos: list[PhotoUpload], truth: str, category: str | None, brand: str | None
    ) -> Appraisal:
        """An item with a known truth for the review queue that reviewers cannot tell from a
        member's but by its photos (`serving.appraisals.gold`: its member's fields are drawn
        from real traffic and the policy routes it), so their accuracy on it is honest."""
        async with self.models.use() as runtime, self._decoded(photos, runtime):
            request = await asyncio.to_thread(
                gold.gold_request, self.sessions, self.policy, photos, category, brand
            )
            judgement = await judge(request, request.photos, runtime, self.policy, self.metrics)
            judgement.decision = gold.review_decision(judgement, request, self.policy)
            write = partial(self._insert, request, request.fingerprint(), judgement, truth)
            return await self._commit(request.photos, write)

    async def add_photos(self, appraisal_id: str, photos: list[PhotoUpload]) -> Appraisal:
        appraisal = await asyncio.to_thread(self.get, appraisal_id)
        if not allows(appraisal.status, "photos_added"):
            raise ApiError(
                409,
                "invalid_state",
                f"appraisal {appraisal_id} is {appraisal.status}, not awaiting photos",
            )
        async with self.models.use() as runtime, self._decoded(photos, runtime):
            return await self._add_photos(appraisal, photos, runtime)

    async def _add_photos(
        self, appraisal: Appraisal, photos: list[PhotoUpload], runtime: ModelRuntime | None
    ) -> Appraisal:
        appraisal_id = appraisal.id
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
        last_round = round_ >= MAX_PHOTO_ROUNDS
        judgement = await judge(
            request, photos, runtime, self.policy, self.metrics, earlier, last_round
        )
        if appraisal.rule == REVIEWER_ASKED_FOR_PHOTOS:
            # A reviewer asked for these photos: a reviewer decides, whatever the model says;
            # and while they are still not usable, the reviewer still waits for them.
            if judgement.decision.status == Status.AWAITING_PHOTOS:
                judgement.decision = replace(judgement.decision, rule=REVIEWER_ASKED_FOR_PHOTOS)
            else:
                judgement.decision = RoutingDecision(
                    status=Status.IN_REVIEW,
                    outcome=None,
                    path="human",
                    rule="photos_for_reviewer",
                    reasons=["new photos for the reviewer who asked for them"],
                    reviews_required=max(1, appraisal.reviews_required),
                    sla_hours=self.policy.sla_for(appraisal.member_tier),
                )
        updated = await self._commit(
            photos, partial(self._update, appraisal_id, photos, round_, judgement)
        )
        self._count(judgement.decision)
        return updated

    async def request_human_review(self, appraisal_id: str) -> Appraisal:
        def write() -> Appraisal:
            with self.sessions() as session, session.begin():
                appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
                if appraisal is None:
                    raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
                if not allows(appraisal.status, "human_review_requested"):
                    raise ApiError(
                        409,
                        "invalid_state",
                        f"appraisal {appraisal_id} is {appraisal.status}; only an automated "
                        "decision can be sent to a person",
                    )
                appraisal.rule = "member_requested"
                appraisal.reasons = [
                    *appraisal.reasons,
                    "the member asked for a person to review the automated result",
                ]
                appraisal.reviews_required = max(appraisal.reviews_required, 1)
                # The model's outcome stays until the person's verdict replaces it.
                move(
                    session,
                    self.lifecycle,
                    appraisal,
                    Status.IN_REVIEW,
                    event="human_review_requested",
                    rule="member_requested",
                    outcome=appraisal.outcome,
                    path="human",
                )
            return self.get(appraisal_id)

        return await asyncio.to_thread(write)

    def overturn(self, appraisal_id: str, outcome: str, reason: str, actor: int) -> Appraisal:
        """Correct a final verdict (appeal, dispute, QC re-review): the outcome changes, the
        change is logged, and the lifecycle compensates the member by policy."""
        with self.sessions() as session, session.begin():
            appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
            if appraisal is None:
                raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
            if appraisal.outcome is None or not allows(appraisal.status, "overturned"):
                raise ApiError(
                    409,
                    "invalid_state",
                    f"appraisal {appraisal_id} is {appraisal.status}; only a final verdict can "
                    "be overturned",
                )
            previous = appraisal.outcome
            if previous == outcome:
                raise ApiError(409, "invalid_state", f"the verdict is already {previous}")
            detail = {"previous": previous, "outcome": outcome, "reason": reason}
            session.add(
                AuditEntry(actor=actor, action="overturn", appraisal_id=appraisal.id, detail=detail)
            )
            move(
                session,
                self.lifecycle,
                appraisal,
                Status.FINALIZED,
                event="overturned",
                rule="overturn",
                outcome=outcome,
                path="human",
                detail={**detail, "by": actor},
            )
        return self.get(appraisal_id)

    # -- the steps ---------------------------------------------------------------------------

    def _decoded(
        self, photos: list[PhotoUpload], runtime: ModelRuntime | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """`decoded_photos`, down to the side `runtime`'s model reads (`decode_side`)."""
        side = decode_side(runtime, self.policy)
        return decoded_photos(photos, self.memory, self.policy, self.max_pixels, side)

    async def _commit(self, photos: list[PhotoUpload], write: Callable[[], T]) -> T:
        """Store an accepted upload's photos, then commit its rows with `write`; if that fails,
        delete the files no committed row references. (A cancelled request leaves them: its
        write may still commit in its thread; the orphan sweep takes any left behind.)"""
        try:
            await store_photos(photos, self.store, self.max_pixels)
            return await asyncio.to_thread(write)
        except Exception:
            await asyncio.to_thread(discard_unreferenced, self.sessions, self.store, photos)
            raise

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
    ) -> Appraisal:
        now = utcnow()
        decision = judgement.decision
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
        try:
            with self.sessions() as session, session.begin():
                move(
                    session,
                    self.lifecycle,
                    appraisal,
                    decision.status,
                    event="created",
                    rule=decision.rule,
                    outcome=decision.outcome,
                    path=decision.path,
                    now=now,
                )
        except IntegrityError as exc:
            key = request.idempotency_key
            if key and self._key_taken(key):
                raise _KeyTaken from exc
            raise _write_conflict() from exc
        return self.get(appraisal.id)

    def _key_taken(self, key: str) -> bool:
        with self.sessions() as session:
            taken = session.scalar(select(Appraisal.id).where(Appraisal.idempotency_key == key))
        return taken is not None

    def _update(
        self,
        appraisal_id: str,
        photos: list[PhotoUpload],
        round_: int,
        judgement: Judgement,
    ) -> Appraisal:
        decision = judgement.decision
        with self.sessions() as session, session.begin():
            appraisal = session.get(Appraisal, appraisal_id, with_for_update=True)
            # Under the lock: a round added since this one was numbered leaves the status alike.
            if (
                appraisal is None
                or not allows(appraisal.status, "photos_added")
                or appraisal.photo_rounds != round_ - 1
            ):
                raise ApiError(409, "invalid_state", "the appraisal changed meanwhile; reload it")
            for name, value in judgement.columns().items():
                if name in ("model_name", "model_version") and value is None:
                    continue
                setattr(appraisal, name, value)
            appraisal.photo_rounds = round_
            for row in photo_rows(photos, round_, judgement.runtime):
                row.appraisal_id = appraisal.id
                session.add(row)
            move(
                session,
                self.lifecycle,
                appraisal,
                decision.status,
                event="photos_added",
                rule=decision.rule,
                outcome=decision.outcome,
                path=decision.path,
            )
        return self.get(appraisal_id)

    def _count(self, decision: RoutingDecision) -> None:
        self.metrics.decisions.labels(
            decision.path or "none", decision.outcome or "none", decision.rule
        ).inc()


class _KeyTaken(Exception):
    """The insert lost to a concurrent upload with the same idempotency key."""


def _write_conflict() -> ApiError:
    # Not a client mistake and not the idempotency key's: a concurrent write broke a
    # constraint. Retrying (with the same key, if any) is safe.
    return ApiError(
        409,
        "write_conflict",
        "the appraisal could not be stored because of a concurrent change; retry the request",
    )


def _with_photos():  # -> Select[tuple[Appraisal]]
    return select(Appraisal).options(selectinload(Appraisal.photos))
