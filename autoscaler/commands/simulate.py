"""`autoscaler simulate`: the command line of the trace and history replay in `autoscaler.simulate`.

It turns flags into a trace (a directory, or the user's Prometheus history), the policies and the
simulator's settings, runs `simulate` with a progress bar, and prints and writes the report. Flags
that are settings of the loop (`--query-started`) come from the settings models; durations are Go
durations, parsed by the one flag type every command uses.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoscaler.commands._flags import (
    GoDuration,
    PositiveGoDuration,
    add_settings_flags,
    command,
    number,
    settings,
)
from autoscaler.config import MetricsSettings
from autoscaler.errors import ConfigError

if TYPE_CHECKING:  # the simulator (numpy, rich) is imported when the command runs, not to build the parser
    from autoscaler.simulate import Simulation
    from autoscaler.simulate.policies import SimSettings
    from autoscaler.simulate.trace import Trace, TraceFunction

# The loop's settings a history replay shares (the rest of its options are the simulator's own: a
# `--rate-window` here is the simulated loop's, not the env var AUTOSCALER_RATE_WINDOW).
_LOOP_SETTINGS = ("query_started",)


def _policy(text: str) -> str:
    from autoscaler.simulate.policies import check_policy

    try:
        return check_policy(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _PolicyHelp(str):
    """`--policy`'s help, naming the simulator's policies: they live with its numpy code, so they are
    read when the help is shown, not whenever a parser is built (every command builds this one)."""

    def __mod__(self, params: Any) -> str:
        from autoscaler.simulate.policies import POLICY_NAMES, policy_forms

        names = {"policy_names": ", ".join(POLICY_NAMES), "policy_forms": policy_forms()}
        return str.__mod__(str(self), {**params, **names})


def add_parser(subparsers: Any) -> None:
    """Register `simulate` on the `autoscaler` command's subparsers."""
    parser = command(
        subparsers,
        "simulate",
        help="replay a production trace through the policies and compare cold starts and idle memory",
        description="Replay an Azure Functions 2019 trace (invocations.csv, durations.csv, memory.csv) on a "
        "virtual clock through each policy and report cold starts, waits, replica-seconds and wasted memory.",
        handler=run,
    )
    parser.add_argument(
        "--trace", type=Path, default=None, help="trace directory (default: the sample shipped inside)"
    )
    _add_history(parser)
    parser.add_argument(
        "--policy",
        dest="policies",
        action="append",
        type=_policy,
        help=_PolicyHelp("a policy to simulate (repeat; default: %(policy_names)s); also %(policy_forms)s"),
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="the trade-off curves: fixed at 1 to 120 minutes and adaptive over its idle-time percentile, "
        "and where adaptive runs below fixed's curve",
    )
    add = parser.add_argument
    add("--cold-start", action=PositiveGoDuration, default=2.0, help="time to a ready replica (default 2s)")
    add("--functions", type=int, default=None, help="simulate only the first N functions")
    add("--json", dest="json_path", type=Path, default=None, help="write the report as JSON")
    add("--plot", type=Path, default=None, help="write a PNG comparing the policies")
    add("--function", dest="function_key", default=None, help="HashFunction to plot a timeline of")
    add("--seed", type=number(whole=True), default=0, help="seed of the arrival spreading (default 0)")
    add("--interval", action=PositiveGoDuration, default=2.0, help="the project loop's tick (default 2s)")
    add("--scrape-interval", action=PositiveGoDuration, default=15.0, help="Prometheus scrape (default 15s)")
    add("--rate-window", action=PositiveGoDuration, default=60.0, help="rate() window (default 1m)")
    add(
        "--warmup",
        action=GoDuration,
        default=0.0,
        help="replay this much of the trace through every policy before counting anything (default 0)",
    )
    add("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: up to 2)")


# The history replay's defaults: a week back, calls of 100 ms on replicas of 256 MB.
DEFAULT_SINCE = "7d"
DEFAULT_DURATION = 0.1
DEFAULT_MEMORY_MB = 256.0


def _add_history(parser: argparse.ArgumentParser) -> None:
    history = parser.add_argument_group(
        "what-if on your own history (instead of --trace)",
        "the started-invocations counter per function from your Prometheus, replayed through the policies",
    )
    # Not the loop's setting: an AUTOSCALER_PROMETHEUS_URL meant for the loop must not turn a trace
    # replay into a history one.
    history.add_argument(
        "--prometheus-url", default=None, help="Prometheus base URL, e.g. http://prometheus:9090"
    )
    history.add_argument(
        "--since", default=None, help=f"how far back the history starts (default {DEFAULT_SINCE}; e.g. 36h)"
    )
    history.add_argument(
        "--until", default=None, help="where it ends: RFC 3339 time or a span ago (default now)"
    )
    history.add_argument(
        "--namespace", dest="namespaces", action="append", default=[], help="only this namespace (repeat)"
    )
    add_settings_flags(parser, MetricsSettings, only=_LOOP_SETTINGS, group=history)
    history.add_argument(
        "--duration",
        action=PositiveGoDuration,
        default=None,
        help=f"each call's duration, for every function (default {DEFAULT_DURATION * 1000:g}ms)",
    )
    history.add_argument(
        "--memory-mb", type=float, default=None, help=f"memory of a replica (default {DEFAULT_MEMORY_MB:g})"
    )
    history.add_argument(
        "--sizes", type=Path, default=None, help="YAML: functions: {NAME.NAMESPACE: {duration, memory_mb}}"
    )


def _refuse_history_flags(args: argparse.Namespace) -> None:
    """ConfigError for a history flag given to a trace replay: it would be ignored without a word."""
    flags = {
        "--since": args.since, "--until": args.until, "--duration": args.duration,
        "--memory-mb": args.memory_mb, "--sizes": args.sizes, "--namespace": args.namespaces or None,
    }  # fmt: skip
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} the history read from Prometheus: "
            "give --prometheus-url too, or leave "
            f"{'it' if len(given) == 1 else 'them'} out to replay a trace"
        )


def _trace(args: argparse.Namespace) -> tuple[Trace, dict[str, Any]]:
    """The trace to replay (a directory, or the history in Prometheus) and what the report says of it."""
    if args.prometheus_url is None:
        from autoscaler.simulate import DEFAULT_TRACE
        from autoscaler.simulate.trace import read_trace

        _refuse_history_flags(args)
        trace = read_trace(args.trace or DEFAULT_TRACE, functions=args.functions)
        return trace, {}
    if args.trace is not None:
        raise ConfigError("give --trace or --prometheus-url, not both: one is the calls to replay")
    since = args.since if args.since is not None else DEFAULT_SINCE
    duration = args.duration if args.duration is not None else DEFAULT_DURATION
    memory_mb = args.memory_mb if args.memory_mb is not None else DEFAULT_MEMORY_MB
    if not math.isfinite(memory_mb) or memory_mb <= 0:
        raise ConfigError(f"--memory-mb must be a number > 0, got {memory_mb:g}")
    from autoscaler._promql import base_url
    from autoscaler.simulate.history import (
        HISTORY_RULE,
        STEP,
        Sizes,
        parse_span,
        parse_until,
        read_history,
        read_sizes,
    )

    query = settings(args, MetricsSettings, only=_LOOP_SETTINGS).query_started
    end = parse_until(args.until, now=time.time())
    start = end - parse_span(since, flag="--since")
    sizes = Sizes(duration=duration, memory_mb=memory_mb)
    if args.sizes is not None:
        sizes = read_sizes(args.sizes, duration=duration, memory_mb=memory_mb)
    trace = read_history(
        url=str(base_url(args.prometheus_url)),
        query=query,
        start=start,
        end=end,
        namespaces=tuple(args.namespaces),
        sizes=sizes,
    )
    if args.functions is not None:
        if args.functions < 1:
            raise ConfigError(f"--functions must be at least 1, got {args.functions}")
        trace = replace(trace, functions=trace.functions[: args.functions])
    return trace, {
        "history": {
            "prometheus_url": args.prometheus_url,
            "query": query,
            "range": str(trace.path),
            "step_s": STEP,
            "calls_per_minute": HISTORY_RULE,
            "duration_s_default": sizes.duration,
            "memory_mb_default": sizes.memory_mb,
            "sizes_file": None if args.sizes is None else str(args.sizes),
            "namespaces": list(args.namespaces) or "all",
        }
    }


def _check(args: argparse.Namespace, trace: Trace) -> TraceFunction | None:
    """Refuse flags that contradict each other or the trace; the function to plot a timeline of."""
    if args.warmup >= trace.seconds:
        raise ConfigError(
            f"--warmup ({args.warmup:g}s) leaves nothing to measure of a {trace.minutes}-minute trace"
        )
    if args.function_key is None:
        return None
    matches = [fn for fn in trace.functions if fn.key.startswith(args.function_key)]
    if len(matches) != 1:
        raise ConfigError(
            f"--function {args.function_key!r} matches {len(matches)} functions of the trace "
            "(give a unique HashFunction prefix among the simulated functions)"
        )
    return matches[0]


def _simulate(
    args: argparse.Namespace, trace: Trace, policies: tuple[str, ...], settings: SimSettings, keep: str | None
) -> Simulation:
    """Run the simulation with a progress bar on stderr (gone when it ends)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autoscaler.simulate import simulate

    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("functions"))
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("simulate", total=len(trace.functions))
        return simulate(
            trace,
            policies=policies,
            settings=settings,
            jobs=args.jobs,
            keep_key=keep,
            advance=lambda n: progress.advance(task, n),
        )


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _outputs(args: argparse.Namespace) -> None:
    """Refuse now what writing the report would fail on after the whole simulation has run."""
    for flag, path in (("--json", args.json_path), ("--plot", args.plot)):
        if path is not None and path.is_dir():
            raise ConfigError(f"{flag} {path} is a directory: give a file in it, e.g. {path / 'report'}")
    if args.plot is not None and args.plot.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(
            f"--plot {args.plot}: the plot is written as PNG, SVG or PDF, by the file's suffix "
            f"({', '.join(PLOT_SUFFIXES)})"
        )


def run(args: argparse.Namespace) -> int:
    """Run `autoscaler simulate`; returns the exit code."""
    if args.rate_window < 2 * args.scrape_interval:
        raise ConfigError(
            f"--rate-window ({args.rate_window:g}s) must cover at least two scrapes of --scrape-interval "
            f"({args.scrape_interval:g}s), as rate() needs two samples"
        )
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    _outputs(args)
    from autoscaler.simulate import assumptions
    from autoscaler.simulate.policies import POLICY_NAMES, SWEEP, SimSettings

    trace, source = _trace(args)
    keep = _check(args, trace)
    chosen = (*(args.policies or ()), *SWEEP) if args.sweep else (args.policies or POLICY_NAMES)
    policies = tuple(dict.fromkeys(chosen))
    sim_settings = SimSettings(
        cold_start=args.cold_start,
        tick=args.interval,
        scrape_interval=args.scrape_interval,
        rate_window=args.rate_window,
        seed=args.seed,
        warmup=args.warmup,
    )
    sim = _simulate(args, trace, policies, sim_settings, keep.key if keep else None)
    _report(
        args, trace, sim, policies, keep, assumed={**assumptions(sim_settings, trace, policies), **source}
    )
    return 0


def _report(
    args: argparse.Namespace,
    trace: Trace,
    sim: Simulation,
    policies: tuple[str, ...],
    keep: TraceFunction | None,
    *,
    assumed: dict[str, Any],
) -> None:
    """The table (and the sweep's curves) on stdout; the JSON and the plot where the flags say."""
    from rich.console import Console

    from autoscaler.simulate.frontier import against, summary
    from autoscaler.simulate.report import document, print_frontier, print_report, verdict, write_json

    total, invocations = len(trace.functions), sum(fn.invocations for fn in trace.functions)
    title = f"{trace.path.name}: {total:,} functions, {invocations:,} calls, {sim.elapsed:.1f} s"
    judged = verdict(sim.rows)
    out = Console() if sys.stdout.isatty() else Console(width=130)  # a file or pipe gets whole numbers
    print_report(out, sim.rows, title=title, judged=judged)
    for count, what, where in (
        (trace.durations_filled, "duration", "durations.csv"),
        (trace.memory_filled, "memory", "memory.csv"),
    ):
        if count:  # said beside the table too, not only in the JSON: the figures rest on it
            out.print(f"{count:,} function(s) without a row in {where} were given the trace's median {what}")
    compared = against(sim.rows)
    frontier = summary(compared) if args.sweep else None
    if frontier is not None:
        print_frontier(out, compared, frontier)
    if args.json_path is not None:
        extra: dict[str, Any] = {
            "functions": total,
            "invocations": invocations,
            "elapsed_s": round(sim.elapsed, 3),
            "policy_evaluations": sim.evaluations,
            "adaptive_vs_fixed_10m": judged,
        }
        if frontier is not None:
            extra["adaptive_vs_fixed_curve"] = {
                "summary": frontier,
                "points": [{**asdict(a), "below_by_pct_points": a.below_by} for a in compared],
            }
        doc = document(trace=str(trace.path), assumptions=assumed, rows=sim.rows, extra=extra)
        write_json(args.json_path, doc)
    if args.plot is not None:
        _plot(args.plot, trace, sim, policies, keep, title=title)


def _plot(
    path: Path,
    trace: Trace,
    sim: Simulation,
    policies: tuple[str, ...],
    keep: TraceFunction | None,
    *,
    title: str,
) -> None:
    from autoscaler.simulate.plot import plot

    timelines = None
    if keep is not None:
        index = next(i for i, fn in enumerate(trace.functions) if fn is keep)
        timelines = {name: sim.per_function[name][index].changes for name in policies}
    plot(
        path,
        rows=sim.rows,
        title=title,
        function_key=keep.key if keep else None,
        counts=keep.counts if keep else None,
        timelines=timelines,
        end=trace.seconds,
    )
