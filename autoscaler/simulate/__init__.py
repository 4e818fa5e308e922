"""`autoscaler simulate`: replay a production trace through every policy and compare what users pay.

Choosing an autoscaler comes down to two numbers, cold starts and idle memory, and they are only
worth comparing on real traffic, with the metric lag the policies have in production, and with the
very policy code that runs in the cluster. This command replays an Azure Functions 2019 trace on a
virtual clock through the project's policies (`policies.engine.decide`, fixed and adaptive keep-alive)
and through faithful models of its peers, then prints one row per policy, optionally as JSON with
every assumption, and as a PNG. Its command line is `autoscaler.commands.simulate`.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoscaler.simulate.account import SERVICE_MODEL
from autoscaler.simulate.policies import (
    POLICY_NAMES,
    PRIOR,
    FunctionResult,
    SimSettings,
    describe,
    prior_for,
    simulate_chunk,
)
from autoscaler.simulate.trace import ARRIVAL_RULE, Trace
from autoscaler.simulate.views import CONCURRENCY_MODEL, PROMETHEUS_MODEL

if TYPE_CHECKING:  # the report (rich) is imported by a simulation, not by the CLI's parser of its flags
    from autoscaler.simulate.report import PolicyResult

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
    from autoscaler.simulate.report import summarize

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
        # adaptive-prior learns from the other functions, never ahead of the moment it decides at.
        "prior": prior_for(trace.functions) if PRIOR in policies else None,
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
