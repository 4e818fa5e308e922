"""Waiting in tests for something another task, process or server does, with a bounded deadline.

Real parts answer in their own time (a watch event, a replica's readiness, an Event written just after
a scale), so a test polls for the state it expects and fails naming what never came.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(
    condition: Callable[[], bool], *, within: float, what: str | Callable[[], str], poll: float = 0.01
) -> float:
    """Poll `condition` until it holds; the monotonic time it did. After `within` seconds, fail with
    `what` (a callable is asked only then, so it can describe the state at the failure)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {within:g}s waiting for {detail}")
        await asyncio.sleep(poll)
    return time.monotonic()
