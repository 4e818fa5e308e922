"""Helpers for the kubernetes provider tests: a fast retry policy and waiting on watch delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from autoscaler.providers._k8s_calls import RetryPolicy

# Retries and reconnects in milliseconds, so failure tests stay fast; Retry-After is capped at 1 s.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


def fn_labels(name: str, **extra: str) -> dict[str, str]:
    """Labels OpenFaaS puts on a function Deployment, plus any scaling labels."""
    return {"faas_function": name, **extra}


async def eventually(condition: Callable[[], bool], *, timeout: float = 3.0, what: str = "condition") -> None:
    """Wait for something that arrives over a real watch stream; fail the test with `what` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
