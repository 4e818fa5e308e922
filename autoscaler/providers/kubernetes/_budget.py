"""The API write budget: a client-side token bucket on writes, served by priority, then in order.

A burst of decisions over thousands of functions would otherwise send thousands of writes to the API
server at once; client-go controllers cap their clients with a token bucket (`flowcontrol`: QPS 5,
burst 10 by default; controller-runtime raises it to 20 / 30). This is that bucket for every write
the provider makes, with one difference: a write waiting for a token is served by its priority, so
when the budget is spent a wake-up (a function at zero asked for) goes first, then a scale-up, then a
scale-down, and Events and routine last-active marks last. Writes of the same priority go in the
order they asked. Reads never take a token: they are answered by the watch cache.

The clock and the sleep are injectable so a test can drain thousands of writes in virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum

_EPSILON = 1e-9  # a token short by a float rounding error is a token


class Priority(IntEnum):
    """Lower goes first."""

    WAKE = 0  # scale from zero, and the last-active mark a wake-up writes before it
    UP = 1
    DOWN = 2
    LAST = 3  # Events and routine last-active marks


def scale_priority(current: int | None, desired: int) -> Priority:
    """How urgent a scale from `current` (None: unknown to the cache) to `desired` replicas is."""
    if current is None:
        return Priority.UP
    if current == 0 and desired > 0:
        return Priority.WAKE
    return Priority.UP if desired > current else Priority.DOWN


class WriteBudget:
    """`await take(priority)` before each write: at most `burst` at once, then `qps` per second.

    `qps <= 0` turns the budget off (every take returns at once), as client-go does for a negative QPS.
    """

    def __init__(
        self,
        *,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if qps > 0 and burst < 1:
            raise ValueError(f"invalid WriteBudget(qps={qps}, burst={burst}): burst must be >= 1")
        self.qps = qps
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._pump: asyncio.Task[None] | None = None
        self.taken = 0  # tokens handed out, for tests and the benchmark

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiting if not future.done())

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    async def take(self, priority: Priority) -> None:
        if self.qps <= 0:
            self.taken += 1
            return
        self._refill()
        if not self._waiting and self._tokens >= 1 - _EPSILON:
            self._tokens -= 1
            self.taken += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (int(priority), next(self._order), future))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve(), name="API write budget")
        await future  # a cancelled waiter is skipped by the pump

    async def _serve(self) -> None:
        while self._waiting:
            self._refill()
            if self._tokens < 1 - _EPSILON:
                await self._sleep((1 - self._tokens) / self.qps)
                continue
            _, _, future = heapq.heappop(self._waiting)
            if future.done():
                continue  # its caller gave up
            self._tokens -= 1
            self.taken += 1
            future.set_result(None)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
