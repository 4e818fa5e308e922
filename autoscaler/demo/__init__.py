"""`autoscaler demo`: the product working in one command, on one machine, with nothing to install.

With no arguments it starts two example functions as local processes (one always warm, one that
scales to zero), the wake-up proxy and the control loop on loopback, drives a short scripted load,
shows what the loop does, prints a summary and exits by itself. With `--serve` it keeps the same
stack running so you can call the functions yourself until Ctrl-C. With an embedded nats-server it
also takes asynchronous calls (`stack.queue_note` says whether, or how to get them). Its command line
is `autoscaler.commands.demo`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from autoscaler.demo.script import Script
from autoscaler.demo.stack import QUEUE_EXAMPLE, LocalStack, StackSettings
from autoscaler.demo.view import View
from autoscaler.errors import ConfigError
from autoscaler.functionsfile import FunctionsFile


def run_stack(*, functions: FunctionsFile, notes: list[str], settings: StackSettings, serve: bool) -> int:
    """Run the stack (scripted, or until Ctrl-C with `serve`) in its own event loop; the exit code."""
    main = _serve if serve else _scripted
    try:
        return asyncio.run(_guarded(main, functions=functions, notes=notes, settings=settings))
    except BrokenPipeError:  # e.g. `autoscaler demo | head`: the reader left; the stack is already closed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


async def _guarded(
    main: Callable[[LocalStack, View, list[str]], Awaitable[int]],
    *,
    functions: FunctionsFile,
    notes: list[str],
    settings: StackSettings,
) -> int:
    """Run `main` on a started stack; SIGINT/SIGTERM end it, and the stack is always closed."""
    stack = LocalStack(functions=functions, settings=settings)
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        if current is not None:
            current.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        try:
            await stack.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {settings.port} is in use; pass --port with a free one (0 picks one)"
                ) from e
            raise
        view = View(stack=stack)
        with view:
            ticker = asyncio.create_task(_refresh(view))
            try:
                return await main(stack, view, [*notes, *stack.notes()])
            finally:
                ticker.cancel()
    except asyncio.CancelledError:
        if not interrupted:
            raise
        return 0 if main is _serve else 130  # Ctrl-C is how --serve ends
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await stack.close()


async def _refresh(view: View) -> None:
    while True:
        view.refresh()
        await asyncio.sleep(0.25)


async def _scripted(stack: LocalStack, view: View, notes: list[str]) -> int:
    for note in notes:
        view.say(note)
    if stack.worker is None and stack.settings.embedded_nats:
        view.say(f"{stack.queue_note}; the async step is skipped")
    summary = await Script(stack=stack, view=view).run()
    view.refresh()
    view.close()
    for line in summary.lines():
        view.say(line)
    if summary.tally.lost:
        view.say("FAILED: some requests were lost; run with --verbose to see why")
        return 1
    return 0


async def _serve(stack: LocalStack, view: View, notes: list[str]) -> int:
    for note in notes:
        view.say(note)
    source = stack.settings.prometheus_url or "the proxy in this process (no Prometheus needed)"
    view.say(f"load from {source}; metrics at http://127.0.0.1:{stack.proxy.admin_port}/metrics")
    for ref in stack.refs:
        view.say(f"serving {ref.name}: curl {stack.url}/function/{ref.name}")
    view.say(stack.queue_note)
    if stack.worker is not None:
        names = [ref.name for ref in stack.refs]
        name = QUEUE_EXAMPLE if QUEUE_EXAMPLE in names else names[0]
        view.say(f"queue a call: curl -d hi {stack.url}/async-function/{name} (202; the worker calls it)")
    view.say("Ctrl-C to stop")
    await asyncio.Event().wait()  # until a signal cancels this task
    return 0
