"""`/v1/review`: the human review queue, for reviewers and senior reviewers."""

from __future__ import annotations

from asyncio import to_thread

from fastapi import APIRouter, Request, Response

from serving.deps import (
    Admin,
    AppraisalsDep,
    RegionsDep,
    Reviewer,
    ReviewsDep,
    ReviewStaff,
    SeniorOrAdmin,
    SettingsDep,
    StoreDep,
)
from serving.errors import ApiError
from serving.review.tasks import VerdictIn
from serving.review.view import stored_photo
from serving.routers.forms import check_photo_counts, read_form
from serving.schemas.appraisals import AppraisalOut, VerdictRecorded
from serving.schemas.review import Lease, QueueCounts, ReviewQuality, TaskView, VerdictBody

router = APIRouter(prefix="/v1/review", tags=["review"])


@router.post(
    "/claim", response_model=TaskView, responses={204: {"description": "nothing to review"}}
)
async def claim(reviews: ReviewsDep, caller: Reviewer) -> TaskView | Response:
    """The next task by SLA deadline, under a lease (or the one the caller already holds)."""
    task_id = await to_thread(reviews.claim, caller)
    if task_id is None:
        return Response(status_code=204)
    return await to_thread(reviews.view, caller, task_id)


@router.get("/queue", response_model=QueueCounts)
async def queue(reviews: ReviewsDep, _: ReviewStaff) -> QueueCounts:
    """Open tasks by SLA state."""
    return await to_thread(reviews.queue)


@router.get("/tasks/{task_id}", response_model=TaskView)
async def view_task(task_id: int, reviews: ReviewsDep, caller: ReviewStaff) -> TaskView:
    return await to_thread(reviews.view, caller, task_id)


@router.get(
    "/tasks/{task_id}/photos/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
async def task_photo(
    task_id: int, sha256: str, reviews: ReviewsDep, store: StoreDep, caller: ReviewStaff
) -> Response:
    """A photo of the task's item (EXIF-free); every view is in the audit log."""
    await to_thread(reviews.photo_allowed, caller, task_id, sha256)
    data, media = await to_thread(stored_photo, store, sha256)
    return Response(data, media_type=media, headers={"Cache-Control": "private, no-store"})


@router.post("/tasks/{task_id}/heartbeat", response_model=Lease)
async def heartbeat(task_id: int, reviews: ReviewsDep, caller: Reviewer) -> Lease:
    """Keep the lease while still working."""
    return Lease(lease_expires_at=await to_thread(reviews.heartbeat, caller, task_id))


@router.post("/tasks/{task_id}/release", status_code=204, response_class=Response)
async def release(task_id: int, reviews: ReviewsDep, caller: Reviewer) -> Response:
    """Give the task back to the queue."""
    await to_thread(reviews.release, caller, task_id)
    return Response(status_code=204)


@router.post("/tasks/{task_id}/verdict", response_model=VerdictRecorded)
async def verdict(
    task_id: int, body: VerdictBody, reviews: ReviewsDep, caller: Reviewer
) -> VerdictRecorded:
    """Record the verdict; the appraisal is finalized once its last needed verdict is in. The
    answer is the task's, never the appraisal: its member, scores and final outcome would
    tell a reviewer what the task view hides (the other verdict, a gold item's truth)."""
    findings = [finding.model_dump() for finding in body.findings]
    appraisal_id = await to_thread(
        reviews.verdict, caller, task_id, VerdictIn(body.outcome, body.notes, findings)
    )
    return VerdictRecorded(task_id=task_id, appraisal_id=appraisal_id)


@router.get("/quality", response_model=ReviewQuality)
async def quality(reviews: ReviewsDep, _: SeniorOrAdmin) -> ReviewQuality:
    """Queue depth and age, throughput per reviewer, accuracy on gold items, agreement of
    double reviews (Cohen's kappa), overturns of the model, error rate on the audit sample."""
    return await to_thread(reviews.quality)


@router.post("/gold", status_code=201, response_model=AppraisalOut)
async def add_gold_item(
    request: Request,
    appraisals: AppraisalsDep,
    settings: SettingsDep,
    regions: RegionsDep,
    _: Admin,
) -> AppraisalOut:
    """An item with known truth (form field `truth`: authentic or counterfeit; `category` and
    `brand` describe the photos) that reviewers cannot tell from a member's item: its member's
    fields are drawn from real traffic and the routing policy gives its reasons."""
    policy = appraisals.policy
    fields, photos = await read_form(
        request, regions, policy.max_photos, settings.max_photo_bytes, extra=("truth",)
    )
    truth = (fields.pop("truth", "") or "").strip()
    if truth not in ("authentic", "counterfeit"):
        raise ApiError(422, "invalid_field", "truth must be authentic or counterfeit")
    drawn = sorted(set(fields) - {"category", "brand"})
    if drawn:
        raise ApiError(
            422,
            "invalid_field",
            f"{', '.join(drawn)}: a gold item's member fields are drawn from real traffic; "
            "send truth, category, brand and photos",
        )
    if not photos:
        raise ApiError(422, "no_photos", "a gold item needs photos")
    check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    category = (fields.get("category") or "").strip().lower() or None
    brand = (fields.get("brand") or "").strip() or None
    return AppraisalOut.of(await appraisals.create_gold(photos, truth, category, brand))
