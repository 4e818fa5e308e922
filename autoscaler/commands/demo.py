"""`autoscaler demo`: the command line of the one-machine stack in `autoscaler.demo`.

It turns flags into the functions to run (the built-in examples or a functions file, with their
zero-durations shortened for the scripted demo) and the stack's settings, then hands over to
`autoscaler.demo.run_stack`. Asynchronous calls are on whenever a nats-server binary is found (an
embedded server, see `autoscaler.demo._nats`); the built-in functions then gain `batch`, scaled on its
backlog (`type=queue`). Everything a user can get wrong (a flag, a functions file, an
`AUTOSCALER_*` variable the stack's settings read) is refused here, before anything starts.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from autoscaler.commands._flags import PositiveGoDuration, add_settings_flags, command, settings
from autoscaler.config import (
    ControllerSettings,
    MetricsSettings,
    ProxySettings,
    QueueSettings,
    QueueWorkerSettings,
    check_environment,
)
from autoscaler.errors import ConfigError

# Seconds: the scripted demo's idle time before zero, and the built-in functions' under --serve.
DEMO_ZERO_DURATION = 3.0
SERVE_ZERO_DURATION = 30.0
SERVE_PORT = 8080


def add_parser(subparsers: Any) -> None:
    """Register `autoscaler demo` on the CLI's subparsers."""
    parser = command(
        subparsers,
        "demo",
        help="see it work in one command: local functions, proxy and loop, under a scripted load",
        description="Without arguments: run two example functions as local processes behind the wake-up "
        "proxy and the control loop, drive a cold start, a burst and an idle period back to zero, print "
        "a summary and exit. When a nats-server binary is found, asynchronous calls run on an embedded "
        "one, and a third function, batch, is scaled on its backlog of them. With --serve: keep running "
        "so you can curl http://127.0.0.1:PORT/function/NAME until Ctrl-C.",
        handler=run,
    )
    add = parser.add_argument
    add("--serve", action="store_true", help="keep running (no scripted load) until Ctrl-C")
    add(
        "--functions",
        metavar="FILE",
        default=None,
        help="functions file (default: the two built-in examples)",
    )
    add(
        "--port",
        type=int,
        default=None,
        help=f"proxy port (default: {SERVE_PORT} with --serve, else a free one)",
    )
    add(
        "--zero-duration",
        action=PositiveGoDuration,
        default=None,
        help="idle time before zero for zero=true functions, as a Go duration (default: "
        f"{DEMO_ZERO_DURATION:g}s for the scripted demo; {SERVE_ZERO_DURATION:g}s for the built-in "
        "functions under --serve; a file's own labels otherwise)",
    )
    add(
        "--admin-port", type=int, default=0, help="the proxy's /metrics and health port (default: a free one)"
    )
    add("--verbose", action="store_true", help="show the add-on's and the functions' logs")
    # A Prometheus that scrapes the proxy's --admin-port /metrics, instead of the proxy's own counters.
    add_settings_flags(parser, MetricsSettings, only=("prometheus_url",), prefix="with --serve: ")


def _zero_duration(args: argparse.Namespace) -> float | None:
    """The zero-duration to give every zero=true function, or None to keep the file's own."""
    if args.zero_duration is not None:
        return float(args.zero_duration)
    if not args.serve:
        return DEMO_ZERO_DURATION
    if not args.functions:
        return SERVE_ZERO_DURATION
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of `autoscaler demo`; returns the exit code."""
    from autoscaler.functionsfile import check_commands, load, load_builtin

    port = args.port if args.port is not None else (SERVE_PORT if args.serve else 0)
    for flag, value in (("--port", port), ("--admin-port", args.admin_port)):
        if not 0 <= value <= 65535:
            raise ConfigError(f"{flag} {value} is not a port number (0..65535; 0 picks a free one)")
    # The stack builds these itself, reading the variables the flags do not set.
    check_environment(ProxySettings, ControllerSettings, MetricsSettings, QueueSettings, QueueWorkerSettings)
    prometheus_url = None
    if args.serve:
        prometheus_url = settings(args, MetricsSettings).prometheus_url
    elif args.prometheus_url:
        raise ConfigError(
            "--prometheus-url needs --serve: the scripted demo reads load from the proxy itself"
        )
    functions = load(args.functions) if args.functions else load_builtin()
    check_commands(functions)
    from autoscaler.demo import run_stack  # the whole stack: imported once the input is known good
    from autoscaler.demo._nats import find_binary
    from autoscaler.demo.stack import StackSettings, shorten_zero_durations, with_queue_example

    if not args.functions and find_binary() is not None:
        functions = with_queue_example(functions)
    seconds = _zero_duration(args)
    notes: list[str] = []
    if seconds is not None:
        functions, notes = shorten_zero_durations(functions, seconds=seconds)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    stack = StackSettings(
        port=port,
        admin_port=args.admin_port,
        prometheus_url=prometheus_url,
        rate_window=3.0 if not args.serve else 10.0,
        embedded_nats=True,
    )
    return run_stack(functions=functions, notes=notes, settings=stack, serve=args.serve)
