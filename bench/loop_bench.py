"""Benchmark: one control-loop tick over 10,000 (or 50,000) functions, against one query per function.

Why it exists: the loop must stay cheap as the cluster grows. It reads load with a constant number
of PromQL queries (`sum by (function_name)`) instead of one query per function; this measures both
in the same run, against a real Prometheus scraping a gateway-style exporter.

Set-up: the exporter (in a child process, so its rendering does not share this process's GIL)
serves N functions; Prometheus scrapes it every `--scrape-interval` seconds (default 15 s, the global
interval of OpenFaaS's chart, which scrapes its gateway's pods every 5 s), rate window `--rate-window`
(default 1m, the loop's default). At 50,000 functions the exporter serves 250,000 samples: rendering
them in Python and ingesting them took 4.8 s of a 5 s scrape on the busy 2-core machine, and at 2 s
(the earlier set-up) scrapes overran their timeout, the series went stale and the answers came back
empty: the benchmark measured the set-up starving, not the tick. `--recording-rules` gives
Prometheus recording rules for the five figures (`loop_bench_prometheus.LOOP_GROUP` beside the
dashboard's rules of `manifests/monitoring.yaml`) and points the reader's queries at the recorded
series: measured at 50,000 functions they bought no time, so the manifests do not ship them.
Prometheus's and the exporter's CPU share is printed while idle and during the ticks, with each
query's own timings (`stats=all`) and this process's decoding (`loop_bench_prometheus`). We then time
  * ours: `Controller.tick()` (PrometheusReader.read() + a decision per function + patching), and
    `PrometheusReader.read()` alone, after `autoscaler.runtime.settle_collector()` as `autoscaler run`
    calls it; the `--ticks` ticks before it, with CPython's default collector, are its baseline;
  * baseline: one instant query per function (its rps figure), issued one after another on a
    keep-alive session, for a fixed sample of functions (default 200) and extrapolated to N, plus the
    same decision time as ours.
Goal: a tick over 10,000 functions under 1 s with at most 5 queries.

Then the cluster side (`loop_bench_cluster`, `--burst 0` skips it): against a fake API server serving
the same functions as faas-netes Deployments across `--namespaces`, a controller process's RSS with
its watch cache filled, its first tick (list, seed, decide) and how long a burst of `--burst` scale
writes (and their Events) takes through the API write budget, wake-ups first; with more than 10,000
functions the same figures at 10,000 (`--compare`, 0 skips) are measured in the same run.

    python bench/loop_bench.py [--functions 10000] [--namespaces 1] [--ticks 5] [--sample 200]
                               [--burst 5000] [--compare 10000] [--no-baseline]
                               [--scrape-interval 15] [--rate-window 1m] [--recording-rules]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoscaler.config import ControllerSettings, MetricsSettings
from autoscaler.controller import Controller
from autoscaler.interfaces import FunctionRef, LoadSnapshot
from autoscaler.metrics import PrometheusReader
from autoscaler.runtime import settle_collector
from bench.loop_bench_cluster import cluster_figures, print_cluster
from bench.loop_bench_prometheus import (
    RulesPrometheus,
    cpu_seconds,
    print_query_stats,
    query_stats,
    recorded_settings,
    scrape_health,
)
from tests.support.exporter import GatewayExporter
from tests.support.memory import MemoryProvider
from tests.support.prometheus import PrometheusServer, find_binary

NAMESPACE = "openfaas-fn"


def function_keys(count: int, namespaces: int = 1) -> list[str]:
    """`count` functions, spread round-robin over `namespaces` (one: openfaas-fn)."""
    if namespaces <= 1:
        return [f"fn-{i:05d}.{NAMESPACE}" for i in range(count)]
    return [f"fn-{i:05d}.fn-ns-{i % namespaces:03d}" for i in range(count)]


def function_labels(i: int) -> dict[str, str]:
    """A third by capacity and a fifth allowed to go to zero."""
    labels = {"com.openfaas.scale.max": "50"}
    if i % 3 == 1:
        labels.update({"com.openfaas.scale.type": "capacity", "com.openfaas.scale.target": "5"})
    if i % 5 == 0:
        labels.update({"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "5m"})
    return labels


def serve_exporter(keys: list[str], conn: multiprocessing.connection.Connection) -> None:
    """Child process: serve the functions `keys` with varied load until told to stop."""
    with GatewayExporter() as exporter:
        for i, key in enumerate(keys):
            exporter.set_function(key, rps=(i % 100) * 0.5, inflight=i % 7, cpu=(i % 10) * 0.05)
        conn.send(exporter.target)
        conn.recv()  # any message means stop


def bench_provider(keys: list[str]) -> MemoryProvider:
    """The functions of the run (labels: `function_labels`), in memory."""
    provider = MemoryProvider()
    for i, key in enumerate(keys):
        ref = FunctionRef.parse(key, default_namespace=NAMESPACE)
        provider.add(ref.name, namespace=ref.namespace, labels=function_labels(i), replicas=1)
    return provider


async def wait_for_all(prometheus: PrometheusServer, count: int, *, window: str, timeout: float) -> None:
    queries = [f"count(sum by (function_name) (rate(gateway_function_invocation_total[{window}])))"]
    if isinstance(prometheus, RulesPrometheus):  # and until the rules have recorded every function
        queries += [
            f"count({record})"
            for record in (
                "function_name:gateway_function_invocation:rate1m",
                "function_name:gateway_function_invocation_started:sum",
            )
        ]
    deadline = time.monotonic() + timeout
    for query in queries:
        while True:  # a count over 50,000 series may outlast one poll's timeout on a busy machine
            try:
                left = deadline - time.monotonic()
                await prometheus.wait_for_series(
                    query, lambda r: next(iter(r.values()), 0) >= count, timeout=left
                )
                break
            except (TimeoutError, aiohttp.ClientError):
                if time.monotonic() > deadline:
                    raise


async def baseline(url: str, keys: list[str], window: str) -> float:
    """Seconds for one rps query per function in `keys`, one after another on a keep-alive session."""
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for key in keys:
            query = f'sum(rate(gateway_function_invocation_total{{function_name="{key}"}}[{window}]))'
            async with session.get(f"{url}/api/v1/query", params={"query": query}) as response:
                body = await response.json()
                if body.get("status") != "success":
                    raise RuntimeError(f"baseline query failed: {body}")
        return time.perf_counter() - started


class TimedReader:
    """Wraps the reader to time each read the controller makes (read time vs. decision time)."""

    def __init__(self, reader: PrometheusReader) -> None:
        self.reader = reader
        self.last_seconds = 0.0
        self.last_snapshot: LoadSnapshot | None = None

    async def read(self, *, unused: frozenset[str] = frozenset()) -> LoadSnapshot:
        started = time.perf_counter()
        self.last_snapshot = await self.reader.read(unused=unused)
        self.last_seconds = time.perf_counter() - started
        return self.last_snapshot

    async def close(self) -> None:
        await self.reader.close()


async def measure(args: argparse.Namespace, prometheus: PrometheusServer, exporter_pid: int) -> None:
    keys = function_keys(args.functions, args.namespaces)
    if args.recording_rules:
        settings = recorded_settings(prometheus.url)
    else:
        settings = MetricsSettings(
            prometheus_url=prometheus.url, rate_window=args.rate_window, query_timeout=60.0
        )
    provider = bench_provider(keys)
    assert prometheus.process is not None
    pids = {"prometheus": prometheus.process.pid, "exporter": exporter_pid}
    idle = await cpu_share(pids, seconds=max(10.0, 2 * args.scrape_interval))
    async with PrometheusReader(settings=settings) as reader:
        timed = TimedReader(reader)
        controller = Controller(
            provider=provider, reader=timed, settings=ControllerSettings(), registry=CollectorRegistry()
        )
        first = await controller.tick(now=time.time())  # patches every function whose load calls for it
        # The same-run baseline of the collector's set-up: ticks with CPython's default thresholds,
        # then `settle_collector()`, as `autoscaler run` calls it once every function is listed.
        own = time.process_time()
        unsettled = await measured_ticks(controller, timed, args, prometheus.url)
        unsettled_cpu = (time.process_time() - own) / args.ticks
        settle_collector()
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        ticking, own = time.monotonic(), time.process_time()
        ticks, reads, queries = await measured_ticks(controller, timed, args, prometheus.url)
        spent = time.monotonic() - ticking
        busy = {name: (cpu_seconds(pid) - before[name]) / spent for name, pid in pids.items()}
        busy["this process"] = (time.process_time() - own) / spent
        await controller.close()
        stats = await query_stats(prometheus.url, reader.queries, stale_after=settings.stale_after)
    health = await scrape_health(prometheus.url)

    tick = statistics.median(ticks)
    read = statistics.median(reads)
    decide = statistics.median(t - r for t, r in zip(ticks, reads, strict=True))

    source = "recorded series (--recording-rules)" if args.recording_rules else "raw series"
    print(
        f"functions: {args.functions} in {args.namespaces} namespace(s), scrape interval "
        f"{args.scrape_interval:g}s, rate window {args.rate_window}, queries over {source}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)"
    )
    print(f"  set-up, idle (no queries): {shares(idle)}; last scrape: {health}")
    print(f"  during the ticks:          {shares(busy)}")
    # CPU per tick moves less with the machine's other load than wall time does.
    extra = (busy["prometheus"] - idle["prometheus"]) * spent / len(ticks)
    mine = busy["this process"] * spent / len(ticks)
    print(f"  CPU per tick: Prometheus {extra:.2f} s above its idle scraping, this process {mine:.2f} s")
    print(f"first tick (patches {len(first.patched)} functions): {first.seconds * 1000:.0f} ms")
    low, high = min(ticks) * 1000, max(ticks) * 1000
    print(
        f"ours:     tick median {tick * 1000:.0f} ms over {len(ticks)} ticks (min {low:.0f}, max {high:.0f})"
    )
    print(f"          of which read() {read * 1000:.0f} ms, decisions {decide * 1000:.0f} ms (medians)")
    print(f"          queries per tick: {sorted(queries)}")
    before_tick, before_read = statistics.median(unsettled[0]), statistics.median(unsettled[1])
    before_decide = statistics.median(t - r for t, r in zip(unsettled[0], unsettled[1], strict=True))
    print(
        f"  the {args.ticks} ticks before, with CPython's default collector thresholds (no "
        f"settle_collector): tick median {before_tick * 1000:.0f} ms, read() {before_read * 1000:.0f} ms, "
        f"decisions {before_decide * 1000:.0f} ms, this process {unsettled_cpu:.2f} s CPU per tick"
    )
    print(
        f"  ratio default collector / settled: {before_tick / tick:.2f}x tick, "
        f"{before_decide / decide:.2f}x decisions, {unsettled_cpu / mine:.2f}x this process's CPU"
    )
    print_query_stats(stats)
    if args.baseline:
        await one_query_per_function(
            args, prometheus.url, keys, tick=tick, decide=decide, queries=max(queries)
        )
    ok = tick < 1.0 and max(queries) <= 5
    print(f"goal (tick < 1 s, <= 5 queries over {args.functions} functions): {'met' if ok else 'NOT met'}")


async def measured_ticks(
    controller: Controller, timed: TimedReader, args: argparse.Namespace, url: str
) -> tuple[list[float], list[float], set[int]]:
    """`--ticks` ticks, each checked complete: (tick seconds, read seconds, queries per tick)."""
    ticks, reads, queries = [], [], set()
    for _ in range(args.ticks):
        report = await controller.tick(now=time.time())
        snapshot = timed.last_snapshot
        if snapshot is None or snapshot.error or len(snapshot.loads) < args.functions:
            got = "no snapshot" if snapshot is None else f"{len(snapshot.loads)} loads, {snapshot.error}"
            health = await scrape_health(url)  # a scrape past its timeout empties them
            raise RuntimeError(f"read incomplete ({got}); last scrape: {health}")
        if len(report.decisions) != args.functions:
            raise RuntimeError(f"tick decided {len(report.decisions)} of {args.functions} functions")
        ticks.append(report.seconds)
        reads.append(timed.last_seconds)
        queries.add(report.queries)
    return ticks, reads, queries


async def cpu_share(pids: dict[str, int], *, seconds: float) -> dict[str, float]:
    """Cores each process used over `seconds` of doing nothing here (the set-up's own load)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


def shares(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f} cores" for name, value in cores.items())


async def one_query_per_function(
    args: argparse.Namespace, url: str, keys: list[str], *, tick: float, decide: float, queries: int
) -> None:
    """The baseline: a sample of per-function queries, extrapolated to every function."""
    sample = keys[:: max(1, len(keys) // args.sample)][: args.sample]
    sample_seconds = await baseline(url, sample, args.rate_window)
    per_query = sample_seconds / len(sample)
    base_tick = per_query * args.functions + decide
    print(
        f"baseline: 1 query per function, sequential; measured {len(sample)} queries in "
        f"{sample_seconds * 1000:.0f} ms ({per_query * 1000:.2f} ms each);"
    )
    print(
        f"          extrapolated to {args.functions}: {base_tick:.2f} s per tick "
        f"with {args.functions} queries (plus the same decision time)"
    )
    print(f"ratio baseline/ours: {base_tick / tick:.1f}x time, {args.functions / queries:.0f}x queries")


def cluster_side(args: argparse.Namespace, prometheus_url: str) -> None:
    """RSS, first tick and write-budget drain at --compare functions (if fewer) and at --functions."""
    keys = function_keys(args.functions, args.namespaces)
    labels = [function_labels(i) for i in range(len(keys))]
    sizes = [n for n in (args.compare,) if 0 < n < args.functions] + [args.functions]
    print(f"cluster side (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    for n in sizes:
        figures = cluster_figures(keys[:n], labels[:n], prometheus_url, min(args.burst, n))
        print_cluster(figures)
        rss_ok = figures["rss_tick"] < 500
        first = figures["list"] + figures["tick"]
        print(f"    goal (RSS < 500 MiB): {'met' if rss_ok else 'NOT met'}; first tick {first:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--functions", type=int, default=10_000, help="functions the exporter serves")
    parser.add_argument("--ticks", type=int, default=5, help="measured ticks (after one warm-up tick)")
    parser.add_argument(
        "--sample", type=int, default=200, help="functions queried one by one for the baseline"
    )
    parser.add_argument("--namespaces", type=int, default=1, help="namespaces the functions spread over")
    parser.add_argument(
        "--burst", type=int, default=5000, help="scale writes of the burst (0: no cluster side)"
    )
    parser.add_argument("--compare", type=int, default=10_000, help="cluster side also at this size (0: not)")
    parser.add_argument(
        "--scrape-interval", type=float, default=15.0, help="seconds between scrapes (and scrape timeout)"
    )
    parser.add_argument("--rate-window", default="1m", help="the rate() window of the queries")
    parser.add_argument(
        "--recording-rules",
        action="store_true",
        help="Prometheus records the loop's five figures (loop_bench_prometheus); the queries read them",
    )
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the one-query-per-function baseline",
    )
    args = parser.parse_args()
    if args.functions < 1 or args.ticks < 1 or args.sample < 1 or args.namespaces < 1:
        parser.error("--functions, --namespaces, --ticks and --sample must be positive")
    if not args.scrape_interval > 0:
        parser.error("--scrape-interval must be a positive number of seconds")
    if args.recording_rules and args.rate_window != "1m":
        parser.error("--recording-rules records 1m rates: leave --rate-window at 1m")
    args.sample = min(args.sample, args.functions)
    if find_binary() is None:
        print(
            "the prometheus binary is missing: install it with apt-get install -y prometheus", file=sys.stderr
        )
        return 2

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    keys = function_keys(args.functions, args.namespaces)
    exporter = context.Process(target=serve_exporter, args=(keys, child), daemon=True)
    exporter.start()
    with tempfile.TemporaryDirectory(prefix="loop-bench-") as tmp:
        kind = RulesPrometheus if args.recording_rules else PrometheusServer
        prometheus = kind(
            data_dir=Path(tmp), targets=[], scrape_interval=args.scrape_interval, binary=find_binary()
        )
        try:
            if not parent.poll(60):
                raise RuntimeError("the exporter did not start within 60 s")
            prometheus.targets = [parent.recv()]
            prometheus.start()
            started = time.monotonic()
            asyncio.run(wait_for_all(prometheus, args.functions, window=args.rate_window, timeout=600))
            print(f"prometheus has all {args.functions} functions after {time.monotonic() - started:.1f} s")
            assert exporter.pid is not None
            asyncio.run(measure(args, prometheus, exporter.pid))
            if args.burst > 0:
                cluster_side(args, prometheus.url)
        finally:
            prometheus.stop()
            parent.send("stop")
            exporter.join(timeout=10)
            if exporter.is_alive():
                exporter.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
