"""The micro-batcher: batches form, every caller gets its own row, overload and failures are
contained, and stopping answers every accepted photo."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from serving.batching import BatcherStopped, BatchObserver, MicroBatcher, QueueFull

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def photo(value: float, size: int = 4) -> np.ndarray:
    return np.full((3, size, size), value, dtype=np.float32)


def expected(value: float, size: int = 4) -> np.ndarray:
    total = value * 3 * size * size
    return np.array([total, -total], dtype=np.float32)


class Recorder:
    """A predict that records each batch (the values of its photos) and answers (sum, -sum)
    per photo, after `delay` seconds, once `gate` is open."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.entered = threading.Event()
        self.batches: list[list[float]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append([float(p.flat[0]) for p in batch])
        self.entered.set()
        if self.gate is not None and not self.gate.wait(timeout=5):
            raise TimeoutError("the test never opened the gate")
        time.sleep(self.delay)
        sums = batch.sum(axis=(1, 2, 3))
        return np.stack([sums, -sums], axis=1)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


class ObserverRecorder(BatchObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[float], float]] = []

    def on_batch(self, size: int, queue_seconds: list[float], compute_seconds: float) -> None:
        self.calls.append((size, queue_seconds, compute_seconds))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


async def test_concurrent_submits_are_batched() -> None:
    predict, observer = Recorder(delay=0.02), ObserverRecorder()
    async with MicroBatcher(predict, max_batch=8, max_wait_ms=5, observer=observer) as batcher:
        rows = await asyncio.gather(*(batcher.submit(photo(i)) for i in range(32)))
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row, expected(i))
    assert sum(predict.sizes) == 32
    assert max(predict.sizes) > 1
    assert max(predict.sizes) <= 8
    assert [size for size, _, _ in observer.calls] == predict.sizes
    for size, queue_seconds, compute_seconds in observer.calls:
        assert len(queue_seconds) == size and min(queue_seconds) >= 0
        assert compute_seconds >= 0.01  # the 20 ms sleep is compute, not queue time


async def test_batching_off_sends_one_photo_at_a_time() -> None:
    predict = Recorder(delay=0.005)
    async with MicroBatcher(predict, max_batch=8, batching=False) as batcher:
        rows = await asyncio.gather(*(batcher.submit(photo(i)) for i in range(8)))
    assert predict.sizes == [1] * 8
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row, expected(i))


async def test_lone_photo_is_not_held_for_a_full_batch() -> None:
    async with MicroBatcher(Recorder(), max_batch=16, max_wait_ms=20) as batcher:
        started = time.monotonic()
        row = await asyncio.wait_for(batcher.submit(photo(1)), timeout=2)
        assert time.monotonic() - started < 0.5
    np.testing.assert_allclose(row, expected(1))


async def test_full_batch_goes_without_waiting_out_max_wait() -> None:
    predict = Recorder()
    async with MicroBatcher(predict, max_batch=4, max_wait_ms=10_000) as batcher:
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(photo(i)) for i in range(4))), timeout=3
        )
        assert time.monotonic() - started < 2
    assert predict.sizes == [4]


async def test_submit_many_returns_rows_in_order() -> None:
    async with MicroBatcher(Recorder(), max_batch=3) as batcher:
        rows = await batcher.submit_many([photo(i) for i in range(7)])
    np.testing.assert_allclose(rows, np.stack([expected(i) for i in range(7)]))


async def test_full_queue_refuses_at_once_and_recovers() -> None:
    gate = threading.Event()
    predict = Recorder(gate=gate)
    async with MicroBatcher(predict, max_batch=2, max_wait_ms=1, max_queue=4) as batcher:
        try:
            first = asyncio.create_task(batcher.submit(photo(0)))
            await wait_until(predict.entered.is_set)  # the model is busy with photo 0
            waiting = [asyncio.create_task(batcher.submit(photo(i))) for i in range(1, 4)]
            await wait_until(lambda: batcher.queue_depth == 3)

            # All or nothing: two photos do not fit in the one free slot.
            with pytest.raises(QueueFull) as refused:
                await asyncio.wait_for(batcher.submit_many([photo(8), photo(9)]), timeout=1)
            assert refused.value.retry_after >= 1
            assert batcher.queue_depth == 3

            waiting.append(asyncio.create_task(batcher.submit(photo(4))))
            await wait_until(lambda: batcher.queue_depth == 4)
            started = time.monotonic()
            with pytest.raises(QueueFull) as refused:
                await asyncio.wait_for(batcher.submit(photo(5)), timeout=1)
            assert time.monotonic() - started < 0.5
            assert refused.value.retry_after >= 1
            assert batcher.queue_depth == 4
        finally:
            gate.set()
        rows = await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=5)
        for i, row in enumerate(rows):
            np.testing.assert_allclose(row, expected(i))
        assert batcher.queue_depth == 0
        np.testing.assert_allclose(await batcher.submit(photo(6)), expected(6))
    assert 5 not in {v for batch in predict.batches for v in batch}


async def test_failing_batch_fails_its_own_callers_only() -> None:
    poison = -1.0

    class Poisoned(Recorder):
        def __call__(self, batch: np.ndarray) -> np.ndarray:
            out = super().__call__(batch)
            if (batch == poison).any():
                raise RuntimeError("model failed")
            return out

    predict = Poisoned()
    async with MicroBatcher(predict, max_batch=4, max_wait_ms=5) as batcher:
        values = [1.0, poison, 2.0, 3.0, 4.0, 5.0]
        results = await asyncio.gather(
            *(batcher.submit(photo(v)) for v in values), return_exceptions=True
        )
        poisoned = {v for batch in predict.batches if poison in batch for v in batch}
        for value, result in zip(values, results, strict=True):
            if value in poisoned:
                assert isinstance(result, RuntimeError)
            else:
                np.testing.assert_allclose(result, expected(value))
        assert batcher.running
        np.testing.assert_allclose(await batcher.submit(photo(7)), expected(7))


async def test_cancelled_callers_do_not_break_others() -> None:
    gate = threading.Event()
    predict = Recorder(gate=gate)
    # A long max_wait so that the first two photos form one batch.
    async with MicroBatcher(predict, max_batch=2, max_wait_ms=200) as batcher:
        try:
            a = asyncio.create_task(batcher.submit(photo(1)))
            b = asyncio.create_task(batcher.submit(photo(2)))
            await wait_until(predict.entered.is_set)
            c = asyncio.create_task(batcher.submit(photo(3)))
            d = asyncio.create_task(batcher.submit(photo(4)))
            await wait_until(lambda: batcher.queue_depth == 2)
            b.cancel()  # in the running batch
            c.cancel()  # still waiting: its slot is freed at once
            await wait_until(lambda: batcher.queue_depth == 1, timeout=1)
        finally:
            gate.set()
        np.testing.assert_allclose(await asyncio.wait_for(a, timeout=5), expected(1))
        np.testing.assert_allclose(await asyncio.wait_for(d, timeout=5), expected(4))
        for task in (b, c):
            with pytest.raises(asyncio.CancelledError):
                await task
        np.testing.assert_allclose(await batcher.submit(photo(5)), expected(5))
    assert predict.batches[0] == [1.0, 2.0]
    assert 3.0 not in {v for batch in predict.batches for v in batch}


async def test_stop_answers_every_accepted_photo() -> None:
    predict = Recorder(delay=0.02)
    batcher = MicroBatcher(predict, max_batch=4, max_wait_ms=50)
    await batcher.start()
    tasks = [asyncio.create_task(batcher.submit(photo(i))) for i in range(10)]
    await asyncio.sleep(0)  # the submits run up to their wait
    assert batcher.queue_depth > 0
    await asyncio.wait_for(batcher.stop(), timeout=5)
    assert not batcher.running
    for i, task in enumerate(tasks):
        assert task.done()
        np.testing.assert_allclose(task.result(), expected(i))
    assert sum(predict.sizes) == 10
    with pytest.raises(BatcherStopped):
        await batcher.submit(photo(0))


async def test_mixed_shapes_are_batched_apart() -> None:
    predict = Recorder()
    async with MicroBatcher(predict, max_batch=8, max_wait_ms=5) as batcher:
        sizes = [4, 8, 4, 8, 6]
        rows = await asyncio.gather(
            *(batcher.submit(photo(i, size)) for i, size in enumerate(sizes))
        )
        for i, (size, row) in enumerate(zip(sizes, rows, strict=True)):
            np.testing.assert_allclose(row, expected(i, size))
        with pytest.raises(ValueError):
            await batcher.submit(np.zeros((4, 4), dtype=np.float32))
    assert sum(predict.sizes) == 5
