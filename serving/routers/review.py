"""`/v1/review`: the human review queue, for reviewers and senior reviewers."""

from __future__ import annotations

import secrets
from asyncio import to_thread
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from serving.appraisals.uploads import AppraisalRequest
from serving.auth import Caller, require
from serving.errors import ApiError
from serving.review.service import ReviewService
from serving.review.tasks import VerdictIn
from serving.routers.appraisals import read_form
from serving.schemas import AppraisalOut

router = APIRouter(prefix="/v1/review", tags=["review"])

Reviewer = Annotated[Caller, Depends(require("reviewer", "senior"))]


def service(request: Request) -> ReviewService:
    return request.app.state.review


Service = Annotated[ReviewService, Depends(service)]


class RegionFinding(BaseModel):
    region: str = Field(..., max_length=32)
    note: str = Field("", max_length=2000)


class VerdictBody(BaseModel):
    outcome: Literal["authentic", "counterfeit", "inconclusive", "needs_more_photos"]
    notes: str = Field("", max_length=5000)
    findings: list[RegionFinding] = Field(default_factory=list, max_length=50)


@router.post("/claim", responses={204: {"description": "nothing to review"}})
async def claim(reviews: Service, caller: Reviewer) -> Any:
    """The next task by SLA deadline, under a lease (or the one the caller already holds)."""
    task_id = await to_thread(reviews.claim, caller)
    if task_id is None:
        return Response(status_code=204)
    return await to_thread(reviews.view, caller, task_id)


@router.get("/queue")
async def queue(
    reviews: Service, _: Caller = Depends(require("reviewer", "senior", "admin"))
) -> dict[str, int]:
    """Open tasks by SLA state."""
    return await to_thread(reviews.queue)


@router.get("/tasks/{task_id}")
async def view_task(
    task_id: int, reviews: Service, caller: Caller = Depends(require("reviewer", "senior", "admin"))
) -> dict[str, Any]:
    return await to_thread(reviews.view, caller, task_id)


@router.get("/tasks/{task_id}/photos/{sha256}")
async def task_photo(
    task_id: int,
    sha256: str,
    request: Request,
    reviews: Service,
    caller: Caller = Depends(require("reviewer", "senior", "admin")),
) -> Response:
    """A photo of the task's item (EXIF-free); every view is in the audit log."""
    await to_thread(reviews.photo_allowed, caller, task_id, sha256)
    store = request.app.state.appraisals.store
    data = await to_thread(store.get, sha256)
    media = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return Response(data, media_type=media, headers={"Cache-Control": "private, no-store"})


@router.post("/tasks/{task_id}/heartbeat")
async def heartbeat(task_id: int, reviews: Service, caller: Reviewer) -> dict[str, Any]:
    """Keep the lease while still working."""
    return {"lease_expires_at": await to_thread(reviews.heartbeat, caller, task_id)}


@router.post("/tasks/{task_id}/release", status_code=204)
async def release(task_id: int, reviews: Service, caller: Reviewer) -> Response:
    """Give the task back to the queue."""
    await to_thread(reviews.release, caller, task_id)
    return Response(status_code=204)


@router.post("/tasks/{task_id}/verdict", response_model=AppraisalOut)
async def verdict(
    task_id: int, body: VerdictBody, request: Request, reviews: Service, caller: Reviewer
) -> AppraisalOut:
    """Record the verdict; the appraisal is finalized once its last needed verdict is in."""
    appraisal_id = await to_thread(
        reviews.verdict,
        caller,
        task_id,
        VerdictIn(body.outcome, body.notes, [f.model_dump() for f in body.findings]),
    )
    return AppraisalOut.of(await to_thread(request.app.state.appraisals.get, appraisal_id))


@router.get("/quality")
async def quality(
    reviews: Service, _: Caller = Depends(require("senior", "admin"))
) -> dict[str, Any]:
    """Queue depth and age, throughput per reviewer, accuracy on gold items, agreement of
    double reviews (Cohen's kappa), overturns of the model, error rate on the audit sample."""
    return await to_thread(reviews.quality)


@router.post("/gold", status_code=201, response_model=AppraisalOut)
async def add_gold_item(request: Request, _: Caller = Depends(require("admin"))) -> AppraisalOut:
    """An item with known truth (form field `truth`: authentic or counterfeit) that enters the
    queue looking like any other; reviewers' accuracy on such items is measured."""
    appraisals = request.app.state.appraisals
    fields, photos = await read_form(
        request, request.app.state.regions(), appraisals.policy.max_photos, extra=("truth",)
    )
    truth = (fields.pop("truth", "") or "").strip()
    if truth not in ("authentic", "counterfeit"):
        raise ApiError(422, "invalid_field", "truth must be authentic or counterfeit")
    if not photos:
        raise ApiError(422, "no_photos", "a gold item needs photos")
    gold = AppraisalRequest(
        member_id=f"m-{secrets.token_hex(4)}",  # like a member's, so it does not stand out
        member_tier="explorer",
        category=(fields.get("category") or "bag").strip().lower(),
        brand=(fields.get("brand") or "").strip() or None,
        declared_value=None,
        photos=photos,
        idempotency_key=None,
    )
    return AppraisalOut.of(await appraisals.create_gold(gold, truth))
