"""core/v1 Events about functions, aggregated as client-go's recorder does: a repeat bumps `count`.

The controller explains each scale in an Event (`kubectl describe deployment` shows them), and some
reasons repeat every tick (an invalid label, a failing read). Writing a new Event each time would
flood etcd; client-go's recorder instead patches the Event it made, raising `count` and
`lastTimestamp`, for as long as the series is recent (`EVENT_SERIES_WINDOW`). Events are best effort:
a failure is logged, never raised, so an Event can never fail a tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from autoscaler.errors import NotFoundError, ProviderError
from autoscaler.interfaces import FunctionRef
from autoscaler.providers._k8s_calls import RetryPolicy, call
from autoscaler.providers._k8s_objects import event_body, rfc3339

log = logging.getLogger("autoscaler.providers.kubernetes")

EVENT_SERIES_WINDOW = 600.0  # seconds within which a repeated event is aggregated
_MAX_SERIES = 1000

SeriesKey = tuple[str, str, str, str]  # (function, reason, message, type)
Create = Callable[[str, Any], Awaitable[Any]]  # (namespace, body): create_namespaced_event
Patch = Callable[[str, str, Any], Awaitable[Any]]  # (name, namespace, body): patch_namespaced_event


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
    # a series -> (the Event's name, count, when it began)
    _series: dict[SeriesKey, tuple[str, int, float]] = field(default_factory=dict, init=False)

    async def record(self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False) -> None:
        kind = "Warning" if warning else "Normal"
        key = (ref.key, reason, message, kind)
        now = time.time()
        try:
            series = self._series.get(key)
            if series is not None and now - series[2] < EVENT_SERIES_WINDOW:
                try:
                    await self._bump(ref, key, series, now)
                    return
                except NotFoundError:
                    pass  # expired or deleted by the cluster: start a new one
            await self._create(ref, key, reason=reason, message=message, warning=warning, now=now)
        except ProviderError as e:
            log.warning("could not record event %s on %s (%s): %s", reason, ref.key, message, e)

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
        if len(self._series) >= _MAX_SERIES:
            self._series = {k: v for k, v in self._series.items() if now - v[2] < EVENT_SERIES_WINDOW}
        self._series[key] = (str(body.metadata.name), 1, now)

    async def _bump(
        self, ref: FunctionRef, key: SeriesKey, series: tuple[str, int, float], now: float
    ) -> None:
        name, count, first = series
        patch = {"count": count + 1, "lastTimestamp": rfc3339(now)}
        await call(
            f"update event {key[1]} on {ref.key}",
            lambda: self.patch(name, ref.namespace, patch),
            policy=self.retry,
        )
        self._series[key] = (name, count + 1, first)
