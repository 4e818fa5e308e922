"""Coarse timeouts for thousands of concurrent upstream reads, swept by one task instead of timers.

aiohttp's per-read timeout cancels and re-arms a loop timer on every chunk it receives, which costs
about a tenth of the proxy's CPU per request. The upstream timeout is measured in seconds to minutes,
so it needs no such precision: here an await registers a deadline (a dict entry), and one background
sweep, `resolution` seconds apart, cancels the tasks whose deadline has passed. The cancellation is
turned back into a timeout by `disarm`, exactly where the await was.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Deadlines:
    """Per-task deadlines with one sweeping task; a deadline fires up to `resolution` seconds late."""

    __slots__ = ("_due", "_expired", "_loop", "resolution")

    def __init__(self, *, resolution: float) -> None:
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0 seconds (got {resolution})")
        self.resolution = resolution
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        # Known once `run` starts: current_task(loop) then skips get_running_loop(), which costs a
        # getpid() system call per request on Python 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, seconds: float) -> asyncio.Task[Any]:
        """Give the current task `seconds` to reach the matching `disarm`."""
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("Deadlines.arm() must be called from inside a task")
        self._due[task] = task.get_loop().time() + seconds
        return task

    def disarm(self, task: asyncio.Task[Any]) -> bool:
        """End the deadline; True when it had fired (its cancellation is then withdrawn)."""
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def run(self) -> None:
        """Sweep forever (run it as a background task; cancel it to stop)."""
        loop = self._loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.resolution)
                now = loop.time()
                late = [task for task, due in self._due.items() if due <= now]
                for task in late:
                    del self._due[task]
                    self._expired.add(task)
                    task.cancel()
        finally:
            self._loop = None
