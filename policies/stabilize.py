"""Scale-down stabilization (`com.openfaas.scale.down.window`), like the HPA's.

Within the window the highest recommendation wins, so a brief dip does not drop replicas that the
next second's load needs again. Scale-ups are never delayed.
"""

from __future__ import annotations

from collections import deque

MAX_WINDOW = 300.0  # OpenFaaS caps the down window at 5 minutes


def stabilized(*, history: deque[tuple[float, int]], recommendation: int, now: float, window: float) -> int:
    """Record `recommendation` at `now` and return the highest one within `window` seconds.

    `history` is the function's own deque, oldest first; entries older than the window are dropped.
    With `window` 0 the recommendation passes through unchanged and nothing is kept.
    """
    if window <= 0:
        history.clear()
        return recommendation
    horizon = now - window
    while history and history[0][0] < horizon:
        history.popleft()
    # Keep the deque short: an older entry not above the new one can never win again.
    while history and history[-1][1] <= recommendation:
        history.pop()
    history.append((now, recommendation))
    return history[0][1]
