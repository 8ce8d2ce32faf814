"""`/review`: the reviewers' web app, server-rendered pages over `ReviewService`.

The pages sign in with a cookie (see `session.py`), not a Bearer key, so every action a page
takes (claim, heartbeat, verdict, photos) has its cookie-authenticated route here; each one
calls the same service methods as `/v1/review`, which own the writes and the audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from asyncio import to_thread
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from serving.auth import Caller, authenticate
from serving.db import as_utc, utcnow
from serving.errors import ApiError, error_body
from serving.photos import PhotoStoreError
from serving.review.service import ReviewService
from serving.review.tasks import MAX_PHOTO_ROUNDS, OUTCOMES, VerdictIn
from serving.web import queries
from serving.web.heatmap import GRID, HeatmapCache, heatmap_png
from serving.web.session import (
    WEB_ROLES,
    SignInRequired,
    caller_of,
    check_csrf,
    clear_session,
    csrf_token,
    new_session,
    read_session,
    signed_in,
    write_session,
)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
# Changes with the files, so a browser never keeps last release's script with this release's
# pages.
STATIC_VERSION = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(STATIC_DIR.iterdir()) if p.is_file())
).hexdigest()[:10]

OUTCOME_LABELS = {
    "authentic": "Authentic",
    "counterfeit": "Counterfeit",
    "inconclusive": "Inconclusive",
    "needs_more_photos": "Needs more photos",
}
SHORTCUTS = {"authentic": "a", "counterfeit": "c", "inconclusive": "i", "needs_more_photos": "m"}
MAX_NOTES = 5000
# Pages show member data: never cached, never framed, no script but our own.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(
    static_version=STATIC_VERSION, outcome_labels=OUTCOME_LABELS, shortcuts=SHORTCUTS
)


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return as_utc(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when


def _wants_page(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class WebRoute(APIRoute):
    """Pages answer a browser in HTML: a sign-in redirect, or an error page that says what
    happened; scripts and images get the API's JSON errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                if not _wants_page(request):
                    return JSONResponse(
                        error_body("unauthenticated", "sign in at /review/login"), 401
                    )
                query = {"next": request.url.path} if request.method == "GET" else {}
                if exc.message:
                    query["reason"] = "revoked"
                response = RedirectResponse(f"/review/login?{urlencode(query)}", 303)
                clear_session(response)
                return response
            except ApiError as exc:
                if not _wants_page(request):
                    raise
                try:
                    caller = await to_thread(signed_in, request)
                except SignInRequired:
                    caller = None
                return page(request, "error.html", caller, exc.status, error=exc)

        return route


router = APIRouter(prefix="/review", route_class=WebRoute, include_in_schema=False)


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def page(
    request: Request, name: str, caller: Caller | None, status: int = 200, **context: Any
) -> Response:
    context.update(caller=caller, csrf=csrf_token(request))
    return templates.TemplateResponse(
        request, name, context, status_code=status, headers=PAGE_HEADERS
    )


def to(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def web_role(*roles: str) -> Callable[[Request], Caller]:
    def dependency(request: Request) -> Caller:
        caller = signed_in(request)
        if caller.role not in roles:
            raise ApiError(403, "forbidden", f"This page is for the {' or '.join(roles)} role.")
        return caller

    return dependency


Anyone = Annotated[Caller, Depends(web_role(*WEB_ROLES))]
Reviewer = Annotated[Caller, Depends(web_role("reviewer", "senior"))]
Admin = Annotated[Caller, Depends(web_role("admin"))]
Csrf = Annotated[str, Form(alias="csrf_token")]


def reviews(request: Request) -> ReviewService:
    return request.app.state.review


# -- signing in ------------------------------------------------------------------------------

LOGIN_REASONS = {
    "revoked": "Your key was revoked or no longer has a reviewing role: sign in with another.",
    "signed_out": "You are signed out.",
}


def _safe_next(target: str) -> str:
    # Only a page of this app: never another site (an open redirect after sign-in).
    if target.startswith("/review") and not target.startswith("//") and "\\" not in target:
        return target
    return "/review"


@router.get("/login")
async def login_page(request: Request, next: str = "/review", reason: str = "") -> Response:
    session = read_session(request)
    key_id = session.key_id if session is not None else None
    if key_id is not None and await to_thread(caller_of, request.app.state.sessions, key_id):
        return to(_safe_next(next))
    return _login_form(request, next, LOGIN_REASONS.get(reason), 200, error=reason == "revoked")


def _login_form(
    request: Request, next: str, message: str | None, status: int, error: bool = True
) -> Response:
    # A fresh anonymous session carries the CSRF token of the sign-in form.
    session = new_session(None)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {
            "caller": None,
            "csrf": session.csrf,
            "next": _safe_next(next),
            "message": message,
            "error": error,
        },
        status_code=status,
        headers=PAGE_HEADERS,
    )
    write_session(request, response, session)
    return response


@router.post("/login")
async def login(
    request: Request,
    key: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form(alias="csrf_token")] = "",
    next: Annotated[str, Form()] = "/review",
) -> Response:
    try:
        check_csrf(request, csrf)
    except ApiError:
        return _login_form(request, next, "The sign-in form had expired: please try again.", 400)
    try:
        caller = await to_thread(_authenticate, request, key.strip())
    except ApiError:
        return _login_form(request, next, "That key is unknown or has been revoked.", 401)
    if caller.role not in WEB_ROLES:
        message = f"The {caller.role} role cannot review: use a reviewer, senior or admin key."
        return _login_form(request, next, message, 403)
    response = to(_safe_next(next))
    write_session(request, response, new_session(caller.key_id))
    return response


def _authenticate(request: Request, key: str) -> Caller:
    with request.app.state.sessions() as db:
        return authenticate(db, f"Bearer {key}")


# Signing out needs no CSRF token: a forged one costs the reviewer a sign-in, nothing more.
@router.api_route("/logout", methods=["GET", "POST"])
async def logout() -> Response:
    response = to("/review/login?reason=signed_out")
    clear_session(response)
    return response


# -- the queue -------------------------------------------------------------------------------

NOTES = {
    "empty": "The queue is empty: nothing to claim right now.",
    "released": "The item went back to the queue.",
}


@router.get("")
async def queue_page(
    request: Request, caller: Anyone, note: str = "", recorded: str = ""
) -> Response:
    counts = await to_thread(reviews(request).queue)
    message = NOTES.get(note)
    if recorded in OUTCOME_LABELS:
        message = f"Verdict recorded: {OUTCOME_LABELS[recorded]}."
    return page(request, "queue.html", caller, counts=counts, message=message)


@router.post("/claim")
async def claim(request: Request, caller: Reviewer, csrf: Csrf = "") -> Response:
    check_csrf(request, csrf)
    return await _claim_next(request, caller)


async def _claim_next(request: Request, caller: Caller) -> Response:
    task_id = await to_thread(reviews(request).claim, caller)
    return to("/review?note=empty" if task_id is None else f"/review/tasks/{task_id}")


# -- the work page ---------------------------------------------------------------------------


@router.get("/tasks/{task_id}")
async def task_page(task_id: int, request: Request, caller: Anyone) -> Response:
    service = reviews(request)
    view = await to_thread(service.view, caller, task_id)
    held = await to_thread(queries.holds, request.app.state.sessions, task_id, caller.key_id)
    task, appraisal = view["task"], view["appraisal"]
    lease = task["lease_expires_at"]
    return page(
        request,
        "task.html",
        caller,
        task=task,
        appraisal=appraisal,
        regions=_by_region(view["photos"], request.app.state.regions()),
        other_verdicts=view["other_verdicts"],
        held=held,
        lease_left=int((lease - utcnow()).total_seconds()) if held and lease else None,
        scores_hidden=task["blind"] and service.blind_scores,
        model_ready=request.app.state.models.current is not None,
        max_rounds=MAX_PHOTO_ROUNDS,
        last_round=appraisal["photo_rounds"] >= MAX_PHOTO_ROUNDS,
        grid=GRID,
    )


def _by_region(photos: list[dict[str, Any]], regions: tuple[str, ...]) -> list[tuple[str, list]]:
    order = {region: i for i, region in enumerate(regions)}
    groups: dict[str, list[dict[str, Any]]] = {}
    for photo in photos:
        groups.setdefault(photo["region"], []).append(photo)
    return sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


@router.post("/tasks/{task_id}/heartbeat")
async def heartbeat(task_id: int, request: Request, caller: Reviewer) -> dict[str, Any]:
    """Keep the lease while the work page is open and its reviewer is at it."""
    check_csrf(request, request.headers.get("x-csrf-token"))
    expires = await to_thread(reviews(request).heartbeat, caller, task_id)
    return {"lease_expires_at": expires, "seconds_left": (expires - utcnow()).total_seconds()}


@router.post("/tasks/{task_id}/release")
async def release(task_id: int, request: Request, caller: Reviewer, csrf: Csrf = "") -> Response:
    check_csrf(request, csrf)
    await to_thread(reviews(request).release, caller, task_id)
    return to("/review?note=released")


@router.post("/tasks/{task_id}/verdict")
async def verdict(
    task_id: int,
    request: Request,
    caller: Reviewer,
    outcome: Annotated[str, Form()] = "",
    notes: Annotated[str, Form()] = "",
    then: Annotated[str, Form()] = "queue",
    csrf: Csrf = "",
) -> Response:
    check_csrf(request, csrf)
    if outcome not in OUTCOMES:
        raise ApiError(422, "invalid_field", "Choose an outcome: a, c, i or m.")
    if len(notes) > MAX_NOTES:
        raise ApiError(422, "invalid_field", f"Notes are limited to {MAX_NOTES} characters.")
    await to_thread(reviews(request).verdict, caller, task_id, VerdictIn(outcome, notes, []))
    if then == "next":
        return await _claim_next(request, caller)
    return to(f"/review?recorded={outcome}")


# -- photos ----------------------------------------------------------------------------------


@router.get("/tasks/{task_id}/photos/{sha256}")
async def photo(task_id: int, sha256: str, request: Request, caller: Anyone) -> Response:
    """A photo of the task's item; every view is in the audit log (`photo_allowed`)."""
    await to_thread(reviews(request).photo_allowed, caller, task_id, sha256)
    data = await _photo_bytes(request, sha256)
    media = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return Response(data, media_type=media, headers=PRIVATE)


async def _photo_bytes(request: Request, sha256: str) -> bytes:
    try:
        return await to_thread(request.app.state.appraisals.store.get, sha256)
    except PhotoStoreError as exc:  # erased since the task was made, or damaged
        raise ApiError(404, "not_found", f"the photo cannot be read: {exc.message}") from exc


@router.get("/tasks/{task_id}/photos/{sha256}/heatmap.png")
async def heatmap(task_id: int, sha256: str, request: Request, caller: Anyone) -> Response:
    """Occlusion sensitivity of the model in service on this photo (`heatmap.py`)."""
    service = reviews(request)
    await to_thread(service.photo_allowed, caller, task_id, sha256)
    found = await to_thread(queries.photo_in_task, request.app.state.sessions, task_id, sha256)
    if found is None:
        raise ApiError(404, "not_found", "no such photo in this task")
    blind, region = found
    if blind and service.blind_scores:
        # Where the model looked tells a blind reviewer what it thought.
        raise ApiError(403, "blind_task", "A blind review shows no heatmap.")
    async with request.app.state.models.use() as runtime:
        if runtime is None:
            raise ApiError(503, "no_model", "No model is loaded, so there is no heatmap.")
        if region not in runtime.model.region_index:
            raise ApiError(409, "region_not_scored", f"The model does not score {region} photos.")
        cache = _heatmaps(request)
        key = cache.key(runtime.model, sha256, region)
        async with cache.busy:
            png = cache.get(key)
            if png is None:
                data = await _photo_bytes(request, sha256)
                png = await to_thread(heatmap_png, runtime.model, data, region)
                cache.put(key, png)
    return Response(png, media_type="image/png", headers=PRIVATE)


def _heatmaps(request: Request) -> HeatmapCache:
    cache = getattr(request.app.state, "web_heatmaps", None)
    if cache is None:
        cache = request.app.state.web_heatmaps = HeatmapCache()
    return cache


# -- history and admin -----------------------------------------------------------------------


@router.get("/history")
async def history_page(request: Request, caller: Anyone) -> Response:
    mine = await to_thread(queries.history, request.app.state.sessions, caller.key_id)
    return page(request, "history.html", caller, history=mine)


@router.get("/admin")
async def admin_page(request: Request, caller: Admin) -> Response:
    service = reviews(request)
    counts = await to_thread(service.queue)
    quality, problem = None, None
    if callable(getattr(service, "quality", None)):
        try:
            quality = await to_thread(service.quality)  # type: ignore[attr-defined]
        except Exception as exc:  # the queue page must still show when the numbers fail
            problem = f"{type(exc).__name__}: {exc}"
    return page(request, "admin.html", caller, counts=counts, quality=quality, problem=problem)
