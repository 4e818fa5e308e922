"""core/v1 Events about functions, aggregated as client-go's recorder does, so a flap costs few objects.

The controller explains each scale in an Event (`kubectl describe deployment` shows them), and some
reasons repeat every tick (an invalid label, a failing read). Writing a new Event each time would
flood etcd, so this follows client-go's `EventCorrelator` (`tools/record/events_cache.go`):
- **identical** events (same function, reason, message and type) are one series: a repeat patches
  the Event it made, raising `count` and `lastTimestamp`, while the series is younger than
  `EVENT_SERIES_WINDOW`;
- **similar** events (same function, reason and type, other messages: a function flapping between
  up and down, or a message carrying changing numbers, "Scaled from 3 to 5 replicas: 212 rps") are
  counted too: once `AGGREGATE_MAX_EVENTS` distinct messages have come within
  `AGGREGATE_INTERVAL` of one another, each further one goes to one aggregate Event instead, its
  message "(combined from similar events): " plus the latest message, its `count` bumped (client-go's
  `EventAggregator`, 10 within 600 s). After a quiet `AGGREGATE_INTERVAL` the count starts again.
So one function and reason make at most `AGGREGATE_MAX_EVENTS` Event objects per series window,
however often it flaps. Both memories are LRU-bounded (`MAX_SERIES`, as client-go's 4,096-entry
caches, larger for 50,000 functions); a forgotten series only costs a new Event later.
Events are best effort: a failure is logged, never raised, so an Event can never fail a tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from autoscaler.errors import NotFoundError, ProviderError
from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes._calls import RetryPolicy, call
from autoscaler.providers.kubernetes._objects import EVENT_MESSAGE_LIMIT, event_body, rfc3339

log = logging.getLogger("autoscaler.providers.kubernetes")

EVENT_SERIES_WINDOW = 600.0  # seconds within which a repeated event is aggregated
AGGREGATE_MAX_EVENTS = 10  # distinct messages of one reason before they are combined (client-go)
AGGREGATE_INTERVAL = 600.0  # seconds since the last similar event before the count starts again
AGGREGATE_PREFIX = "(combined from similar events): "  # client-go's EventAggregatorByReasonMessageFunc
# Series (and groups of similar events) remembered at most, least recently used forgotten first:
# about 0.3 KiB each, so a few MiB at most.
MAX_SERIES = 16384

SeriesKey = tuple[str, str, str, str]  # (function, reason, message or the aggregate mark, type)
GroupKey = tuple[str, str, str]  # (function, reason, type)
Create = Callable[[str, Any], Awaitable[Any]]  # (namespace, body): create_namespaced_event
Patch = Callable[[str, str, Any], Awaitable[Any]]  # (name, namespace, body): patch_namespaced_event

_AGGREGATE = "\x00aggregate"  # the series key's message for a group's aggregate Event


@dataclass(slots=True)
class _Similar:
    """Distinct messages of one group seen lately (at most AGGREGATE_MAX_EVENTS), and when last."""

    messages: set[str]
    last: float


@dataclass(kw_only=True, slots=True)
class EventRecorder:
    """`record(ref, reason=..., message=..., warning=...)`, on the Deployment of the function.

    The API calls are the provider's (`create`, `patch`), so that its module shows every call it
    makes (`API_CALLS`); this class decides which to make, and retries them by `retry`.
    """

    create: Create
    patch: Patch
    retry: RetryPolicy
    component: str
    instance: str
    uid_of: Callable[[FunctionRef], str | None]
    clock: Callable[[], float] = time.time
    max_series: int = MAX_SERIES
    # a series -> (the Event's name, count, when it began); dict order is least recently used first
    _series: dict[SeriesKey, tuple[str, int, float]] = field(default_factory=dict, init=False)
    _groups: dict[GroupKey, _Similar] = field(default_factory=dict, init=False)

    async def record(self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False) -> None:
        kind = "Warning" if warning else "Normal"
        now = self.clock()
        if self._similar(ref, reason, message, kind, now):
            message, key = AGGREGATE_PREFIX + message, (ref.key, reason, _AGGREGATE, kind)
        else:
            key = (ref.key, reason, message, kind)
        try:
            series = self._series.pop(key, None)
            if series is not None and now - series[2] < EVENT_SERIES_WINDOW:
                self._series[key] = series  # most recently used
                try:
                    await self._bump(ref, key, series, now, message=message)
                    return
                except NotFoundError:
                    pass  # expired or deleted by the cluster: start a new one
            await self._create(ref, key, reason=reason, message=message, warning=warning, now=now)
        except ProviderError as e:
            log.warning("could not record event %s on %s (%s): %s", reason, ref.key, message, e)

    def _similar(self, ref: FunctionRef, reason: str, message: str, kind: str, now: float) -> bool:
        """Note `message` in its group; True once the group has had too many distinct ones lately."""
        key = (ref.key, reason, kind)
        group = self._groups.pop(key, None)
        if group is None or now - group.last > AGGREGATE_INTERVAL:
            group = _Similar(messages=set(), last=now)
        group.messages.add(message)
        group.last = now
        self._groups[key] = group
        _bound(self._groups, self.max_series)
        if len(group.messages) < AGGREGATE_MAX_EVENTS:
            return False
        group.messages.discard(message)  # kept below the threshold, as client-go's PopAny keeps it
        return True

    async def _create(
        self, ref: FunctionRef, key: SeriesKey, *, reason: str, message: str, warning: bool, now: float
    ) -> None:
        body = event_body(
            ref,
            uid=self.uid_of(ref),
            reason=reason,
            message=message,
            warning=warning,
            component=self.component,
            instance=self.instance,
            now=now,
        )
        await call(
            f"create event {reason} on {ref.key}",
            lambda: self.create(ref.namespace, body),
            policy=self.retry,
        )
        self._series.pop(key, None)
        self._series[key] = (str(body.metadata.name), 1, now)
        _bound(self._series, self.max_series)

    async def _bump(
        self, ref: FunctionRef, key: SeriesKey, series: tuple[str, int, float], now: float, *, message: str
    ) -> None:
        name, count, first = series
        patch: dict[str, Any] = {"count": count + 1, "lastTimestamp": rfc3339(now)}
        if key[2] == _AGGREGATE:
            patch["message"] = message[:EVENT_MESSAGE_LIMIT]  # the aggregate tells the latest one
        await call(
            f"update event {key[1]} on {ref.key}",
            lambda: self.patch(name, ref.namespace, patch),
            policy=self.retry,
        )
        self._series[key] = (name, count + 1, first)


def _bound(memory: dict[Any, Any], size: int) -> None:
    """Forget the least recently used entries past `size` (dicts keep insertion order)."""
    while len(memory) > size:
        del memory[next(iter(memory))]
