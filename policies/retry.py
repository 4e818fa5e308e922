"""When an asynchronous call is tried again, and how long it waits first: a pure decision.

The queue-worker asks this after every attempt. Keeping it free of clocks and I/O lets the schedule be
tested step by step on virtual time, and the same rule serves function calls (OpenFaaS Pro's
defaults: 10 attempts, 10 s initial wait doubling up to 120 s, codes 429, 502, 500, 504, 408) and
callback deliveries (their own, shorter schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.backoff import Backoff

# OpenFaaS Pro's queue-worker defaults (queueWorkerPro in the faas-netes chart).
DEFAULT_ATTEMPTS = 10
DEFAULT_MIN_WAIT = 10.0
DEFAULT_MAX_WAIT = 120.0
DEFAULT_CODES: frozenset[int] = frozenset({429, 502, 500, 504, 408})
# A status for "no HTTP answer at all" (connection refused, reset, timeout): always worth a retry.
NO_ANSWER = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry; `attempts` counts the first try too."""

    attempts: int = DEFAULT_ATTEMPTS
    min_wait: float = DEFAULT_MIN_WAIT
    max_wait: float = DEFAULT_MAX_WAIT
    codes: frozenset[int] = field(default=DEFAULT_CODES)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (got {self.attempts})")
        if self.min_wait < 0 or self.max_wait < 0:
            raise ValueError("waits must not be negative")
        if self.max_wait < self.min_wait:
            raise ValueError(f"max_wait {self.max_wait:g}s is below min_wait {self.min_wait:g}s")


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """`retry` with the earliest time of the next attempt (`at`), or done with the reason."""

    retry: bool
    at: float  # unix time of the next attempt (equal to `now` when not retrying)
    delay: float
    reason: str


def backoff(policy: RetryPolicy, *, attempt: int) -> float:
    """Wait before attempt `attempt + 1`: min_wait doubled per earlier retry, capped at max_wait."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1 (got {attempt})")
    return Backoff(first=policy.min_wait, maximum=policy.max_wait).step(attempt)


def decide(policy: RetryPolicy, *, attempt: int, status: int, now: float) -> RetryDecision:
    """After attempt number `attempt` (1-based) ended with `status` (NO_ANSWER: no HTTP answer)."""
    retryable = status == NO_ANSWER or status in policy.codes
    what = "no answer" if status == NO_ANSWER else f"status {status}"
    if not retryable:
        return RetryDecision(False, now, 0.0, f"{what} is final (retried: {_codes(policy)})")
    if attempt >= policy.attempts:
        return RetryDecision(False, now, 0.0, f"{what} after the last of {policy.attempts} attempts")
    delay = backoff(policy, attempt=attempt)
    reason = f"{what} on attempt {attempt} of {policy.attempts}: retry in {delay:g}s"
    return RetryDecision(True, now + delay, delay, reason)


def _codes(policy: RetryPolicy) -> str:
    return ",".join(str(code) for code in sorted(policy.codes)) or "none"
