"""The model in service: an ONNX Runtime session behind the micro-batcher, warmed before it
is used, and switched for another without dropping requests in flight.

A request takes the current runtime with `ModelManager.use()` and keeps it until it has its
scores; a switch installs the new runtime for later requests and stops the old one only when
the last request holding it is done. A model whose card the routing policy would loosen is
refused before it is warmed (`serving/policy/overrides.py`): the old one stays in service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from serving.batching import MicroBatcher
from serving.metrics import ServiceMetrics
from serving.policy.overrides import check_policy
from serving.settings import Settings
from touchstone.inference import OnnxModel
from touchstone.model_card import ModelCard, load_model_dir
from touchstone.registry import fetch_model_dir

log = logging.getLogger("touchstone.serving")
WARMUP_BATCHES = 3


class ModelRuntime:
    def __init__(self, model: OnnxModel, settings: Settings, metrics: ServiceMetrics):
        self.model = model
        self.card: ModelCard = model.card
        self.source = str(model.model_dir.path)
        self.batcher = MicroBatcher(
            model.predict,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            batching=settings.batching,
            observer=metrics,
        )
        self.warm_batch = min(4, settings.max_batch, settings.max_queue)
        self.users = 0
        self.retired = False

    async def start(self) -> None:
        await self.batcher.start()
        size = self.card.preprocessing.input_size
        blank = np.zeros((3, size, size), np.float32)
        for _ in range(WARMUP_BATCHES):  # first runs allocate and pick kernels
            await self.batcher.submit_many([blank] * self.warm_batch)

    async def stop(self) -> None:
        await self.batcher.stop()

    async def log_odds(self, pixels: list[np.ndarray], regions: list[str]) -> np.ndarray:
        """Each photo's log-odds for its own region (QueueFull when the queue is full)."""
        rows = await self.batcher.submit_many(pixels)
        columns = [self.model.region_index[r] for r in regions]
        return np.asarray(rows)[np.arange(len(pixels)), columns].astype(np.float64)


class ModelManager:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: ModelRuntime | None = None
        self.loading = False
        self.error: str | None = None
        self._switch = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    async def load(self, source: str) -> ModelRuntime:
        """Load, warm and install a model; the previous one retires when idle. PolicyError
        when the policy loosens the new card; then, as on any failure, nothing changes."""
        async with self._switch:
            self.loading = True
            try:
                cache = self.settings.data_dir / "models"
                model_dir = await asyncio.to_thread(fetch_model_dir, source, cache)
                checked = await asyncio.to_thread(load_model_dir, Path(model_dir))
                # Before a session opens: a card the policy loosens is never served.
                check_policy(self.settings.policy_config, checked.card.thresholds)
                model = await asyncio.to_thread(OnnxModel, checked, self.settings.threads, False)
                runtime = ModelRuntime(model, self.settings, self.metrics)
                try:
                    await runtime.start()
                except BaseException:
                    await runtime.stop()
                    raise
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self.loading = False
            old, self.current, self.error = self.current, runtime, None
            self.metrics.model_ready.set(1)
            self.metrics.model.info(
                {"name": runtime.card.name, "version": runtime.card.version or "", "source": source}
            )
            log.info("model %s %s in service", runtime.card.name, runtime.card.version)
            if old is not None:
                old.retired = True
                if old.users == 0:
                    await old.stop()
            return runtime

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[ModelRuntime | None]:
        runtime = self.current
        if runtime is not None:
            runtime.users += 1
        try:
            yield runtime
        finally:
            if runtime is not None:
                runtime.users -= 1
                if runtime.retired and runtime.users == 0:
                    await runtime.stop()

    async def close(self) -> None:
        if self.current is not None:
            await self.current.stop()
            self.current = None
        self.metrics.model_ready.set(0)
