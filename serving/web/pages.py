"""What every page of the reviewers' web app shares: the templates, the headers, the route class
that answers a browser in HTML, and the signed-in reviewer as a dependency."""

from __future__ import annotations

import datetime as dt
import hashlib
from asyncio import to_thread
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from serving.auth import Caller
from serving.db import as_utc
from serving.deps import ServicesDep, services_of
from serving.errors import ApiError, error_body
from serving.web.session import WEB_ROLES, SignInRequired, clear_session, csrf_token, signed_in

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
                services = services_of(request)
                try:
                    caller = await to_thread(signed_in, request, services.signer, services.sessions)
                except SignInRequired:
                    caller = None
                return page(request, "error.html", caller, exc.status, error=exc)

        return route


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def page(
    request: Request, name: str, caller: Caller | None, status: int = 200, **context: Any
) -> Response:
    context.update(caller=caller, csrf=csrf_token(request, services_of(request).signer))
    return templates.TemplateResponse(
        request, name, context, status_code=status, headers=PAGE_HEADERS
    )


def to(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def web_role(*roles: str) -> Callable[..., Caller]:
    """A dependency: the signed-in reviewer, if their key has one of `roles`."""

    def dependency(request: Request, services: ServicesDep) -> Caller:
        caller = signed_in(request, services.signer, services.sessions)
        if caller.role not in roles:
            raise ApiError(403, "forbidden", f"This page is for the {' or '.join(roles)} role.")
        return caller

    return dependency


Anyone = Annotated[Caller, Depends(web_role(*WEB_ROLES))]
Reviewer = Annotated[Caller, Depends(web_role("reviewer", "senior"))]
Admin = Annotated[Caller, Depends(web_role("admin"))]
Csrf = Annotated[str, Form(alias="csrf_token")]
