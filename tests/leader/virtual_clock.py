"""A virtual clock for election candidates: time moves only while every candidate sleeps on it.

The lease's timing is what the election tests are about, and it is seconds long; the calls to the fake
API server are real HTTP and take real milliseconds. Each candidate gets this clock's `time` and a
`sleep` bound to its name (`LeaderElector(clock=..., sleep=...)`). The test moves time with
`run_until` / `run_for`: once every actor (a running candidate, or a leader's work that sleeps on the
clock) is parked in a sleep, time jumps to the earliest wake-up, the sleepers due then wake, and the
clock waits in real time, bounded, until every actor is parked again. A lease expiry costs
milliseconds, and the order and times of events are exact: no scheduling slack in the assertions.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable

# Consecutive loop iterations for which every actor must be asleep: a task created by a waking
# actor (a leader's work) gets to run, and to join, before time moves on.
_QUIET_ROUNDS = 5


class VirtualClock:
    """`clock.time()` for the elector's clock, `clock.sleeper(name)` for its sleep."""

    def __init__(self, start: float = 1000.0, *, settle_within: float = 10.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, str, asyncio.Future[None]]] = []  # a heap by wake-up
        self._order = itertools.count()
        self._actors: set[str] = set()
        self._settle_within = settle_within  # real seconds an actor may stay busy (one HTTP call)

    def time(self) -> float:
        return self.now

    def join(self, actor: str) -> None:
        """From now on time waits for `actor` to sleep before it moves."""
        self._actors.add(actor)

    def leave(self, actor: str) -> None:
        self._actors.discard(actor)

    def sleeper(self, actor: str) -> Callable[[float], Awaitable[None]]:
        async def sleep(seconds: float) -> None:
            wake = asyncio.get_running_loop().create_future()
            heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), actor, wake))
            await wake  # a cancelled sleep cancels `wake`, which then counts as awake

        return sleep

    def _asleep(self) -> set[str]:
        return {actor for _, _, actor, wake in self._sleepers if not wake.done()}

    async def settle(self) -> None:
        """Wait, in real time, until every actor is parked in a sleep on this clock."""
        deadline = time.monotonic() + self._settle_within
        quiet = 0
        while quiet < _QUIET_ROUNDS:
            quiet = quiet + 1 if self._actors <= self._asleep() else 0
            if time.monotonic() > deadline:
                busy = sorted(self._actors - self._asleep())
                raise AssertionError(f"at virtual time {self.now:g}, {busy} never went back to sleep")
            await asyncio.sleep(0 if quiet else 0.001)

    def next_wakeup(self) -> float | None:
        while self._sleepers and self._sleepers[0][3].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def step(self) -> None:
        """Jump to the earliest wake-up, wake everyone due then, and settle again."""
        await self.settle()
        wakeup = self.next_wakeup()
        if wakeup is None:
            raise AssertionError(f"at virtual time {self.now:g} nobody sleeps: time cannot move")
        self.now = max(self.now, wakeup)
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, _, wake = heapq.heappop(self._sleepers)
            if not wake.done():
                wake.set_result(None)
        await self.settle()

    async def run_until(self, condition: Callable[[], bool], *, within: float, what: str) -> float:
        """Move time until `condition` holds, checked at every wake-up; the virtual time it did."""
        limit = self.now + within
        await self.settle()
        while not condition():
            wakeup = self.next_wakeup()
            if wakeup is None or wakeup > limit:
                raise AssertionError(f"{what} did not happen within {within:g} virtual seconds")
            await self.step()
        return self.now

    async def run_for(self, seconds: float, *, check: Callable[[], None] = lambda: None) -> None:
        """Move time `seconds` on, calling `check` at every wake-up on the way."""
        end = self.now + seconds
        await self.settle()
        check()
        while (wakeup := self.next_wakeup()) is not None and wakeup <= end:
            await self.step()
            check()
        self.now = max(self.now, end)
