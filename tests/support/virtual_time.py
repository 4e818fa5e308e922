"""An asyncio event loop on virtual time, for tests whose point is a timeout of seconds or minutes.

The proxy's limits ship as an edge proxy sets them (a 60 s hold timeout, 75 s of keep-alive, 60 s
of send and body timeouts, 300 s for an upstream answer). Tested on the real clock they must be
shortened to fractions of a second, so the tests check other settings than the shipped ones, cost
wall time, and fail when the machine is loaded. On this loop they are tested as shipped, in
milliseconds, with real sockets and real HTTP servers on loopback:

- `loop.time()` is virtual: it starts at `START` and moves only when the loop has nothing to do:
  no callback ready and no I/O ready on any socket, checked once more after `settle` real seconds
  (for the kernel, or a peer outside the loop, to deliver what is in flight). Then it jumps to the
  earliest timer (`asyncio.sleep`, `asyncio.timeout`, `call_at`), which fires at its exact time.
- While work runs in an executor thread (`run_in_executor`, `getaddrinfo`), time follows the real
  clock instead: a thread's result is not missed because time raced past the caller's timeout.
- Everything on the loop sees the same clock: the proxy, aiohttp's client and server, the fake
  provider's replica start-up, the test's own sleeps and timeouts. `time.time()` and
  `time.monotonic()` are not virtual; a timeout measured with them is not covered.
- A peer in another process or thread (not an executor call) that takes longer than `settle` to
  answer is not waited for: time may jump past it. Tests with such peers stay on the real clock.

This is the "fake event-loop clock" of issue 11, item 4, written for loopback I/O. looptime (PyPI)
fast-forwards the same way but covers the test function only, not its async fixtures (the proxy is
started in one), so timers armed on the real clock would then sit in another time line.

A test opts in with the `virtual_time` marker. A conftest offers it by registering `MARKER_HELP`
and answering pytest-asyncio's `pytest_asyncio_loop_factories` hook with `loop_factories` (see
tests/proxy/conftest.py); the test's async fixtures then run on the same loop and clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, TypeVarTuple

import pytest

MARKER = "virtual_time"
MARKER_HELP = f"{MARKER}: runs on tests.support.virtual_time.VirtualTimeLoop (timeouts at shipped values)"
START = 1000.0  # loop time when the loop is made: sums and differences of whole seconds stay exact
SETTLE = 0.002  # real seconds without any I/O before virtual time may move

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class _IdleSelector(selectors.BaseSelector):
    """The platform's selector, except that an idle wait moves virtual time instead of real time."""

    def __init__(self, clock: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # asyncio asks for a wait only when no callback is ready; `timeout` then ends at its next timer.
        if timeout is None or timeout <= 0:
            return self._real.select(timeout)  # no timer at all: wait for I/O, as any loop does
        clock = self._clock
        if clock.threads:
            began = time.monotonic()
            events = self._real.select(timeout)
            clock.advance(min(timeout, time.monotonic() - began))
            return events
        events = self._real.select(clock.settle)
        if not events:
            clock.advance(timeout)  # nothing in flight: straight to the next timer
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` jumps over idle waits (see the module docstring)."""

    def __init__(self, *, start: float = START, settle: float = SETTLE) -> None:
        self.now = start
        self.settle = settle
        self.threads = 0  # executor calls under way
        self.jumps = 0  # times virtual time moved over an idle wait
        super().__init__(_IdleSelector(self))

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.jumps += 1

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[*_Ts], _T],
        *args: *_Ts,
    ) -> asyncio.Future[_T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: asyncio.Future[Any]) -> None:
        self.threads -= 1


def loop_factories(item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """For `pytest_asyncio_loop_factories`: this loop for a test marked `virtual_time`, else asyncio's."""
    if item.get_closest_marker(MARKER) is not None:
        return {MARKER: VirtualTimeLoop}
    return {"asyncio": asyncio.new_event_loop}


def virtual_loop() -> VirtualTimeLoop:
    """The running loop, which must be virtual (a test relying on exact times says so)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop), "this test needs the virtual_time marker"
    return loop
