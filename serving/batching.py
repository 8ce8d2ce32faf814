"""Micro-batching: photos from concurrent requests share one model call.

Like Ray Serve's `@serve.batch`: the first waiting photo opens a batch, which goes to the model
when it holds `max_batch` photos or when that first photo has waited `max_wait_ms`, whichever
comes first. The queue is bounded so that overload is answered at once (503 + Retry-After)
instead of by latency that grows until every client times out.

The model is called on one worker thread: ONNX Runtime's session already uses every core
intra-op, so two calls at once would only fight over them, and the event loop stays free to
accept and answer requests while a batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

log = logging.getLogger(__name__)

# Weight of the latest batch in the running estimate of batch time used for Retry-After.
_RECENT_WEIGHT = 0.2


class QueueFull(Exception):
    """Too many photos are waiting; the caller should come back after `retry_after` seconds."""

    def __init__(self, retry_after: float, depth: int) -> None:
        super().__init__(f"{depth} photos are waiting; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, or stopping): it takes no new photos."""


class BatchObserver:
    """Told about every batch that reached the model; subclass it to export metrics.

    Called on the event loop, so it must be quick. `queue_seconds` has one entry per photo:
    from `submit` until its batch left the queue; `compute_seconds` is the model call (with
    stacking) alone, so the two can be told apart.
    """

    def on_batch(self, size: int, queue_seconds: list[float], compute_seconds: float) -> None:
        pass


@dataclass(eq=False)  # identity: the same pixels may be submitted twice
class _Pending:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued_at: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Gathers photos from concurrent `submit` calls into batches for a blocking `predict`.

    `predict` takes (B, 3, H, W) and returns (B, regions); `batching=False` sends every photo
    on its own (for benchmarks comparing the two).
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        batching: bool = True,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_wait_ms >= 0")
        self._predict = predict
        self._limit = max_batch if batching else 1
        self._max_wait = max_wait_ms / 1000 if batching else 0.0
        self._max_queue = max_queue
        self._observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self._in_flight: list[_Pending] = []
        self._batch_seconds: float | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._stopping = False

    @property
    def queue_depth(self) -> int:
        """Photos accepted and waiting for a batch (not those being computed)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Started and taking photos (False once `stop` has begun)."""
        return self._worker is not None and not self._stopping and not self._worker.done()

    async def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("the batcher is already started")
        self._stopping = False
        # Made here, not in __init__: asyncio objects belong to the loop that first uses them.
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Refuse new photos, answer every accepted one (result or exception), then stop."""
        if self._worker is None:
            return
        self._stopping = True
        assert self._wakeup is not None and self._executor is not None
        self._wakeup.set()
        try:
            await asyncio.shield(self._worker)
        except BaseException:
            if not self._worker.done():
                raise  # stop itself was cancelled; the drain goes on without it
            # The loop had died (cancelled with the event loop, or a bug) after failing its
            # photos; stopping is still a clean stop.
            if not self._worker.cancelled():
                log.exception("the batching loop failed")
        # Nothing is left for the thread; wait=False so a stuck model cannot block the loop.
        self._executor.shutdown(wait=False)
        self._worker = None

    async def __aenter__(self) -> MicroBatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        """One photo (3, H, W) -> its output row (regions,).

        Raises QueueFull at once when the queue is full, BatcherStopped when not running,
        ValueError for an array that is not three-dimensional, and whatever `predict` raised for the
        batch this photo was in.
        """
        (item,) = self._enqueue([pixels])
        return (await self._await([item]))[0]

    async def submit_many(self, photos: list[np.ndarray]) -> np.ndarray:
        """One request's photos -> (len(photos), regions), in order.

        All or nothing: QueueFull without enqueuing any when they do not all fit, and if one
        photo fails the others are withdrawn and the error is raised.
        """
        if not photos:
            raise ValueError("no photos")
        items = self._enqueue(photos)
        return np.stack(await self._await(items))

    def _enqueue(self, photos: list[np.ndarray]) -> list[_Pending]:
        if not self.running:
            raise BatcherStopped("the batcher is not running")
        for pixels in photos:
            if np.ndim(pixels) != 3:
                raise ValueError(f"a photo must be (3, H, W), got shape {np.shape(pixels)}")
        depth = len(self._queue)
        if depth + len(photos) > self._max_queue:
            raise QueueFull(self._retry_after(depth), depth)
        loop = asyncio.get_running_loop()
        items = [_Pending(np.asarray(pixels), loop.create_future()) for pixels in photos]
        self._queue.extend(items)
        assert self._wakeup is not None
        self._wakeup.set()
        return items

    async def _await(self, items: list[_Pending]) -> list[np.ndarray]:
        try:
            return await asyncio.gather(*(item.future for item in items))
        except BaseException:
            # The caller went away or one photo failed: free the slots of those still waiting
            # and tell the loop not to answer them. A batch already running is not disturbed.
            for item in items:
                item.future.cancel()
                self._discard(item)
            raise

    def _discard(self, item: _Pending) -> None:
        with contextlib.suppress(ValueError):  # already taken into a batch
            self._queue.remove(item)

    def _retry_after(self, depth: int) -> float:
        # Batches ahead of a new photo: the queue plus the one running, at the recent pace.
        batches = math.ceil(depth / self._limit) + 1
        seconds = batches * (self._batch_seconds or 0.0)
        return float(max(1, math.ceil(seconds)))

    async def _run(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._fill()
                batch = self._take()
                if batch:
                    await self._compute(batch)
        except BaseException as exc:
            # Cancelled with the loop, or a bug here: no accepted photo may be left hanging.
            error = BatcherStopped(f"the batcher stopped: {exc!r}")
            for item in [*self._in_flight, *self._queue]:
                if not item.future.done():
                    item.future.set_exception(error)
            self._queue.clear()
            raise

    async def _fill(self) -> None:
        """Wait until a full batch is waiting or the oldest photo has waited max_wait."""
        assert self._wakeup is not None
        # From the oldest photo, not from now: photos that queued behind a running batch have
        # already waited, and go at once.
        deadline = self._queue[0].enqueued_at + self._max_wait
        while self._queue and len(self._queue) < self._limit and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Up to max_batch waiting photos of the oldest one's shape; others wait their turn."""
        batch: list[_Pending] = []
        rest: deque[_Pending] = deque()
        shape = None
        for item in self._queue:
            if item.future.done():
                continue
            if shape is None:
                shape = item.pixels.shape
            if len(batch) < self._limit and item.pixels.shape == shape:
                batch.append(item)
            else:
                rest.append(item)
        self._queue = rest
        return batch

    async def _compute(self, batch: list[_Pending]) -> None:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        taken_at = time.monotonic()
        queue_seconds = [taken_at - item.enqueued_at for item in batch]
        # Kept if the loop is cancelled mid-batch, so that _run can fail these photos too.
        self._in_flight = batch
        try:
            rows = await loop.run_in_executor(
                self._executor, self._predict_stacked, [item.pixels for item in batch]
            )
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            for item, row in zip(batch, rows, strict=True):
                if not item.future.done():
                    item.future.set_result(row)
        self._in_flight = []
        compute_seconds = time.monotonic() - taken_at
        self._note_batch_time(compute_seconds + self._max_wait)
        try:
            self._observer.on_batch(len(batch), queue_seconds, compute_seconds)
        except Exception:
            log.exception("batch observer failed")  # metrics must not stop inference

    def _predict_stacked(self, photos: list[np.ndarray]) -> np.ndarray:
        out = np.asarray(self._predict(np.stack(photos)))
        if out.ndim < 1 or out.shape[0] != len(photos):
            raise ValueError(f"predict returned {out.shape} for a batch of {len(photos)}")
        return out

    def _note_batch_time(self, seconds: float) -> None:
        if self._batch_seconds is None:
            self._batch_seconds = seconds
        else:
            self._batch_seconds += _RECENT_WEIGHT * (seconds - self._batch_seconds)
