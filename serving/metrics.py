"""Prometheus metrics, one registry per app (tests start many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "touchstone_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "touchstone_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_size = Histogram(
            "touchstone_batch_size",
            "photos per model batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.queue_seconds = Histogram(
            "touchstone_batch_queue_seconds",
            "time a photo waited for its batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.compute_seconds = Histogram(
            "touchstone_batch_compute_seconds",
            "model time per batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.decisions = Counter(
            "touchstone_decisions_total",
            "appraisal decisions",
            ["path", "outcome", "rule"],
            registry=r,
        )
        self.overloaded = Counter(
            "touchstone_overloaded_total", "uploads refused with 503 (queue full)", registry=r
        )
        self.sla_breaches = Counter(
            "touchstone_review_sla_breaches_total", "review tasks that passed their SLA", registry=r
        )
        self.stale_tasks = Gauge(
            "touchstone_review_tasks_open_over_72h",
            "review tasks open longer than 72 hours (an operational alert)",
            registry=r,
        )
        self.review_queue = Gauge(
            "touchstone_review_queue", "review tasks by SLA state", ["state"], registry=r
        )
        self.review_quality = Gauge(
            "touchstone_review_quality",
            "gold accuracy, double-review kappa, overturn and audit error rates",
            ["measure"],
            registry=r,
        )
        self.model_ready = Gauge("touchstone_model_ready", "1 when a model is warm", registry=r)
        self.model = Info("touchstone_model", "the model in service", registry=r)

    # The batcher's observer hook.
    def on_batch(self, size: int, queue_seconds: list[float], compute_seconds: float) -> None:
        self.batch_size.observe(size)
        for waited in queue_seconds:
            self.queue_seconds.observe(waited)
        self.compute_seconds.observe(compute_seconds)
