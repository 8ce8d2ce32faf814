"""The appraisal API: `create_app(settings)` builds it; `touchstone serve` runs it in uvicorn.

The settings (and the policy, benefits and webhook files they name) are validated before the
app is built. At start-up the database is migrated, every part of the service is built once
(`build_services`, handed to routes by `serving/deps.py`), then the model is loaded and warmed
in the background, so uploads are accepted (and routed to people) from the first second;
`/readyz` turns ready once the model is warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.appraisals.service import AppraisalService
from serving.benefits.ledger import Ledger
from serving.benefits.service import BenefitsService
from serving.db import make_engine, make_sessionmaker, upgrade
from serving.deps import Services, services_of
from serving.errors import error_body, install_handlers
from serving.lifecycle import standard_lifecycle
from serving.metrics import ServiceMetrics
from serving.orphans import SWEEP_SECONDS as ORPHAN_SWEEP_SECONDS
from serving.orphans import SweepRefused, collect_orphans
from serving.outbox.delivery import run_deliverer
from serving.photos import PhotoStore
from serving.review.service import ReviewService
from serving.routers import appraisals, certificates, erasure, members, review, system
from serving.runtime import ModelManager
from serving.settings import Settings
from serving.web import routes as web
from serving.web import task_routes as web_tasks
from serving.web.heatmap import HeatmapCache
from serving.web.pages import static_files
from serving.web.session import load_secret, make_signer

log = logging.getLogger("touchstone.serving")
POINTS_EXPIRY_SECONDS = 3600.0


class BodyLimit:
    """Refuse a request body past `limit` bytes while it streams in, before it is buffered."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        too_large = False
        started = False  # the app's answer began before the body went over
        answered = False

        async def counted() -> Message:
            # Over the limit, the body ends: to the app, the client is gone (an exception raised
            # here would reach it wrapped by the middleware between, and become a 500).
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def send_or_replace(message: Message) -> None:
            # Whatever the app answers to a body cut short becomes this one 413.
            nonlocal started, answered
            if not too_large or started:
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await self._refuse(send)

        try:
            await self.app(scope, counted, send_or_replace)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started and not answered:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            error_body("request_too_large", f"the request is over {self.limit // 2**20} MiB"),
            status_code=413,
            headers={"Connection": "close"},
        )
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def build_services(settings: Settings, engine: Engine) -> Services:
    """Every part of the running service, each built once from the settings."""
    sessions = make_sessionmaker(engine)
    metrics = ServiceMetrics()
    models = ModelManager(settings, metrics)
    store = PhotoStore(settings.data_dir / "photos", settings.photo_key_bytes())
    ledger = Ledger(settings.benefits_config)
    lifecycle = standard_lifecycle(ledger)
    secret = settings.web_secret
    signer = make_signer(
        secret.get_secret_value().encode() if secret else load_secret(settings.data_dir)
    )
    return Services(
        settings=settings,
        sessions=sessions,
        metrics=metrics,
        models=models,
        store=store,
        lifecycle=lifecycle,
        appraisals=AppraisalService(
            sessions,
            store,
            settings.policy_config,
            models,
            metrics,
            lifecycle,
            settings.max_pixels,
        ),
        reviews=ReviewService(
            sessions, lifecycle, settings.review_lease_seconds, settings.blind_scores
        ),
        benefits=BenefitsService(sessions, ledger),
        signer=signer,
        heatmaps=HeatmapCache(),
    )


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        await asyncio.to_thread(upgrade, engine)
        services = build_services(settings, engine)
        app.state.services = services
        tasks = [
            asyncio.create_task(_watch_sla(services)),
            asyncio.create_task(run_deliverer(services.sessions, settings.outbox_config)),
            asyncio.create_task(_collect_orphans(services)),
        ]
        if settings.model:
            tasks.append(asyncio.create_task(_load(services.models, settings.model)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await services.models.close()
            engine.dispose()

    app = FastAPI(
        title="Touchstone appraisal API",
        version="1",
        description="Photo-based authentication of second-hand luxury goods.",
        lifespan=lifespan,
    )
    install_handlers(app)
    for router in (appraisals, review, system, certificates, erasure, members):
        app.include_router(router.router)
    app.include_router(web.router)
    app.include_router(web_tasks.router)
    app.mount("/review/static", static_files(), name="review_static")

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics = services_of(request).metrics
        metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        metrics.latency.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    return app


async def _load(models: ModelManager, source: str) -> None:
    try:
        await models.load(source)
    except asyncio.CancelledError:
        raise
    except Exception:
        # Uploads keep flowing to people; /readyz and /v1/models show the error.
        log.exception("could not load the model %s", source)


async def _collect_orphans(services: Services) -> None:
    """Delete photo files that no row names, past the grace period (`serving/orphans.py`): at
    start, then every few hours."""
    while True:
        try:
            report = await asyncio.to_thread(collect_orphans, services.sessions, services.store)
            if report.orphans or report.temp_files:
                log.info(
                    "collected %d orphan photo(s) and %d temp file(s)",
                    report.orphans,
                    report.temp_files,
                )
        except asyncio.CancelledError:
            raise
        except SweepRefused as exc:
            log.error("the orphan sweep deleted nothing: %s", exc)
        except Exception:
            log.exception("the orphan sweep failed; it runs again")
        await asyncio.sleep(ORPHAN_SWEEP_SECONDS)


async def _watch_sla(services: Services) -> None:
    """Flag review tasks past their SLA (an `sla_breached` event each), keep the queue
    gauges current, and post due point expiries and their reminders."""
    reviews, metrics = services.reviews, services.metrics
    last_expiry = -float("inf")
    while True:
        try:
            breached, stale = await asyncio.to_thread(reviews.flag_sla_breaches)
            if time.monotonic() - last_expiry > POINTS_EXPIRY_SECONDS:
                # Walks every member: hourly is plenty for expiries counted in days.
                await asyncio.to_thread(services.benefits.expire_points)
                last_expiry = time.monotonic()
            metrics.sla_breaches.inc(breached)
            metrics.stale_tasks.set(stale)
            counts = await asyncio.to_thread(reviews.queue)
            for state, count in counts.model_dump().items():
                metrics.review_queue.labels(state).set(count)
            numbers = (await asyncio.to_thread(reviews.quality)).model_dump()
            for measure in (
                "gold_accuracy",
                "double_review_kappa",
                "human_overturn_rate",
                "audit_error_rate",
                "audit_false_authentic_rate",
                "queue_oldest_hours",
            ):
                if numbers.get(measure) is not None:
                    metrics.review_quality.labels(measure).set(numbers[measure])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the SLA sweep failed; it runs again")
        await asyncio.sleep(services.settings.sla_sweep_seconds)
