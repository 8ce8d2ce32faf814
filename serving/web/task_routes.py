"""`/review/tasks/{id}`: the work page and what it does: keep the lease, give the task back,
record a verdict, show a photo and the model's heatmap on it."""

from __future__ import annotations

from asyncio import to_thread
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from serving.db import utcnow
from serving.deps import ModelsDep, RegionsDep, ReviewsDep, ServicesDep, SessionsDep, StoreDep
from serving.errors import ApiError
from serving.review.tasks import MAX_PHOTO_ROUNDS, OUTCOMES, VerdictIn
from serving.review.view import stored_photo
from serving.schemas.review import TaskPhoto, WebLease
from serving.web import queries
from serving.web.heatmap import GRID, heatmap_png
from serving.web.pages import MAX_NOTES, PRIVATE, Anyone, Csrf, Reviewer, WebRoute, page, to
from serving.web.routes import claim_next
from serving.web.session import check_csrf

router = APIRouter(prefix="/review/tasks", route_class=WebRoute, include_in_schema=False)


@router.get("/{task_id}")
async def task_page(
    task_id: int,
    request: Request,
    reviews: ReviewsDep,
    sessions: SessionsDep,
    models: ModelsDep,
    regions: RegionsDep,
    caller: Anyone,
) -> Response:
    view = await to_thread(reviews.view, caller, task_id)
    held = await to_thread(queries.holds, sessions, task_id, caller.key_id)
    lease = view.task.lease_expires_at
    return page(
        request,
        "task.html",
        caller,
        task=view.task,
        appraisal=view.appraisal,
        regions=_by_region(view.photos, regions),
        other_verdicts=view.other_verdicts,
        held=held,
        lease_left=int((lease - utcnow()).total_seconds()) if held and lease else None,
        scores_hidden=view.task.blind and reviews.blind_scores,
        model_ready=models.current is not None,
        max_rounds=MAX_PHOTO_ROUNDS,
        last_round=view.appraisal.photo_rounds >= MAX_PHOTO_ROUNDS,
        grid=GRID,
    )


def _by_region(photos: list[TaskPhoto], regions: tuple[str, ...]) -> list[tuple[str, list]]:
    order = {region: i for i, region in enumerate(regions)}
    groups: dict[str, list[TaskPhoto]] = {}
    for photo in photos:
        groups.setdefault(photo.region, []).append(photo)
    return sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


@router.post("/{task_id}/heartbeat", response_model=WebLease)
async def heartbeat(
    task_id: int, request: Request, services: ServicesDep, caller: Reviewer
) -> WebLease:
    """Keep the lease while the work page is open and its reviewer is at it."""
    check_csrf(request, request.headers.get("x-csrf-token"), services.signer)
    expires = await to_thread(services.reviews.heartbeat, caller, task_id)
    return WebLease(lease_expires_at=expires, seconds_left=(expires - utcnow()).total_seconds())


@router.post("/{task_id}/release")
async def release(
    task_id: int, request: Request, services: ServicesDep, caller: Reviewer, csrf: Csrf = ""
) -> Response:
    check_csrf(request, csrf, services.signer)
    await to_thread(services.reviews.release, caller, task_id)
    return to("/review?note=released")


@router.post("/{task_id}/verdict")
async def verdict(
    task_id: int,
    request: Request,
    services: ServicesDep,
    caller: Reviewer,
    outcome: Annotated[str, Form()] = "",
    notes: Annotated[str, Form()] = "",
    then: Annotated[str, Form()] = "queue",
    csrf: Csrf = "",
) -> Response:
    check_csrf(request, csrf, services.signer)
    if outcome not in OUTCOMES:
        raise ApiError(422, "invalid_field", "Choose an outcome: a, c, i or m.")
    if len(notes) > MAX_NOTES:
        raise ApiError(422, "invalid_field", f"Notes are limited to {MAX_NOTES} characters.")
    reviews = services.reviews
    await to_thread(reviews.verdict, caller, task_id, VerdictIn(outcome, notes, []))
    if then == "next":
        return await claim_next(reviews, caller)
    return to(f"/review?recorded={outcome}")


# -- photos ----------------------------------------------------------------------------------


@router.get("/{task_id}/photos/{sha256}")
async def photo(
    task_id: int, sha256: str, reviews: ReviewsDep, store: StoreDep, caller: Anyone
) -> Response:
    """A photo of the task's item; every view is in the audit log (`photo_allowed`)."""
    await to_thread(reviews.photo_allowed, caller, task_id, sha256)
    data, media = await to_thread(stored_photo, store, sha256)
    return Response(data, media_type=media, headers=PRIVATE)


@router.get("/{task_id}/photos/{sha256}/heatmap.png")
async def heatmap(
    task_id: int, sha256: str, services: ServicesDep, models: ModelsDep, caller: Anyone
) -> Response:
    """Occlusion sensitivity of the model in service on this photo (`heatmap.py`)."""
    reviews = services.reviews
    await to_thread(reviews.photo_allowed, caller, task_id, sha256)
    found = await to_thread(queries.photo_in_task, services.sessions, task_id, sha256)
    if found is None:
        raise ApiError(404, "not_found", "no such photo in this task")
    blind, region = found
    if blind and reviews.blind_scores:
        # Where the model looked tells a blind reviewer what it thought.
        raise ApiError(403, "blind_task", "A blind review shows no heatmap.")
    async with models.use() as runtime:
        if runtime is None:
            raise ApiError(503, "no_model", "No model is loaded, so there is no heatmap.")
        if region not in runtime.model.region_index:
            raise ApiError(409, "region_not_scored", f"The model does not score {region} photos.")
        cache = services.heatmaps
        key = cache.key(runtime.model, sha256, region)
        async with cache.busy:
            png = cache.get(key)
            if png is None:
                data, _ = await to_thread(stored_photo, services.store, sha256)
                png = await to_thread(heatmap_png, runtime.model, data, region)
                cache.put(key, png)
    return Response(png, media_type="image/png", headers=PRIVATE)
