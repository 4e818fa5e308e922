"""Benchmark of `autoscaler simulate`: the event-driven engine against a tick-by-tick replay.

Why: the simulator must replay the 1,000-function Azure day through five policies in under 60 s on
two cores, which a loop that evaluates every policy at every tick cannot do. This measures both in
the same run: the event-driven engine on the whole trace (worker processes, as the command runs),
and both engines on the same sample of functions in this process, for the ratio. The tick-by-tick
figure for the whole trace is extrapolated from the sample.

    python bench/simulate_bench.py [--trace DIR] [--sample 5] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from autoscaler.simulate import simulate
from autoscaler.simulate.policies import POLICY_NAMES, SimSettings, simulate_function
from autoscaler.simulate.trace import read_trace

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure2019-1000"  # ../shared


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trace", type=Path, default=DEFAULT)
    parser.add_argument("--sample", type=int, default=5, help="functions replayed tick by tick (every N-th)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    trace = read_trace(args.trace)
    settings = SimSettings()
    total = len(trace.functions)

    started = time.perf_counter()
    full = simulate(trace, policies=POLICY_NAMES, settings=settings, jobs=args.jobs)
    whole = time.perf_counter() - started

    step = max(1, total // args.sample)
    sample = trace.functions[::step][: args.sample]
    timings = {}
    for every_tick in (False, True):
        started = time.perf_counter()
        for fn in sample:
            simulate_function(
                fn, policies=POLICY_NAMES, settings=settings, end=trace.seconds, every_tick=every_tick
            )
        timings[every_tick] = time.perf_counter() - started
    ratio = timings[True] / timings[False]
    per_function_ticks = timings[True] / len(sample)

    print(
        f"trace: {trace.path} ({total:,} functions, {sum(fn.invocations for fn in trace.functions):,} calls)"
    )
    print(f"ours:     all {len(POLICY_NAMES)} policies, whole trace, {args.jobs} processes: {whole:.1f} s")
    print(f"          {full.evaluations:,} policy evaluations")
    print(
        f"sample:   {len(sample)} functions (every {step}th), one process: "
        f"event-driven {timings[False]:.2f} s, "
        f"tick by tick {timings[True]:.2f} s"
    )
    print(
        "baseline: tick by tick, whole trace, extrapolated: "
        f"{per_function_ticks * total / max(args.jobs, 1):.0f} s "
        f"with {args.jobs} processes"
    )
    print(f"ratio:    event-driven is {ratio:.1f}x faster on the sample; goal: whole trace under 60 s")
    print("goal met" if whole < 60 else "goal NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
