"""Run a coroutine at once, and give it a task only if it has to wait (Python 3.12's eager tasks).

The proxy tells the provider at every request start that a function is active; the provider
coalesces those calls into at most one API write per `--mark-interval`, so nearly every call ends
without waiting for anything. A task per call would still cost about 6 us of CPU per request (a
fifth of the proxy's whole budget). Here the coroutine runs in the caller up to its first real
wait; only then does it move into a background task (`tasks.Background`: referenced, crash
logged) that resumes it where it stopped. Python 3.11 has no `eager_start`, hence the trampoline.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Coroutine, Generator
from typing import Any

from autoscaler.tasks import Background

log = logging.getLogger("autoscaler.proxy")


def run_eagerly(coro: Coroutine[Any, Any, None], *, background: Background, name: str) -> None:
    """Run `coro` until it first waits; if it does, it goes on in a background task named `name`."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return  # done without waiting: no task at all
    except Exception as e:
        log.error("background task %s crashed: %r", name, e, exc_info=e)
        return
    background.spawn(_finish(coro, waiting_on), name=name)


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    await _resume(coro, waiting_on)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Hand what `coro` waits on to the task, and the task's answers (or its cancel) back to `coro`."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as e:
            try:
                waiting_on = coro.throw(e)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return
