"""The callbacks a provider calls when a function's object changes: one rule for every provider.

`Provider.subscribe` is how the loop hears of a wake-up (an annotation, a scale) without polling.
A callback runs inside the provider's own upkeep (a watch handler, a replica's state change), so one
that raises must neither stop that upkeep nor keep the other callbacks from running: it is logged,
with the function it was called for, and the next one runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autoscaler.interfaces import FunctionRef

log = logging.getLogger("autoscaler.providers")


class Subscribers:
    """`add(callback)`; `notify(ref)` calls each in the order added."""

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: list[Callable[[FunctionRef], None]] = []

    def add(self, callback: Callable[[FunctionRef], None]) -> None:
        self._callbacks.append(callback)

    def notify(self, ref: FunctionRef) -> None:
        for callback in list(self._callbacks):
            try:
                callback(ref)
            except Exception:
                log.exception("subscriber %r failed for %s; other subscribers still run", callback, ref.key)
