"""Kubernetes API failures as `autoscaler.errors`, and the retries worth making: the one mapping.

The control loop, the proxy and the leader election must never see a kubernetes-asyncio or aiohttp
exception: a raw library error escaping a tick would be handled nowhere. Every call the provider and
the elector make goes through `call()`, which retries what a retry can fix (5xx, 429 with its
Retry-After, timeouts, dropped connections, 409 conflicts) after the one back-off rule
(`policies.backoff`, jittered), a bounded number of times, and raises ProviderError / ConflictError /
NotFoundError (`raise ... from e`) with the API's own `Status.message` otherwise. The elector asks
for one attempt (`RetryPolicy(attempts=1)`): its own loop is the retry, on its lease's schedule.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.errors import ConflictError, NotFoundError, ProviderError
from policies.backoff import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one API call (and to reconnect a watch)."""

    attempts: int = 5  # tries per call, the first included
    base_delay: float = 0.2  # seconds before the first retry; doubles each time
    max_delay: float = 10.0  # cap of one backoff step
    max_retry_after: float = 30.0  # cap on a server's Retry-After

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(
                f"invalid RetryPolicy(attempts={self.attempts}, base_delay={self.base_delay}, "
                f"max_delay={self.max_delay}): need attempts >= 1 and 0 <= base_delay <= max_delay"
            )

    @property
    def schedule(self) -> Backoff:
        """The one back-off rule (`policies.backoff`) with these bounds, jitter in [d/2, d]."""
        return Backoff(self.base_delay, self.max_delay, spread=0.5)

    def backoff(self, failures: int) -> float:
        """Delay after `failures` consecutive failures (1 = the first): capped exponential, jittered."""
        return self.schedule.delay(max(1, failures), draw=random.random())


def status_message(e: ApiException) -> str:
    """The `message` of the Status body the API server sent, else the HTTP reason."""
    raw: Any = e.body
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return body[:300]
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])
    return str(e.reason or "no message")


def retry_after(e: BaseException) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), if the server sent one."""
    headers = getattr(e, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def wrap(e: BaseException, *, what: str) -> ProviderError:
    """One of our error kinds for any failure of `what` (a short description of the call)."""
    if isinstance(e, ProviderError):
        return e
    if isinstance(e, ApiException):
        status = int(e.status or 0)
        text = f"{what}: HTTP {status} {status_message(e)}"
        if status == 404:
            return NotFoundError(text, status=status)
        if status == 409:
            return ConflictError(text, status=status, retryable=True)
        if status in (401, 403):
            text += (
                " (check the service account's RBAC rules: see API_CALLS in autoscaler.providers.kubernetes)"
            )
        return ProviderError(text, status=status, retryable=status == 429 or status >= 500 or status == 0)
    if isinstance(e, TimeoutError):
        return ProviderError(f"{what}: timed out", retryable=True)
    if isinstance(e, aiohttp.ClientConnectorError):  # e.g. refused, unreachable, a name that does not resolve
        error = e.os_error
        why = os.strerror(error.errno) if error.errno else (error.strerror or type(error).__name__)
        return ProviderError(f"{what}: cannot connect to {e.host}:{e.port} ({why})", retryable=True)
    if isinstance(e, aiohttp.ClientError | OSError):
        return ProviderError(f"{what}: connection failed: {type(e).__name__}: {e}", retryable=True)
    return ProviderError(f"{what}: unexpected {type(e).__name__}: {e}", retryable=False)


async def call(
    what: str,
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    timeout: float | None = None,
) -> T:
    """Run `fn` with retries; raise a ProviderError (subclass) once retrying cannot help.

    `timeout` bounds each attempt on the event loop's clock, on top of the client's own request
    timeout (which a stalled connection can outlast); a timed-out attempt counts as a timeout.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout):
                return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            error = wrap(e, what=what)
            if not error.retryable:
                raise error from e
            if attempt == policy.attempts:
                if policy.attempts == 1:
                    raise error from e
                raise type(error)(
                    f"{error} (gave up after {attempt} attempts)", status=error.status, retryable=True
                ) from e
            hint = retry_after(e)
            delay = policy.backoff(attempt) if hint is None else min(hint, policy.max_retry_after)
            log.warning(
                "%s failed (attempt %d/%d), retrying in %.2fs: %s",
                what,
                attempt,
                policy.attempts,
                delay,
                error,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
