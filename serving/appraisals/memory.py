"""The memory that uploads' decoded photos may hold at once, shared by every request.

A photo of a few hundred kilobytes can decode to hundreds of megabytes, and an upload keeps its
decoded photos from decoding until they are stored, after judgement. The decode slots
(`touchstone.imaging`) bound how many decodes run at once, not how many decoded photos are
held: 32 uploads of 50 MP photos held 7.5 GiB. So before decoding anything, a request reserves
what its photos will take, reckoned from their headers, and waits, on the event loop and
without holding a thread, until the budget has room; it gives the memory back when it is done
with the pixels, whatever happened. Requests are served in the order they came, so a large one
is not starved by a stream of small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from touchstone.imaging import DEFAULT_MAX_PIXELS, memory_bytes

# What a pixel of a photo's decode (`touchstone.imaging.reduced_pixels`: a JPEG decodes only
# 1/factor^2 of its pixels, other formats whole before they are reduced) costs over a request's
# life: decoding peaks at 8 bytes a pixel (an RGBA PNG's conversion to RGB, a turned JPEG's
# copy; benchmarks/hostile_decode.py); the reduced photo is then held in RGB at 4 a pixel while
# the quality checks take a grey copy and its Laplacian, no larger. Nothing is re-encoded.
BYTES_PER_PIXEL = 12
# What the store's metadata strip costs a pixel of a HEIC photo, which it decodes whole again to
# keep it as PNG: the decode (at most 8, as above) and the PNG encoder's buffers.
STRIP_BYTES_PER_PIXEL = 12
# The share of the machine's (or container's) memory uploads' photos may take together.
MEMORY_SHARE = 0.25


class OverBudget(Exception):
    """A reservation larger than the whole budget: it could never be granted."""


def default_budget_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """A quarter of the memory, and at least enough for one photo at the pixel limit (else a
    photo the service accepts could never be decoded): a HEIC, decoded whole, reduced (to a
    quarter at most) and decoded whole again by the store's strip."""
    per_pixel = BYTES_PER_PIXEL * 5 / 4 + STRIP_BYTES_PER_PIXEL
    return max(int(memory_bytes() * MEMORY_SHARE), int(max_pixels * per_pixel))


class MemoryBudget:
    """Bytes granted to requests out of `total`, first come first served."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the decode memory budget must be at least 1 byte")
        self.total = total
        self.free = total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold `size` bytes of the budget while the block runs; wait while they do not fit,
        or while an earlier request waits. OverBudget when `size` is over the whole budget."""
        if size > self.total:
            raise OverBudget(f"{size} bytes asked of a budget of {self.total}")
        if self._waiting or size > self.free:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (size, granted)
            self._waiting.append(entry)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._give_back(size)  # granted as the request was cancelled
                else:
                    with contextlib.suppress(ValueError):
                        self._waiting.remove(entry)
                    self._grant()  # it may have been first in line, holding others back
                raise
        else:
            self.free -= size
        try:
            yield
        finally:
            self._give_back(size)

    def _give_back(self, size: int) -> None:
        self.free += size
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            size, granted = self._waiting.popleft()
            if granted.done():  # cancelled while waiting: its task removes nothing more
                continue
            self.free -= size
            granted.set_result(None)


_budget = MemoryBudget(default_budget_bytes())


def set_budget_bytes(total: int) -> None:
    """Size the process-wide budget (`touchstone serve` calls this once at start, before any
    request)."""
    global _budget
    _budget = MemoryBudget(total)


def process_budget() -> MemoryBudget:
    """The budget every request of this process reserves from."""
    return _budget
