"""`autoscaler simulate`: replay a production trace through every policy and compare what users pay.

Choosing an autoscaler comes down to two numbers, cold starts and idle memory, and they are only
worth comparing on real traffic, with the metric lag the policies have in production, and with the
very policy code that runs in the cluster. This command replays an Azure Functions 2019 trace on a
virtual clock through the project's policies (`policies.engine.decide`, fixed and adaptive keep-alive)
and through faithful models of its peers, then prints one row per policy, optionally as JSON with
every assumption, and as a PNG.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autoscaler._promql import base_url
from autoscaler.config import DEFAULT_QUERIES
from autoscaler.errors import ConfigError
from autoscaler.simulate.account import SERVICE_MODEL
from autoscaler.simulate.frontier import against, summary
from autoscaler.simulate.history import (
    HISTORY_RULE,
    STEP,
    Sizes,
    parse_span,
    parse_until,
    read_history,
    read_sizes,
)
from autoscaler.simulate.plot import plot
from autoscaler.simulate.policies import (
    POLICY_NAMES,
    SWEEP,
    FunctionResult,
    SimSettings,
    check_policy,
    describe,
    simulate_chunk,
)
from autoscaler.simulate.report import (
    PolicyResult,
    document,
    print_frontier,
    print_report,
    summarize,
    verdict,
    write_json,
)
from autoscaler.simulate.trace import ARRIVAL_RULE, Trace, TraceFunction, read_trace
from autoscaler.simulate.views import CONCURRENCY_MODEL, PROMETHEUS_MODEL
from autoscaler.spec import parse_duration

DEFAULT_TRACE = Path(__file__).resolve().parent.parent / "data" / "traces" / "azure2019-sample"


@dataclass(slots=True)
class Simulation:
    """The outcome of one `simulate` call."""

    rows: list[PolicyResult]
    per_function: dict[str, list[FunctionResult]]
    elapsed: float
    evaluations: int


def assumptions(
    settings: SimSettings, trace: Trace, policies: tuple[str, ...] = POLICY_NAMES
) -> dict[str, Any]:
    """Every modelling choice a reader needs to judge the numbers (the JSON's `assumptions`)."""
    return {
        **asdict(settings),
        "start": "every function starts at zero replicas at minute 0; every policy starts with no history",
        "arrivals": ARRIVAL_RULE,
        "wake": "a request at zero replicas wakes the function at once under every policy "
        "(the wake-up proxy, "
        "Knative's activator, KEDA's interceptor hold it); the project's loop gets the wake as last_wake",
        "prometheus": PROMETHEUS_MODEL,
        "knative_metrics": CONCURRENCY_MODEL,
        "service": SERVICE_MODEL,
        "duration": "each function's average execution time from durations.csv (ms), the same for every call",
        "memory": "each function's app's AverageAllocatedMb from memory.csv, per replica",
        "idle": "a replica is idle while it serves no request (requests spread evenly over ready replicas); "
        "starting replicas are idle; wasted memory = idle replica-seconds x memory",
        "cold_start_pct_p75_function": "75th percentile, over functions with at least one call, of each "
        "function's share of calls that met a cold start",
        "p99_wait_s": "99th percentile over all calls of the time a call waited for a ready replica "
        "or a slot",
        "minutes": trace.minutes,
        "durations_filled_with_median": trace.durations_filled,
        "memory_filled_with_median": trace.memory_filled,
        "policies": {name: describe(name) for name in policies},
    }


def simulate(
    trace: Trace,
    *,
    policies: tuple[str, ...],
    settings: SimSettings,
    jobs: int = 1,
    keep_key: str | None = None,
    advance: Callable[[int], None] | None = None,
) -> Simulation:
    """Run `policies` over every function of `trace` in `jobs` processes (1: in this process)."""
    started = time.perf_counter()
    indexed = list(enumerate(trace.functions))
    # Small interleaved batches: busy functions spread over the workers, the progress bar moves.
    batches = max(1, min(len(indexed), 8 * max(jobs, 1) * 6))
    chunks = [indexed[k::batches] for k in range(batches)]
    collected: dict[int, dict[str, FunctionResult]] = {}

    def take(done: list[tuple[int, dict[str, FunctionResult]]]) -> None:
        for index, results in done:
            collected[index] = results
        if advance is not None:
            advance(len(done))

    kwargs: dict[str, Any] = {
        "policies": policies,
        "settings": settings,
        "end": trace.seconds,
        "keep_key": keep_key,
    }
    if jobs <= 1:
        for chunk in chunks:
            take(simulate_chunk(chunk, **kwargs))
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(simulate_chunk, chunk, **kwargs) for chunk in chunks]
            for future in concurrent.futures.as_completed(futures):
                take(future.result())
    per_function = {name: [collected[i][name] for i in range(len(indexed))] for name in policies}
    rows = [summarize(name, per_function[name]) for name in policies]
    evaluations = sum(r.evaluations for results in per_function.values() for r in results)
    return Simulation(rows, per_function, time.perf_counter() - started, evaluations)


def _duration_or_zero(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (use a Go duration such as 2s, 500ms or 1m)") from None


def _duration(text: str) -> float:
    value = _duration_or_zero(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0")
    return value


def _trace(args: argparse.Namespace) -> tuple[Trace, dict[str, Any]]:
    """The trace to replay (a directory, or the history in Prometheus) and what the report says of it."""
    if args.prometheus_url is None:
        trace = read_trace(args.trace or DEFAULT_TRACE, functions=args.functions)
        return trace, {}
    if args.trace is not None:
        raise ConfigError("give --trace or --prometheus-url, not both: one is the calls to replay")
    if not math.isfinite(args.memory_mb) or args.memory_mb <= 0:
        raise ConfigError(f"--memory-mb must be a number > 0, got {args.memory_mb:g}")
    now = time.time()
    end = parse_until(args.until, now=now)
    start = end - parse_span(args.since, flag="--since")
    sizes = Sizes(duration=args.duration, memory_mb=args.memory_mb)
    if args.sizes is not None:
        sizes = read_sizes(args.sizes, duration=args.duration, memory_mb=args.memory_mb)
    trace = read_history(
        url=str(base_url(args.prometheus_url)),
        query=args.query_started,
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
            "query": args.query_started,
            "range": str(trace.path),
            "step_s": STEP,
            "calls_per_minute": HISTORY_RULE,
            "duration_s_default": sizes.duration,
            "memory_mb_default": sizes.memory_mb,
            "sizes_file": None if args.sizes is None else str(args.sizes),
            "namespaces": list(args.namespaces) or "all",
        }
    }


def _policy(text: str) -> str:
    try:
        return check_policy(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(subparsers: Any) -> None:
    """Register `simulate` on the `autoscaler` command's subparsers."""
    parser = subparsers.add_parser(
        "simulate",
        help="replay a production trace through the policies and compare cold starts and idle memory",
        description="Replay an Azure Functions 2019 trace (invocations.csv, durations.csv, memory.csv) on a "
        "virtual clock through each policy and report cold starts, waits, replica-seconds and wasted memory.",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="trace directory (default: the sample shipped inside)",
    )
    history = parser.add_argument_group(
        "what-if on your own history (instead of --trace)",
        "the started-invocations counter per function from your Prometheus, replayed through the policies",
    )
    history.add_argument(
        "--prometheus-url", default=None, help="Prometheus base URL, e.g. http://prometheus:9090"
    )
    history.add_argument(
        "--since", default="7d", help="how far back the history starts (default 7d; e.g. 36h)"
    )
    history.add_argument(
        "--until", default=None, help="where it ends: RFC 3339 time or a span ago (default now)"
    )
    history.add_argument(
        "--namespace", dest="namespaces", action="append", default=[], help="only this namespace (repeat)"
    )
    history.add_argument(
        "--query-started",
        default=DEFAULT_QUERIES["started"],
        help="PromQL of the started-invocations counter by function_name (default: the loop's own)",
    )
    history.add_argument(
        "--duration",
        type=_duration,
        default=0.1,
        help="each call's duration, for every function (default 100ms)",
    )
    history.add_argument("--memory-mb", type=float, default=256.0, help="memory of a replica (default 256)")
    history.add_argument(
        "--sizes", type=Path, default=None, help="YAML: functions: {NAME.NAMESPACE: {duration, memory_mb}}"
    )
    parser.add_argument(
        "--policy",
        dest="policies",
        action="append",
        type=_policy,
        help=f"a policy to simulate (repeat; default: {', '.join(POLICY_NAMES)}); also fixed-<N>m "
        "(keep warm N minutes) and adaptive-p<P> (keep warm to the P-th percentile of the idle times)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="the trade-off curves: fixed at 1 to 120 minutes and adaptive over its idle-time percentile, "
        "and where adaptive runs below fixed's curve",
    )
    parser.add_argument(
        "--cold-start", type=_duration, default=2.0, help="time to a ready replica (default 2s)"
    )
    parser.add_argument("--functions", type=int, default=None, help="simulate only the first N functions")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG comparing the policies")
    parser.add_argument(
        "--function", dest="function_key", default=None, help="HashFunction to plot a timeline of"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival spreading (default 0)")
    parser.add_argument(
        "--interval", type=_duration, default=2.0, help="the project loop's tick (default 2s)"
    )
    parser.add_argument(
        "--scrape-interval", type=_duration, default=15.0, help="Prometheus scrape (default 15s)"
    )
    parser.add_argument("--rate-window", type=_duration, default=60.0, help="rate() window (default 1m)")
    parser.add_argument(
        "--warmup",
        type=_duration_or_zero,
        default=0.0,
        help="replay this much of the trace through every policy before counting anything (default 0)",
    )
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: up to 2)"
    )


def run(args: argparse.Namespace) -> int:
    """Run `autoscaler simulate`; returns the exit code."""
    console = Console(stderr=True)
    if args.rate_window < 2 * args.scrape_interval:
        raise ConfigError(
            f"--rate-window ({args.rate_window:g}s) must cover at least two scrapes of --scrape-interval "
            f"({args.scrape_interval:g}s), as rate() needs two samples"
        )
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    trace, source = _trace(args)
    if args.warmup >= trace.seconds:
        raise ConfigError(
            f"--warmup ({args.warmup:g}s) leaves nothing to measure of a {trace.minutes}-minute trace"
        )
    chosen = (*(args.policies or ()), *SWEEP) if args.sweep else (args.policies or POLICY_NAMES)
    policies = tuple(dict.fromkeys(chosen))
    keep: TraceFunction | None = None
    if args.function_key is not None:
        matches = [fn for fn in trace.functions if fn.key.startswith(args.function_key)]
        if len(matches) != 1:
            raise ConfigError(
                f"--function {args.function_key!r} matches {len(matches)} functions of the trace "
                "(give a unique HashFunction prefix among the simulated functions)"
            )
        keep = matches[0]
    settings = SimSettings(
        cold_start=args.cold_start,
        tick=args.interval,
        scrape_interval=args.scrape_interval,
        rate_window=args.rate_window,
        seed=args.seed,
        warmup=args.warmup,
    )
    total = len(trace.functions)
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("functions"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("simulate", total=total)
        sim = simulate(
            trace,
            policies=policies,
            settings=settings,
            jobs=args.jobs,
            keep_key=keep.key if keep else None,
            advance=lambda n: progress.advance(task, n),
        )
    invocations = sum(fn.invocations for fn in trace.functions)
    title = f"{trace.path.name}: {total:,} functions, {invocations:,} calls, {sim.elapsed:.1f} s"
    judged = verdict(sim.rows)
    out = Console() if sys.stdout.isatty() else Console(width=130)  # a file or pipe gets whole numbers
    print_report(out, sim.rows, title=title, judged=judged)
    compared = against(sim.rows)
    frontier = summary(compared) if args.sweep else None
    if frontier is not None:
        print_frontier(out, compared, frontier)
    if args.json_path is not None:
        extra = {
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
        doc = document(
            trace=str(trace.path),
            assumptions={**assumptions(settings, trace, policies), **source},
            rows=sim.rows,
            extra=extra,
        )
        write_json(args.json_path, doc)
    if args.plot is not None:
        timelines = None
        if keep is not None:
            index = next(i for i, fn in enumerate(trace.functions) if fn is keep)
            timelines = {name: sim.per_function[name][index].changes for name in policies}
        plot(
            args.plot,
            rows=sim.rows,
            title=title,
            function_key=keep.key if keep else None,
            counts=keep.counts if keep else None,
            timelines=timelines,
            end=trace.seconds,
        )
    return 0
