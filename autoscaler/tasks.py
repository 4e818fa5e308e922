"""The one guarded way to start background work: no task of the add-on dies silently.

asyncio keeps only weak references to tasks and reports a crashed task's exception, if at all, when it
is garbage collected. Every background task of the loop, the proxy and the providers starts here: it
stays referenced until it ends, its crash is logged with its name, and its owner can cancel the rest
at shutdown. `restarting` is for loops that must outlive their own crashes (watches).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("autoscaler.tasks")


class Background:
    """A set of named background tasks whose failures are logged; `close()` cancels the rest."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        _report(task)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the tasks running now to end, or `timeout` seconds; how many are still running.

        Their failures are logged, not raised; a timeout cancels none of them (`close` does).
        """
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _report(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s crashed: %r", task.get_name(), exc, exc_info=exc)


_detached: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """Start one background task that has no owner set; referenced until done, crash logged."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    task.add_done_callback(_report)
    return task


def restarting(run: Callable[[], Awaitable[None]], *, name: str, restart_delay: float) -> asyncio.Task[None]:
    """Start `run` as a task that logs a crash (or an unexpected return) and starts it again."""

    async def guard() -> None:
        while True:
            try:
                await run()
                log.error("%s returned unexpectedly; restarting in %.2fs", name, restart_delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in %.2fs", name, restart_delay)
            await asyncio.sleep(restart_delay)

    return asyncio.get_running_loop().create_task(guard(), name=name)


async def stoppable(work: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` is set first, which cancels it; True when `work` ran to its end.

    The one way a command lets a signal cut long work short (start-up against an API server that
    does not answer, a tick waiting for the write budget). An exception of `work` propagates; when
    cancelled it is awaited to its end before this returns, so nothing of it runs on afterwards.
    """
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # its exception, if it failed
    return True
