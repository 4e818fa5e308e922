"""Benchmark: the controller's own share of a tick at 50,000 functions, incremental against full.

Why it exists: issue 15 asks for a tick over 50,000 functions under 1 s with at most 5 queries. What
the controller itself spends (decoding the answers, building the loads, deciding, the per-function
views) is measured here apart from Prometheus's evaluation, so that a change to it shows in a figure
that does not move with Prometheus or the machine's other load: `bench/loop_bench.py` gives the
figure against a real Prometheus.

Set-up: a child process serves canned Prometheus answers (the exact JSON Prometheus writes for a
`by (function_name)` instant query, the evaluation time stamped at each request) over HTTP to the real
`PrometheusReader`; the functions are `bench/loop_bench.py`'s (a third by capacity, a fifth allowed to
go to zero) in a `MemoryProvider`. Each tick `--churn` of the functions get new figures (a new started
count and rps). In the same run, on the same answers, three controllers tick, one after another (each alone in
the process, so that none pays for the garbage collection of the others' objects):
  * baseline: the general JSON decoding (`json.loads` + a dict per sample) and a decision per function,
    as before issue 15;
  * full: the fast decoding and a decision per function (`Controller(incremental=False)`);
  * ours: the fast decoding and the reuse of provably unchanged decisions (the default), with CPython's
    default collector thresholds;
  * frozen: ours, with `gc.freeze()` once the provider has listed its functions (the garbage collector
    then no longer re-scans the 50,000 functions' cached objects);
  * tuned: ours as `autoscaler run` runs it: `autoscaler.runtime.settle_collector()` once the provider
    has listed (frozen, and young collections every 20,000 allocations instead of 700).
A fifth of the functions (the ones allowed to go to zero) sit at zero replicas with no calls, as many
functions of a large cluster do (`--no-zero`: none). Times are wall and CPU (this process)
medians over `--ticks`, and the garbage collector's share (`gc.callbacks`), with the load average.
The decoding of one answer is timed apart: the fast path, `json.loads` and `orjson.loads` (each then
through the general path's `vector`), minimum CPU of 5.

    python bench/tick_bench.py [--functions 50000] [--namespaces 500] [--ticks 5] [--churn 0.1]
                               [--no-zero]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from autoscaler import _promql
from autoscaler.config import ControllerSettings, MetricsSettings
from autoscaler.controller import Controller
from autoscaler.interfaces import FunctionRef
from autoscaler.metrics import PrometheusReader
from autoscaler.runtime import settle_collector
from bench.loop_bench import TimedReader, function_keys, function_labels
from tests.support.memory import MemoryProvider

DEFAULT_THRESHOLDS = gc.get_threshold()

STAMP = "1999999999.999"  # replaced by the evaluation time in each answer
SOURCE = "gateway_service_count"
# Load field -> the name its query's text starts with (see `settings`).
FIELDS = {
    "rps": "rps",
    "inflight": "inflight",
    "cpu": "cpu",
    "started_total": "started",
    "pending": "pending",
}


def figures(field: str, i: int, generation: int, *, idle: bool = False) -> float:
    """Function i's figure for one load field after `generation` rounds of churn on it."""
    if idle:  # at zero, no calls: the started counter stands still
        return 1000.0 if field == "started_total" else 0.0
    if field == "rps":
        return (i % 100) * 0.5 + generation * 0.25
    if field == "inflight":
        return float(i % 7)
    if field == "cpu":
        return (i % 10) * 50.0
    if field == "started_total":
        return 1000.0 + generation
    return 0.0


def at_zero(i: int, args: argparse.Namespace) -> bool:
    """Whether function i sits at zero: the ones allowed to (`function_labels`), with `--at-zero`."""
    return args.at_zero and i % 5 == 0


def answer(keys: list[str], field: str, generations: list[int], idle: list[bool]) -> bytes:
    """The JSON Prometheus writes for one instant vector `by (function_name)`."""
    result = [
        {
            "metric": {"function_name": key},
            "value": [0, f"{figures(field, i, generations[i], idle=idle[i]):g}"],
        }
        for i, key in enumerate(keys)
    ]
    text = json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}, separators=(",", ":")
    )
    return text.replace('"value":[0,', f'"value":[{STAMP},').encode()


def serve(conn: multiprocessing.connection.Connection) -> None:
    """Child process: serve the answers the parent sends (field -> body) to /api/v1/query."""
    from aiohttp import web

    bodies: dict[str, bytes] = {}

    async def query(request: web.Request) -> web.Response:
        field = next(f for f in bodies if f"#{f}#" in request.query["query"])
        stamp = f"{time.time():.3f}".encode()
        return web.Response(
            body=bodies[field].replace(STAMP.encode(), stamp), content_type="application/json"
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query", query)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send(runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, conn.recv)
            if message is None:
                break
            bodies.update(message)
            conn.send("ok")
        await runner.cleanup()

    asyncio.run(main())


@contextmanager
def general_decoding() -> Iterator[None]:
    """The reader without the fast path: every answer through `json.loads` and `vector`."""
    fast = _promql.fast_vector
    _promql.fast_vector = lambda body, *, now, stale_after: None
    try:
        yield
    finally:
        _promql.fast_vector = fast


def settings(port: int) -> MetricsSettings:
    """Each query's text starts with a comment naming its field, so the server knows what to answer."""
    return MetricsSettings(
        prometheus_url=f"http://127.0.0.1:{port}",
        query_source=SOURCE,
        query_timeout=30.0,
        query_rps="#rps#\nrps",
        query_inflight="#inflight#\ninflight",
        query_cpu="#cpu#\ncpu",
        query_started="#started#\nstarted",
        query_pending="#pending#\npending",
    )


KINDS = ("baseline", "full", "ours", "frozen", "tuned")


class GcClock:
    """CPU seconds spent in the garbage collector, from `gc.callbacks` (the collecting thread's CPU, so
    that time the process waits for a core on a busy machine is not counted)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._since = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._since


def provider(keys: list[str], args: argparse.Namespace) -> MemoryProvider:
    """`bench_provider`'s functions, those at zero with 0 replicas."""
    provider = MemoryProvider()
    for i, key in enumerate(keys):
        ref = FunctionRef.parse(key, default_namespace="openfaas-fn")
        replicas = 0 if at_zero(i, args) else 1
        provider.add(ref.name, namespace=ref.namespace, labels=function_labels(i), replicas=replicas)
    return provider


async def one(
    kind: str,
    args: argparse.Namespace,
    conn: multiprocessing.connection.Connection,
    timed: TimedReader,
    *,
    first: float,
) -> tuple[list[tuple[float, ...]], list[int], dict[str, object], int]:
    """One controller's ticks: (wall, CPU, reading, GC) per measured tick, reused, decisions, queries."""
    keys = function_keys(args.functions, args.namespaces)
    idle = [at_zero(i, args) for i in range(len(keys))]
    loop = Controller(
        provider=provider(keys, args),
        reader=timed,
        settings=ControllerSettings(),
        registry=CollectorRegistry(),
        incremental=kind != "full" and kind != "baseline",
    )
    if kind == "frozen":
        gc.freeze()
    if kind == "tuned":
        settle_collector()  # as `autoscaler run` does once the provider has listed the functions
    clock = GcClock()
    gc.callbacks.append(clock)
    times: list[tuple[float, ...]] = []
    reused: list[int] = []
    generations = [0] * len(keys)
    churned = max(0, round(args.churn * len(keys)))
    try:
        for tick in range(args.ticks + 2):  # two warm-up ticks: the first patches, the second repeats
            if tick >= 2:
                for i in range(tick * churned, (tick + 1) * churned):
                    generations[i % len(keys)] += 1
            conn.send({FIELDS[f]: answer(keys, f, generations, idle) for f in FIELDS})
            conn.recv()
            wall, cpu, collecting = time.perf_counter(), time.process_time(), clock.seconds
            with general_decoding() if kind == "baseline" else contextlib.nullcontext():
                report = await loop.tick(now=first + 2.0 * tick)
            if timed.reader.last_errors or len(report.decisions) != len(keys):
                raise RuntimeError(f"{kind}: tick incomplete: {timed.reader.last_errors}")
            if tick >= 2:
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                times.append((wall, cpu, timed.last_seconds, clock.seconds - collecting))
                reused.append(loop.reused)
    finally:
        gc.callbacks.remove(clock)
        gc.unfreeze()
        gc.set_threshold(*DEFAULT_THRESHOLDS)
    await loop.close()
    return times, reused, dict(report.decisions), report.queries


async def run(args: argparse.Namespace, conn: multiprocessing.connection.Connection, port: int) -> None:
    """Each controller alone in turn (its own heap, as in production) over the same ticks."""
    times: dict[str, list[tuple[float, ...]]] = {}
    reused: dict[str, list[int]] = {}
    decided: dict[str, object] = {}
    queries = 0
    first = time.time()  # every controller ticks at the same times: their messages must be the same
    async with PrometheusReader(settings=settings(port)) as reader:
        timed = TimedReader(reader)
        for kind in KINDS:
            times[kind], reused[kind], decided[kind], queries = await one(
                kind, args, conn, timed, first=first
            )
            gc.collect()
    if any(decided[kind] != decided["baseline"] for kind in KINDS):
        raise RuntimeError("the controllers decided differently")
    report_figures(args, times, reused["ours"], queries=queries)
    decoding(args)


def decoding(args: argparse.Namespace) -> None:
    """CPU to read one answer of every function: the fast path against json.loads and orjson.loads."""
    keys = function_keys(args.functions, args.namespaces)
    now = time.time()
    body = answer(keys, "rps", [0] * len(keys), [False] * len(keys)).replace(
        STAMP.encode(), f"{now:.3f}".encode()
    )

    def general(loads: Callable[[bytes], Any]) -> Callable[[], object]:
        return lambda: _promql.vector(loads(body)["data"], now=now, stale_after=60.0, where="", flag="")

    ways: dict[str, Callable[[], object]] = {
        "fast path": lambda: _promql.fast_vector(body, now=now, stale_after=60.0),
        "json.loads + vector": general(json.loads),
    }
    try:
        import orjson

        ways["orjson.loads + vector"] = general(orjson.loads)
        ways["orjson.loads alone"] = lambda: orjson.loads(body)
    except ImportError:
        print("  (orjson is not installed: not compared)")
    print(f"  decoding one answer ({len(body) / 2**20:.1f} MiB, {len(keys)} functions), min CPU of 5:")
    for name, way in ways.items():
        best = math.inf
        for _ in range(5):
            cpu = time.process_time()
            way()
            best = min(best, time.process_time() - cpu)
        print(f"    {name:22} {best * 1000:6.0f} ms")


def report_figures(
    args: argparse.Namespace,
    times: dict[str, list[tuple[float, ...]]],
    reused: list[int],
    *,
    queries: int,
) -> None:
    def median(kind: str, at: int) -> float:
        return statistics.median(t[at] for t in times[kind])

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    zero = ", a fifth at zero" if args.at_zero else ""
    print(
        f"functions: {args.functions} in {args.namespaces} namespaces{zero}, churn {args.churn:.0%} "
        f"per tick, {args.ticks} ticks, {queries} queries per tick, load average {load} "
        f"({os.cpu_count()} cpus)"
    )
    for kind in KINDS:
        wall, cpu, read, collecting = (median(kind, at) * 1000 for at in range(4))
        print(
            f"  {kind:9} tick median {wall:6.0f} ms wall ({read:4.0f} reading), {cpu:6.0f} ms CPU, "
            f"{collecting:4.0f} ms CPU in the garbage collector"
        )
    print(f"  decisions reused per tick (ours): median {statistics.median(reused):.0f} of {args.functions}")
    for kind in (k for k in KINDS if k != "ours"):
        print(
            f"  ratio {kind}/ours: {median(kind, 0) / median('ours', 0):.2f}x wall, "
            f"{median(kind, 1) / median('ours', 1):.2f}x CPU"
        )
    ok = median("ours", 0) < 1.0 and queries <= 5
    print(f"goal (controller's share of a tick < 1 s, <= 5 queries): {'met' if ok else 'NOT met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--functions", type=int, default=50_000)
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--ticks", type=int, default=5, help="measured ticks (after two warm-up ticks)")
    parser.add_argument("--churn", type=float, default=0.1, help="fraction of functions whose load changes")
    parser.add_argument(
        "--no-zero", dest="at_zero", action="store_false", help="no function at zero (all at 1 replica)"
    )
    args = parser.parse_args()
    if args.functions < 1 or args.ticks < 1 or not 0 <= args.churn <= 1:
        parser.error("--functions and --ticks must be positive, --churn within [0, 1]")
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(child,), daemon=True)
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the answer server did not start within 60 s")
        asyncio.run(run(args, parent, parent.recv()))
    finally:
        parent.send(None)
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
