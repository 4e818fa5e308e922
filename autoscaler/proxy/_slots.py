"""Concurrency slots per replica: a function that declares a limit never gets more requests at once.

An OpenFaaS function with `max_inflight` answers 429 above it, and the caller has to guess when to
come back. Where the proxy knows the limit (our label `autoscaler.dev/max-inflight`, else the
`max_inflight` of the function's environment, where OpenFaaS users set it), it sends each replica at
most that many requests at once and queues the rest in arrival order, as Knative's activator and
queue-proxy queue above `containerConcurrency` (their "breaker"): a request takes the least busy
replica with a free slot; a released slot goes to the request that has waited longest, and a
changed replica set (the provider's watch) lets waiting requests onto new replicas. The queue is
bounded like the cold-start hold: `--max-held` waiting requests per function (429 with Retry-After
beyond it) and the hold timeout per request (504). Waiting requests are inside the request's
lifetime, so they count as in-flight load (`capacity` scaling) and as activity (no scale to zero).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from autoscaler.interfaces import FunctionInfo
from autoscaler.proxy._hold import FunctionState, HoldError
from autoscaler.spec import MAX_INFLIGHT, limit_source, parse_limit

log = logging.getLogger("autoscaler.proxy")


def concurrency_limit(state: FunctionState, info: FunctionInfo) -> int | None:
    """The function's declared limit per replica: our label, else its environment's `max_inflight`.

    Parsed once per (source, value); an invalid value is one warning and no limit, 0 is no limit.
    """
    if info.env_max_inflight is None and MAX_INFLIGHT not in info.labels:
        return None  # the common case: nothing declared, nothing to parse
    source = limit_source(info.labels, info.env_max_inflight)
    if source != state.limit_label:
        state.limit_label = source
        state.limit = None
        if source is not None:
            try:
                state.limit = parse_limit(*source)
            except ValueError as e:  # SpecError for the label
                log.warning("%s: forwarding %s without a concurrency limit", e, state.ref.key)
            else:
                log.debug(
                    "%s: concurrency limit %s per replica from its %s", state.ref.key, state.limit, source[0]
                )
    return state.limit


class Slots:
    """One function's busy slots per endpoint and its queue of requests waiting for one."""

    __slots__ = ("_busy", "_endpoints", "_limit", "_rr", "_waiters")

    def __init__(self, endpoints: Callable[[], list[str]]) -> None:
        self._endpoints = endpoints  # the function's ready endpoints right now
        self._busy: dict[str, int] = {}
        self._waiters: deque[asyncio.Future[str]] = deque()
        self._limit = 1
        self._rr = 0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(
        self, *, key: str, limit: int, deadline: float, max_queue: int, hold_timeout: float
    ) -> str:
        """The endpoint of a free slot, waiting in line for one; raises HoldError (429, 504)."""
        self._limit = limit
        if not self._waiters:
            endpoint = self._take(self._endpoints())
            if endpoint is not None:
                return endpoint
        if len(self._waiters) >= max_queue:
            raise HoldError(
                429,
                f"function {key} is at its concurrency limit ({limit} per replica) and already queues "
                f"{max_queue} requests (the hold limit); retry in a few seconds",
            )
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException as e:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # a slot handed over just as the request gave up
            else:
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if isinstance(e, TimeoutError):
                raise HoldError(
                    504,
                    f"function {key} had no free slot (concurrency limit {limit} per replica) within "
                    f"the hold timeout ({hold_timeout:g} s); retry later",
                ) from None
            raise

    def release(self, endpoint: str) -> None:
        """A request on `endpoint` is over: its slot goes to the request waiting longest."""
        left = self._busy.get(endpoint, 0) - 1
        if left > 0:
            self._busy[endpoint] = left
        else:
            self._busy.pop(endpoint, None)
        if self._waiters:
            self.dispatch()

    def dispatch(self) -> None:
        """Give free slots to waiting requests in arrival order (also when replicas change)."""
        waiters = self._waiters
        endpoints: list[str] | None = None
        while waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            if endpoints is None:
                endpoints = self._endpoints()
            endpoint = self._take(endpoints)
            if endpoint is None:
                return
            waiters.popleft().set_result(endpoint)

    def _take(self, endpoints: list[str]) -> str | None:
        """Count a request on the least busy endpoint below the limit (ties in turn), or None."""
        count = len(endpoints)
        best: str | None = None
        least = self._limit
        start = self._rr
        busy = self._busy
        for index in range(count):
            endpoint = endpoints[(start + index) % count]
            used = busy.get(endpoint, 0)
            if used < least:
                best, least = endpoint, used
                if used == 0:
                    break
        if best is None:
            return None
        self._rr = start + 1
        busy[best] = least + 1
        return best
