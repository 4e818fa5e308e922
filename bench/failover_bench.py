"""A leader handover at 5,000 functions: the count of wrong decisions, and how long the takeover took.

Why it exists (issue 15): a new leader decides for every function on its first ticks, and a state it
has not rebuilt yet (load not read, idle timers not warm) shows as a burst of wrong scales across
thousands of functions at once. This runs the end-to-end handover of
`tests/e2e/test_leader_handover.py` (two real `autoscaler run --leader-election` processes, the
wire-format API server, a gateway exporter and a real Prometheus) at `--functions` (5,000) and, as
the baseline in the same run, at the test's own 8. It prints, per kind of function, the scales no
leader should have made on that load (any change of a steady, idle or busy function, any step down
of a burst), made by the new leader from the old one's exit on and, for comparison, by the old
leader before it; the new leader's own patches; and the seconds from the old leader's exit to the
new one leading and to every burst at its new replicas. The test asserts zero at 8 functions.

    python bench/failover_bench.py [--functions 5000] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.test_leader_handover import Outcome, hand_over, handover_world
from tests.support.prometheus import PrometheusFactory, require_binary


async def measure(functions: int, *, interval: float, base: Path) -> tuple[Outcome, float]:
    workdir = base / f"n{functions}"
    workdir.mkdir()
    factory = PrometheusFactory(base_dir=workdir, binary=require_binary())
    try:
        started = time.monotonic()
        async with handover_world(factory, workdir, functions=functions, interval=interval) as world:
            setup = time.monotonic() - started
            outcome = await hand_over(
                world, workdir, timeout=max(20.0, functions / 100), stop_timeout=max(15.0, functions / 50)
            )
        return outcome, setup
    finally:
        factory.close()


def report(functions: int, outcome: Outcome, setup: float) -> None:
    print(f"{functions} functions (world ready in {setup:.1f} s):")
    stretches = (
        ("old leader, to its SIGTERM", outcome.wrong_before),
        ("SIGTERM to the new leader leading", outcome.wrong_between),
        ("new leader, from then on", outcome.wrong),
    )
    for who, wrong in stretches:
        kinds = ", ".join(f"{kind} {count}" for kind, count in wrong.items())
        print(f"  wrong decisions, {who}: {sum(wrong.values())} ({kinds})")
    print(
        f"  after the old leader's SIGTERM: new leader leading at {outcome.takeover:.2f} s, "
        f"old leader exited "
        f"at {outcome.exit:.2f} s, every burst at its new replicas at {outcome.converged:.2f} s; "
        f"{outcome.new_leader_patches:.0f} patches by the new leader"
    )


async def run(functions: int, interval: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    for size in (8, functions):
        try:
            outcome, setup = await measure(size, interval=interval if size > 8 else 0.5, base=tmp)
        except AssertionError as e:
            print(f"{size} functions: the handover did not complete: {str(e).splitlines()[0]}")
            print(f"  the controllers' logs are kept in {tmp / f'n{size}'}")
            raise SystemExit(1) from None
        report(size, outcome, setup)
    print(f"the controllers' logs: {tmp}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=5000)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="the controllers' --interval at --functions"
    )
    args = parser.parse_args()
    if args.functions < 8 or args.interval <= 0:
        print("failover_bench: --functions must be at least 8 and --interval above 0", file=sys.stderr)
        raise SystemExit(2)
    asyncio.run(run(args.functions, args.interval))


if __name__ == "__main__":
    main()
