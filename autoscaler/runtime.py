"""How a long-running process of the add-on sets up CPython's garbage collector once it has started.

A controller over 50,000 functions or a proxy with thousands of connections keeps hundreds of thousands
of live objects (watch caches, per-function state and memos, connections). With CPython's default
thresholds (700, 10, 10) the collector re-scans all of them over and over: at 50,000 functions with
every load figure moving, one full collection per tick, a third of the loop's CPU per tick
(`bench/tick_bench.py`); a fifth of the CPU of a proxy's cold-start burst. Both `autoscaler run` and
`autoscaler proxy` therefore call `settle_collector` once start-up is done (the functions listed):
what is alive then is frozen out of collection, and young collections come every `YOUNG_THRESHOLD`
allocations instead of 700, which makes full collections rare. Garbage without cycles is freed by
reference counting as before; cycles are still collected, later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # allocations between young-generation collections (CPython's default: 700)
THRESHOLDS = (YOUNG_THRESHOLD, 50, 100)


def settle_collector() -> None:
    """Freeze what start-up made out of collection and make collections rarer (see the module)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
