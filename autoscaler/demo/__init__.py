"""`autoscaler demo`: the product working in one command, on one machine, with nothing to install.

With no arguments it starts two example functions as local processes (one always warm, one that
scales to zero), the wake-up proxy and the control loop on loopback, drives a short scripted load,
shows what the loop does, prints a summary and exits by itself. With `--serve` it keeps the same
stack running so you can call the functions yourself until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from autoscaler.config import MetricsSettings, build
from autoscaler.demo.script import Script
from autoscaler.demo.stack import LocalStack, StackSettings, shorten_zero_durations
from autoscaler.demo.view import View
from autoscaler.errors import ConfigError
from autoscaler.functionsfile import FunctionsFile, load, load_builtin
from autoscaler.spec import parse_duration

DEMO_ZERO_DURATION = 3.0  # seconds: the scripted demo's idle time before zero
SERVE_ZERO_DURATION = 30.0  # seconds: the built-in functions' idle time before zero under --serve
SERVE_PORT = 8080


def add_parser(subparsers: Any) -> None:
    """Register `autoscaler demo` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="see it work in one command: local functions, proxy and loop, under a scripted load",
        description="Without arguments: run two example functions as local processes behind the wake-up "
        "proxy and the control loop, drive a cold start, a burst and an idle period back to zero, print "
        "a summary and exit. With --serve: keep running so you can curl "
        "http://127.0.0.1:PORT/function/NAME until Ctrl-C.",
    )
    parser.add_argument("--serve", action="store_true", help="keep running (no scripted load) until Ctrl-C")
    parser.add_argument(
        "--functions",
        metavar="FILE",
        default=None,
        help="functions file (default: the two built-in examples)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"proxy port (default: {SERVE_PORT} with --serve, else a free one)",
    )
    parser.add_argument(
        "--zero-duration",
        metavar="DURATION",
        default=None,
        help="idle time before zero for zero=true functions, as a Go duration (default: "
        f"{DEMO_ZERO_DURATION:g}s for the scripted demo; {SERVE_ZERO_DURATION:g}s for the built-in "
        "functions under --serve; a file's own labels otherwise)",
    )
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="with --serve: read load from this Prometheus (which scrapes the proxy's --admin-port "
        "/metrics) instead of from the proxy in this process [env AUTOSCALER_PROMETHEUS_URL]",
    )
    parser.add_argument(
        "--admin-port", type=int, default=0, help="the proxy's /metrics and health port (default: a free one)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the add-on's and the functions' logs")
    parser.set_defaults(handler=run)


def _functions(args: argparse.Namespace) -> tuple[FunctionsFile, list[str]]:
    functions = load(args.functions) if args.functions else load_builtin()
    seconds: float | None = None
    if args.zero_duration is not None:
        try:
            seconds = parse_duration(args.zero_duration)
        except ValueError as e:
            raise ConfigError(f"--zero-duration: {e}; write e.g. 5s or 2m") from e
        if seconds <= 0:
            raise ConfigError("--zero-duration must be > 0, e.g. 5s")
    elif not args.serve:
        seconds = DEMO_ZERO_DURATION
    elif not args.functions:
        seconds = SERVE_ZERO_DURATION
    if seconds is None:
        return functions, []
    return shorten_zero_durations(functions, seconds=seconds)


def run(args: argparse.Namespace) -> int:
    """Entry point of `autoscaler demo`; returns the exit code."""
    port = args.port if args.port is not None else (SERVE_PORT if args.serve else 0)
    for flag, value in (("--port", port), ("--admin-port", args.admin_port)):
        if not 0 <= value <= 65535:
            raise ConfigError(f"{flag} {value} is not a port number (0..65535; 0 picks a free one)")
    functions, notes = _functions(args)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    prometheus_url = None
    if args.serve:
        prometheus_url = build(MetricsSettings, {"prometheus_url": args.prometheus_url}).prometheus_url
    elif args.prometheus_url:
        raise ConfigError(
            "--prometheus-url needs --serve: the scripted demo reads load from the proxy itself"
        )
    settings = StackSettings(
        port=port,
        admin_port=args.admin_port,
        prometheus_url=prometheus_url,
        rate_window=3.0 if not args.serve else 10.0,
    )
    main = _serve if args.serve else _scripted
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
                return await main(stack, view, notes)
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
    view.say("Ctrl-C to stop")
    await asyncio.Event().wait()  # until a signal cancels this task
    return 0
