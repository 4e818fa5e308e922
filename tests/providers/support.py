"""Helpers for the kubernetes provider tests: a fast retry policy and waiting on watch delivery."""

from __future__ import annotations

from collections.abc import Callable

from autoscaler.providers.kubernetes._calls import RetryPolicy
from tests.support.waiting import until

# Retries and reconnects in milliseconds, so failure tests stay fast; Retry-After is capped at 1 s.
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


def fn_labels(name: str, **extra: str) -> dict[str, str]:
    """Labels OpenFaaS puts on a function Deployment, plus any scaling labels."""
    return {"faas_function": name, **extra}


async def eventually(condition: Callable[[], bool], *, timeout: float = 3.0, what: str = "condition") -> None:
    """Wait for something that arrives over a real watch stream; fail the test with `what` otherwise."""
    await until(condition, within=timeout, what=what)
