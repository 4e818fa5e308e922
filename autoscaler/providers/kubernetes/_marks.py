"""Writes of the last-active mark, and their one throttle: at most one per function per interval.

The proxy marks a scale-to-zero function on the requests it serves and on every wake-up, and each
mark written is an API call (a merge patch of the Deployment's annotation). This writer is where they
are throttled (its interval is the proxy's `mark_interval`): a mark within `interval` of the newest
one written, queued or seen on the cluster for the same function costs no call, however many
requests ask; a mark that must be written is queued, and a few writer tasks (`concurrency`) drain
the queue, so marks for thousands of functions at once start a handful of tasks and calls, not
thousands. A queued mark not yet sent takes a later one along (one write carries both), and the
writes of one function never overlap, so its annotation only ever moves forward.

A caller waits for the write that covers its mark, so a wake-up has marked before it scales
(invariant 2); a failed write is raised to everyone waiting on it and forgotten, so the next mark
tries again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from autoscaler.interfaces import FunctionRef
from autoscaler.tasks import Background

WRITERS = 4  # writer tasks at most, so calls in flight at most, however many functions are marked


@dataclass(slots=True)
class _Mark:
    ref: FunctionRef
    when: float
    written: asyncio.Future[None]
    sent: bool = False


def _retrieve(future: asyncio.Future[None]) -> None:
    """A failed write nobody waits on any more is no 'exception never retrieved' warning."""
    if not future.cancelled():
        future.exception()


class MarkWriter:
    """`await mark(ref, when)`: returns once a mark at `when` or within `interval` before it is written."""

    def __init__(
        self,
        *,
        write: Callable[[FunctionRef, float], Awaitable[None]],
        seen: Callable[[FunctionRef], float | None],
        interval: float,
        concurrency: int = WRITERS,
    ) -> None:
        if interval < 0 or concurrency < 1:
            raise ValueError(f"invalid MarkWriter(interval={interval}, concurrency={concurrency})")
        self._write = write
        self._seen = seen  # the newest mark the cluster shows (the watch cache)
        self.interval = interval
        self.concurrency = concurrency
        self._latest: dict[str, _Mark] = {}  # per function: the newest mark written or on its way
        self._queue: collections.deque[str] = collections.deque()
        self._writing: set[str] = set()
        self._workers = 0
        self._background = Background()

    async def mark(self, ref: FunctionRef, when: float) -> None:
        latest = self._latest.get(ref.key)
        if latest is not None and latest.written.cancelled():
            latest = None  # cut off by close()
        if latest is not None and when < latest.when + self.interval:
            await asyncio.shield(latest.written)  # covered by it (never moves the mark back)
            return
        if latest is not None and not latest.sent:
            latest.when = when  # queued, not sent yet: one write carries the later mark
            await asyncio.shield(latest.written)
            return
        seen = self._seen(ref)
        if seen is not None and when < seen + self.interval:
            return  # a recent mark on the cluster already protects the function
        mark = _Mark(ref, when, asyncio.get_running_loop().create_future())
        mark.written.add_done_callback(_retrieve)
        self._latest[ref.key] = mark
        if ref.key not in self._writing:  # else the writer of this function takes it next
            self._queue.append(ref.key)
            if self._workers < self.concurrency:
                self._workers += 1
                self._background.spawn(self._drain(), name="last-active marks")
        await asyncio.shield(mark.written)

    async def _drain(self) -> None:
        try:
            while self._queue:
                key = self._queue.popleft()
                self._writing.add(key)
                try:
                    while (mark := self._latest.get(key)) is not None and not mark.sent:
                        await self._send(key, mark)
                finally:
                    self._writing.discard(key)
        finally:
            self._workers -= 1

    async def _send(self, key: str, mark: _Mark) -> None:
        mark.sent = True
        try:
            await self._write(mark.ref, mark.when)
        except asyncio.CancelledError:
            mark.written.cancel()
            raise
        except Exception as e:
            if self._latest.get(key) is mark:
                del self._latest[key]  # not written: the next mark tries again
            mark.written.set_exception(e)
        else:
            mark.written.set_result(None)

    def pending(self) -> int:
        """Marks queued or being written."""
        return sum(1 for mark in self._latest.values() if not mark.written.done())

    async def close(self) -> None:
        await self._background.close()
        for mark in self._latest.values():
            mark.written.cancel()
