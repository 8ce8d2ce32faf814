"""`/v1/review`: the human review queue, for reviewers and senior reviewers."""

from __future__ import annotations

from asyncio import to_thread
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from serving.auth import Caller, require
from serving.review import ReviewService, VerdictIn
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
