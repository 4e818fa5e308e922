"""Holding requests across a cold start: one wake-up per function, released in arrival order.

When a function has no ready replica, its requests wait here instead of failing (invariant 3). The
first one starts a single wake-up that every later one shares: mark the function active, scale it to
max(1, min) if it is at zero, poke the control loop, then wait for readiness from the provider's
watch. Waiters are released in the order they arrived, because the shared future runs its callbacks
in registration order. Limits: `max_held` waiters per function (429), `hold_timeout` per request (504).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from autoscaler.errors import AutoscalerError, NotFoundError, ProviderError, SpecError
from autoscaler.interfaces import FunctionRef, Provider
from autoscaler.proxy._metrics import FunctionStats
from autoscaler.spec import parse_labels
from autoscaler.tasks import Background

if TYPE_CHECKING:
    from autoscaler.proxy._slots import Slots

log = logging.getLogger("autoscaler.proxy")


class HoldError(AutoscalerError):
    """A held request cannot be forwarded; `status` and the message go back to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FunctionState:
    """Per-function state of the proxy: counters, the current wake-up, the round-robin cursor, and
    the concurrency limit with its slots when the function declares one."""

    __slots__ = ("limit", "limit_label", "marking", "ref", "rr", "slots", "stats", "wake", "woken_at")

    def __init__(self, ref: FunctionRef) -> None:
        self.ref = ref
        self.stats = FunctionStats(ref)
        self.wake: asyncio.Future[HoldError | None] | None = None
        self.woken_at = float("-inf")  # loop time of the last wake-up this proxy started
        self.marking = False  # a mark_active call is under way
        self.rr = 0
        self.limit_label: tuple[str, str] | None = None  # (where, raw value) `limit` was parsed from
        self.limit: int | None = None
        self.slots: Slots | None = None


def wake_replicas(labels: Mapping[str, str]) -> int:
    """max(1, com.openfaas.scale.min); with invalid labels the function still wakes, with one replica."""
    try:
        return parse_labels(labels).wake_replicas
    except SpecError as e:
        log.warning("waking with 1 replica: %s", e)
        return 1


class ColdStarts:
    """Starts shared wake-ups and parks requests until their function is ready."""

    def __init__(
        self,
        *,
        provider: Provider,
        hold_timeout: float,
        max_held: int,
        background: Background,
        on_wake: Callable[[FunctionRef], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self._provider = provider
        self._hold_timeout = hold_timeout
        self._max_held = max_held
        self._background = background
        self._on_wake = on_wake
        self._clock = clock

    def admit(self, state: FunctionState) -> None:
        """Raise HoldError (429) when the function holds as many requests as it may."""
        if state.stats.held >= self._max_held:
            state.stats.reject("hold_limit")
            raise HoldError(
                429,
                f"function {state.ref.key} is starting and already holds {self._max_held} requests "
                "(the hold limit); retry in a few seconds",
            )

    async def hold(self, state: FunctionState, *, deadline: float) -> None:
        """Wait until `state`'s function is ready, or raise HoldError (429, 503, 504, 404)."""
        stats = state.stats
        self.admit(state)
        wake = state.wake
        if wake is None or wake.done():
            wake = state.wake = asyncio.get_running_loop().create_future()
            self._background.spawn(self._wake(state, wake), name=f"wake {state.ref.key}")
        stats.held += 1
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await asyncio.shield(wake)
        except TimeoutError:
            stats.hold_timeouts += 1
            raise HoldError(
                504,
                f"function {state.ref.key} did not become ready within the hold timeout "
                f"({self._hold_timeout:g} s); it may still be starting, retry later",
            ) from None
        finally:
            stats.held -= 1
        if outcome is not None:
            raise outcome

    async def _wake(self, state: FunctionState, wake: asyncio.Future[HoldError | None]) -> None:
        ref = state.ref
        outcome: HoldError | None = None
        loop = asyncio.get_running_loop()
        try:
            info = self._provider.get(ref)
            if info is None:
                raise NotFoundError(f"function {ref.key} disappeared while waking it")
            # Mark first: a scale-to-zero racing this wake-up then sees a fresh last-active time.
            await self._provider.mark_active(ref, self._clock())
            if info.replicas <= 0:
                replicas = wake_replicas(info.labels)
                held = state.stats.held
                log.info("waking %s: scaling 0 -> %d for %d held request(s)", ref.key, replicas, held)
                if await self._provider.wake(ref, replicas):
                    state.stats.wakeups += 1
                state.woken_at = loop.time()
            self._poke(ref)
            # Wait from the watch; later arrivals extend the wait for as long as anyone is held.
            while not await self._provider.wait_ready(ref, self._hold_timeout):
                if state.stats.held == 0:
                    break
            # Endpoints lag readiness: connect errors in the next moments are retried (see _proxy).
            state.woken_at = loop.time()
        except NotFoundError as e:
            outcome = HoldError(404, f"function {ref.key} not found while waking it: {e}")
        except ProviderError as e:
            log.error("wake-up of %s failed: %s", ref.key, e)
            outcome = HoldError(503, f"function {ref.key} could not be woken: {e}; retry later")
        except asyncio.CancelledError:
            outcome = HoldError(503, f"the proxy is shutting down before {ref.key} became ready; retry")
            raise
        finally:
            if not wake.done():
                wake.set_result(outcome)

    def _poke(self, ref: FunctionRef) -> None:
        if self._on_wake is None:
            return
        try:
            self._on_wake(ref)
        except Exception:
            log.exception("on_wake callback failed for %s", ref.key)
