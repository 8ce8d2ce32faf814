"""`/review`: the reviewers' web app, server-rendered pages over `ReviewService`: signing in and
out, the queue, the reviewer's history and the admin page (the work page is `task_routes`).

The pages sign in with a cookie (see `session.py`), not a Bearer key, so every action a page
takes (claim, heartbeat, verdict, photos) has its cookie-authenticated route here; each one
calls the same service methods as `/v1/review`, which own the writes and the audit log.
"""

from __future__ import annotations

from asyncio import to_thread
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy.orm import sessionmaker

from serving.auth import Caller, authenticate
from serving.deps import ReviewsDep, ServicesDep, SessionsDep
from serving.errors import ApiError
from serving.review.service import ReviewService
from serving.web import queries
from serving.web.pages import (
    OUTCOME_LABELS,
    PAGE_HEADERS,
    Admin,
    Anyone,
    Csrf,
    Reviewer,
    WebRoute,
    page,
    templates,
    to,
)
from serving.web.session import (
    WEB_ROLES,
    caller_of,
    check_csrf,
    clear_session,
    new_session,
    read_session,
    write_session,
)

router = APIRouter(prefix="/review", route_class=WebRoute, include_in_schema=False)

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
async def login_page(
    request: Request, services: ServicesDep, next: str = "/review", reason: str = ""
) -> Response:
    session = read_session(request, services.signer)
    key_id = session.key_id if session is not None else None
    if key_id is not None and await to_thread(caller_of, services.sessions, key_id):
        return to(_safe_next(next))
    return _login_form(
        request, services, next, LOGIN_REASONS.get(reason), 200, error=reason == "revoked"
    )


def _login_form(
    request: Request,
    services: ServicesDep,
    next: str,
    message: str | None,
    status: int,
    error: bool = True,
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
    write_session(request, response, session, services.signer)
    return response


@router.post("/login")
async def login(
    request: Request,
    services: ServicesDep,
    key: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form(alias="csrf_token")] = "",
    next: Annotated[str, Form()] = "/review",
) -> Response:
    try:
        check_csrf(request, csrf, services.signer)
    except ApiError:
        expired = "The sign-in form had expired: please try again."
        return _login_form(request, services, next, expired, 400)
    try:
        caller = await to_thread(_authenticate, services.sessions, key.strip())
    except ApiError:
        unknown = "That key is unknown or has been revoked."
        return _login_form(request, services, next, unknown, 401)
    if caller.role not in WEB_ROLES:
        message = f"The {caller.role} role cannot review: use a reviewer, senior or admin key."
        return _login_form(request, services, next, message, 403)
    response = to(_safe_next(next))
    write_session(request, response, new_session(caller.key_id), services.signer)
    return response


def _authenticate(sessions: sessionmaker, key: str) -> Caller:
    with sessions() as db:
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
    request: Request, reviews: ReviewsDep, caller: Anyone, note: str = "", recorded: str = ""
) -> Response:
    counts = await to_thread(reviews.queue)
    message = NOTES.get(note)
    if recorded in OUTCOME_LABELS:
        message = f"Verdict recorded: {OUTCOME_LABELS[recorded]}."
    return page(request, "queue.html", caller, counts=counts, message=message)


@router.post("/claim")
async def claim(
    request: Request, services: ServicesDep, caller: Reviewer, csrf: Csrf = ""
) -> Response:
    check_csrf(request, csrf, services.signer)
    return await claim_next(services.reviews, caller)


async def claim_next(reviews: ReviewService, caller: Caller) -> Response:
    task_id = await to_thread(reviews.claim, caller)
    return to("/review?note=empty" if task_id is None else f"/review/tasks/{task_id}")


# -- history and admin -----------------------------------------------------------------------


@router.get("/history")
async def history_page(request: Request, sessions: SessionsDep, caller: Anyone) -> Response:
    mine = await to_thread(queries.history, sessions, caller.key_id)
    return page(request, "history.html", caller, history=mine)


@router.get("/admin")
async def admin_page(request: Request, reviews: ReviewsDep, caller: Admin) -> Response:
    counts = await to_thread(reviews.queue)
    quality, problem = None, None
    try:
        quality = (await to_thread(reviews.quality)).model_dump()
    except Exception as exc:  # the queue page must still show when the numbers fail
        problem = f"{type(exc).__name__}: {exc}"
    return page(
        request, "admin.html", caller, counts=counts.model_dump(), quality=quality, problem=problem
    )
