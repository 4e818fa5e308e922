"""How many calls of one function the queue-worker runs at once: start low, raise on success, cut on 429s.

A function with `max_inflight` answers 429 once it is full, and its replica count changes under the
worker; a fixed concurrency either wastes the function's capacity or hammers it with calls that come
back as retries. This is additive increase, multiplicative decrease on the function's own answers:
one more slot after a full round of successes with the current limit in use, half the slots after a
second 429 at the same limit, never above the worker's ceiling (`--max-inflight`) nor below one. It
is event-driven and pure: the worker feeds it each call's status.
"""

from __future__ import annotations

from dataclasses import dataclass

THROTTLED = 429
CUT_AFTER = 2  # 429s at one limit before it is halved (one alone can be a race between two calls)


@dataclass(frozen=True, slots=True)
class Concurrency:
    limit: int = 1
    streak: int = 0  # successes in a row with the limit in use
    throttled: int = 0  # 429s since the limit last changed


def after_call(state: Concurrency, *, status: int, ceiling: int, busy: int) -> Concurrency:
    """The limit after one call ended with `status` (0: no answer); `ceiling` is the hard bound and
    `busy` the calls that were running when it ended, itself included."""
    limit = max(1, min(state.limit, ceiling))
    if limit != state.limit:
        state = Concurrency(limit=limit)  # the ceiling moved: start counting afresh
    if status == THROTTLED:
        if state.throttled + 1 >= CUT_AFTER:
            return Concurrency(limit=max(1, limit // 2))
        return Concurrency(limit=limit, throttled=state.throttled + 1)
    if 200 <= status < 400:
        if busy < limit:
            # The limit was not reached, so this success says nothing about one more: no credit.
            return state
        if state.streak + 1 >= limit and limit < ceiling:
            return Concurrency(limit=limit + 1)
        return Concurrency(limit=limit, streak=state.streak + 1, throttled=state.throttled)
    # Another failure says nothing about capacity: keep the limit, break the run of successes.
    return Concurrency(limit=limit, throttled=state.throttled)
