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
  * ours: the fast decoding and the reuse of provably unchanged decisions (the default).
Times are wall and CPU (this process) medians over `--ticks`, with the load average.

    python bench/tick_bench.py [--functions 50000] [--namespaces 500] [--ticks 5] [--churn 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from autoscaler import _promql
from autoscaler.config import ControllerSettings, MetricsSettings
from autoscaler.controller import Controller
from autoscaler.metrics import PrometheusReader
from bench.loop_bench import TimedReader, bench_provider, function_keys

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


def figures(field: str, i: int, generation: int) -> float:
    """Function i's figure for one load field after `generation` rounds of churn on it."""
    if field == "rps":
        return (i % 100) * 0.5 + generation * 0.25
    if field == "inflight":
        return float(i % 7)
    if field == "cpu":
        return (i % 10) * 50.0
    if field == "started_total":
        return 1000.0 + generation
    return 0.0


def answer(keys: list[str], field: str, generations: list[int]) -> bytes:
    """The JSON Prometheus writes for one instant vector `by (function_name)`."""
    result = [
        {"metric": {"function_name": key}, "value": [0, f"{figures(field, i, generations[i]):g}"]}
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


async def run(args: argparse.Namespace, conn: multiprocessing.connection.Connection, port: int) -> None:
    """Each controller alone in turn (its own heap, as in production) over the same ticks."""
    keys = function_keys(args.functions, args.namespaces)
    times: dict[str, list[tuple[float, float, float]]] = {}
    reused: list[int] = []
    decided: dict[str, object] = {}
    first = time.time()
    queries = 0
    async with PrometheusReader(settings=settings(port)) as reader:
        timed = TimedReader(reader)
        for kind in ("baseline", "full", "ours"):
            loop = Controller(
                provider=bench_provider(keys),
                reader=timed,
                settings=ControllerSettings(),
                registry=CollectorRegistry(),
                incremental=kind == "ours",
            )
            times[kind] = []
            generations = [0] * len(keys)
            churned = max(0, round(args.churn * len(keys)))
            for tick in range(args.ticks + 2):  # two warm-up ticks: the first patches, the second repeats
                if tick >= 2:
                    for i in range(tick * churned, (tick + 1) * churned):
                        generations[i % len(keys)] += 1
                conn.send({FIELDS[f]: answer(keys, f, generations) for f in FIELDS})
                conn.recv()
                wall, cpu = time.perf_counter(), time.process_time()
                with general_decoding() if kind == "baseline" else contextlib.nullcontext():
                    report = await loop.tick(now=first + 2.0 * tick)
                if reader.last_errors or len(report.decisions) != len(keys):
                    raise RuntimeError(f"{kind}: tick incomplete: {reader.last_errors}")
                if tick >= 2:
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    times[kind].append((wall, cpu, timed.last_seconds))
                    if kind == "ours":
                        reused.append(loop.reused)
            decided[kind] = report.decisions
            queries = report.queries
            del loop, report
            gc.collect()
    if not decided["baseline"] == decided["full"] == decided["ours"]:
        raise RuntimeError("the three controllers decided differently")
    report_figures(args, times, reused, queries=queries)


def report_figures(
    args: argparse.Namespace,
    times: dict[str, list[tuple[float, float, float]]],
    reused: list[int],
    *,
    queries: int,
) -> None:
    def median(kind: str, at: int) -> float:
        return statistics.median(t[at] for t in times[kind])

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"functions: {args.functions} in {args.namespaces} namespaces, churn {args.churn:.0%} per tick, "
        f"{args.ticks} ticks, {queries} queries per tick, load average {load} ({os.cpu_count()} cpus)"
    )
    for kind in ("baseline", "full", "ours"):
        wall, cpu, read = (median(kind, at) * 1000 for at in range(3))
        print(f"  {kind:9} tick median {wall:6.0f} ms wall ({read:4.0f} reading), {cpu:6.0f} ms CPU")
    print(f"  decisions reused per tick (ours): median {statistics.median(reused):.0f} of {args.functions}")
    for kind in ("baseline", "full"):
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
