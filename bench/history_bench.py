"""Benchmark: the what-if replay of a real Prometheus's history, against the same calls as a trace.

Why it exists: `autoscaler simulate --prometheus-url` is only worth trusting if, on real-looking data
at scale, it gives exactly the figures the trace replay gives for the same calls. Issue 14 asks for
a history replay of at least 100 functions from a real Prometheus; this builds one and measures it.

Set-up, all in one run on loopback:
  * the first `--functions` functions (file order, default 150) of the Azure 2019 day
    (`../shared/traces/azure2019-1000`) are named `fn-<hash prefix>.openfaas-fn`; their calls per
    minute become the gateway's started counter (`gateway_function_invocation_started{function_name}`,
    one sample a minute), written as OpenMetrics over `--days` days (default 7: the trace has one day,
    so the week is that same day repeated) ending two hours ago, and backfilled with
    `promtool tsdb create-blocks-from openmetrics` into a real `/usr/bin/prometheus` on a free port
    (with its query log on, so the range queries are counted from Prometheus's side);
  * ours: the real command `autoscaler simulate --prometheus-url URL --since 1d --until T --sizes FILE`
    as a subprocess, the sizes file giving each function its trace duration and memory;
  * baseline: `autoscaler simulate --trace DIR` on a trace directory holding exactly those functions
    (same keys, same order, same durations and memory, the same counts), in the same run.
Printed: both reports, whether their results are identical (they must be), the time each took, the
range queries and points per series each query asked for (Prometheus refuses more than 11,000), the
reader's peak RSS and Prometheus's RSS. Then the same for the whole `--days` range.

    python bench/history_bench.py [--functions 150] [--days 7] [--jobs 2] [--trace DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autoscaler.errors import ConfigError  # noqa: E402
from autoscaler.simulate.trace import TraceFunction, read_trace  # noqa: E402
from tests.support.prometheus import PrometheusServer, find_binary  # noqa: E402

DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "azure2019-1000"  # ../shared beside the project
NAMESPACE = "openfaas-fn"
METRIC = "gateway_function_invocation_started"
DAY = 1440  # minutes


@dataclass(frozen=True, slots=True)
class Function:
    """One benchmarked function: its gateway name and the trace's day of calls, duration and memory."""

    key: str  # NAME.NAMESPACE, also its HashFunction in the baseline trace (the arrivals' seed)
    counts: npt.NDArray[np.int64]
    duration_ms: float
    memory_mb: float


@dataclass(frozen=True, slots=True)
class Run:
    """One `autoscaler simulate` subprocess: its wall time, report, JSON and peak RSS."""

    seconds: float
    stdout: str
    doc: dict[str, Any]
    peak_rss_mb: float
    cpu_seconds: float  # user + system, the command's and its worker processes'


class LoggedPrometheus(PrometheusServer):
    """The tests' Prometheus with its query log on: every query's range and step, from its side."""

    def __init__(self, *, query_log: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query_log = query_log

    def config(self) -> dict[str, object]:
        config = super().config()
        glob = config["global"]
        assert isinstance(glob, dict)
        glob["query_log_file"] = str(self.query_log)
        return config


def pick(trace_dir: Path, count: int) -> list[Function]:
    """The first `count` functions of the trace, named as the gateway names them, sorted by name."""
    trace = read_trace(trace_dir, functions=count)
    if trace.minutes != DAY:
        raise ConfigError(f"{trace_dir} has {trace.minutes} minutes; this benchmark tiles one day")
    if len(trace.functions) < count:
        raise ConfigError(f"{trace_dir} has only {len(trace.functions)} functions")
    picked = [_function(fn) for fn in trace.functions]
    if len({fn.key for fn in picked}) != len(picked):
        raise ConfigError("two functions share a name prefix; the names would collide")
    return sorted(picked, key=lambda fn: fn.key)  # the history reader's order


def _function(fn: TraceFunction) -> Function:
    return Function(f"fn-{fn.key[:16]}.{NAMESPACE}", fn.counts, fn.duration * 1000.0, fn.memory_mb)


def write_trace_dir(directory: Path, functions: list[Function], *, days: int) -> Path:
    """A trace directory in the Azure 2019 layout holding exactly `functions`, their day `days` times."""
    directory.mkdir(parents=True, exist_ok=True)
    minutes = [str(m) for m in range(1, DAY * days + 1)]
    with (directory / "invocations.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["HashOwner", "HashApp", "HashFunction", "Trigger", *minutes])
        for fn in functions:
            out.writerow([fn.key, fn.key, fn.key, "http", *np.tile(fn.counts, days).tolist()])
    with (directory / "durations.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["HashOwner", "HashApp", "HashFunction", "Average"])
        out.writerows([fn.key, fn.key, fn.key, repr(fn.duration_ms)] for fn in functions)
    with (directory / "memory.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["HashOwner", "HashApp", "AverageAllocatedMb"])
        out.writerows([fn.key, fn.key, repr(fn.memory_mb)] for fn in functions)
    return directory


def write_sizes(path: Path, trace_dir: Path) -> Path:
    """The sizes file giving each function the duration and memory the baseline trace replay uses."""
    trace = read_trace(trace_dir)
    entries = {fn.key: {"duration": f"{fn.duration!r}s", "memory_mb": fn.memory_mb} for fn in trace.functions}
    path.write_text(yaml.safe_dump({"functions": entries}), encoding="utf-8")
    return path


def write_openmetrics(path: Path, functions: list[Function], *, first: float, days: int) -> int:
    """Each function's started counter, one sample a minute from `first`, `days` days; the sample count."""
    samples = 0
    with path.open("w", encoding="utf-8") as out:
        for fn in functions:
            totals = np.concatenate([[0], np.cumsum(np.tile(fn.counts, days))]).tolist()
            name = f'{METRIC}{{function_name="{fn.key}"}} '
            out.writelines(f"{name}{total} {first + m * 60:.0f}\n" for m, total in enumerate(totals))
            samples += len(totals)
        out.write("# EOF\n")
    return samples


def simulate(argv: list[str], *, json_path: Path, jobs: int) -> Run:
    """Run `autoscaler simulate ARGV --json FILE` as a subprocess; its time, output and peak RSS."""
    command = [sys.executable, "-m", "autoscaler", "simulate", *argv, "--json", str(json_path)]
    command += ["--jobs", str(jobs)]
    print(f"running autoscaler simulate {' '.join(argv[:2])} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {child.returncode}:\n{stderr[-2000:]}")
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, stdout, doc, usage.ru_maxrss / 1024.0, cpu)  # Linux: ru_maxrss in KiB


@dataclass(frozen=True, slots=True)
class Query:
    """One range query as Prometheus's query log saw it."""

    points: int  # per series: (end - start) / step + 1, which Prometheus caps at 11,000
    samples: int  # totalQueryableSamples
    peak: int  # peakSamples (Prometheus refuses a query above --query.max-samples, 50,000,000)
    seconds: float  # execTotalTime


def range_queries(log: Path, *, skip: int) -> list[Query]:
    """The range queries in Prometheus's query log after its first `skip` lines."""
    found = []
    for line in log.read_text(encoding="utf-8").splitlines()[skip:]:
        entry = json.loads(line)
        params, stats = entry.get("params", {}), entry.get("stats", {})
        if params.get("step"):
            start, end = (_stamp(params[k]) for k in ("start", "end"))
            samples = stats.get("samples", {})
            found.append(
                Query(
                    points=round((end - start) / float(params["step"])) + 1,
                    samples=int(samples.get("totalQueryableSamples", 0)),
                    peak=int(samples.get("peakSamples", 0)),
                    seconds=float(stats.get("timings", {}).get("execTotalTime", 0.0)),
                )
            )
    return found


REPLAY_CODE = ("policies", "autoscaler/simulate", "autoscaler/commands/simulate.py", "autoscaler/spec.py")


def source_stamp() -> str:
    """A digest of the code both replays run: another edit of the tree mid-run spoils the comparison."""
    digest = hashlib.sha256()
    for part in REPLAY_CODE:
        path = ROOT / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def rss_mb(pid: int) -> tuple[float, float]:
    """A process's resident set and its peak (VmRSS, VmHWM) in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    rss, peak = (float(fields[k].split()[0]) / 1024.0 for k in ("VmRSS", "VmHWM"))
    return rss, peak


def differences(ours: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """What differs between the two JSON reports' results and totals (empty: identical)."""
    found = [
        f"{key}: history {ours.get(key)!r}, trace {base.get(key)!r}"
        for key in ("functions", "invocations", "policy_evaluations")
        if ours.get(key) != base.get(key)
    ]
    rows = {row["policy"]: row for row in base["results"]}
    for row in ours["results"]:
        other = rows.get(row["policy"], {})
        found.extend(
            f"{row['policy']} {name}: history {value!r}, trace {other.get(name)!r}"
            for name, value in row.items()
            if other.get(name) != value
        )
    if [r["policy"] for r in ours["results"]] != [r["policy"] for r in base["results"]]:
        found.append("the two reports list different policies")
    return found


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_times(ours: Run, base: Run) -> None:
    """Each run's wall time (simulating, and reading the calls), CPU and peak RSS, and the ratios."""
    for name, run in (("ours:    ", ours), ("baseline:", base)):
        simulated = float(run.doc["elapsed_s"])
        print(
            f"{name} {run.seconds:.1f} s wall, of which simulating {simulated:.1f} s and reading the calls "
            f"(with start-up) {run.seconds - simulated:.1f} s; {run.cpu_seconds:.1f} s CPU; "
            f"peak RSS {run.peak_rss_mb:.0f} MB"
        )
    print(
        f"ratio ours/baseline: {ours.seconds / base.seconds:.2f}x wall time, "
        f"{ours.cpu_seconds / base.cpu_seconds:.2f}x CPU"
    )


def compare(
    label: str,
    *,
    days: int,
    end: float,
    functions: list[Function],
    prometheus: LoggedPrometheus,
    sizes: Path,
    work: Path,
    jobs: int,
) -> bool:
    """One history replay against its baseline over the `days` days ending at `end`; True if identical."""
    trace_dir = write_trace_dir(work / f"trace-{days}d", functions, days=days)
    skip, stamp = _lines(prometheus.query_log), source_stamp()
    argv = ["--prometheus-url", prometheus.url, "--since", f"{days}d", "--until", iso(end)]
    ours = simulate([*argv, "--sizes", str(sizes)], json_path=work / f"history-{days}d.json", jobs=jobs)
    assert prometheus.process is not None
    rss, peak = rss_mb(prometheus.process.pid)
    queries = range_queries(prometheus.query_log, skip=skip)
    base = simulate(["--trace", str(trace_dir)], json_path=work / f"trace-{days}d.json", jobs=jobs)
    changed = source_stamp() != stamp
    print(f"\n=== {label}: {iso(end - days * 86400)} .. {iso(end)} ===")
    print(f"--- ours: autoscaler simulate {' '.join(argv)} --sizes {sizes.name}")
    print(ours.stdout.rstrip())
    print(f"--- baseline: autoscaler simulate --trace {trace_dir.name}/")
    print(base.stdout.rstrip())
    found = differences(ours.doc, base.doc)
    print(f"--- {label}: {len(functions)} functions, {ours.doc['invocations']:,} calls")
    print(f"identical results: {'yes' if not found else 'NO'}")
    for line in found[:20]:
        print(f"  differs: {line}")
    print_times(ours, base)
    under = all(q.points <= 11_000 for q in queries)
    print(
        f"range queries: {len(queries)} (points per series at most 11,000 each: {'yes' if under else 'NO'})"
    )
    for q in queries:
        print(
            f"  {q.points:,} points per series, {q.samples:,} samples read, peak {q.peak:,} "
            f"(max-samples 50,000,000), {q.seconds:.2f} s in Prometheus"
        )
    print(f"prometheus RSS after the replay: {rss:.0f} MB (peak so far {peak:.0f} MB)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end: {load} (2 cores; other work shares them)")
    if changed:
        print(f"WARNING: {', '.join(REPLAY_CODE)} changed during this comparison (other work); run it again")
    return not found


def backfill(functions: list[Function], *, days: int, first: float, work: Path) -> Path:
    """The OpenMetrics file written and promtool's blocks made from it; prints the sizes and times."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    source = work / "history.om"
    started = time.perf_counter()
    samples = write_openmetrics(source, functions, first=first, days=days)
    written = time.perf_counter() - started
    blocks = work / "blocks"
    started = time.perf_counter()
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(blocks)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    made = time.perf_counter() - started
    print(
        f"history: {samples:,} samples ({source.stat().st_size / 1e6:.0f} MB OpenMetrics, written in "
        f"{written:.1f} s), promtool backfill {made:.1f} s into {len(list(blocks.iterdir()))} blocks"
    )
    source.unlink()
    return blocks


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="an Azure 2019 one-day trace")
    parser.add_argument("--functions", type=int, default=150, help="functions to replay (at least 100)")
    parser.add_argument("--days", type=int, default=7, help="days in Prometheus, the day tiled (1: no week)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of each simulate run")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    args = parser.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # each figure as it is measured, even into a file
    if args.functions < 100 or not 1 <= args.days <= 14 or args.jobs < 1:
        print("error: --functions must be at least 100, --days 1 to 14, --jobs at least 1", file=sys.stderr)
        return 2
    binary = find_binary()
    if binary is None or not args.trace.is_dir():
        print(
            "error: needs /usr/bin/prometheus (apt-get install prometheus) and --trace DIR", file=sys.stderr
        )
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="history-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, binary=binary, work=work)
    except ConfigError as e:  # a bad trace directory: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, *, binary: str, work: Path) -> int:
    begun = time.perf_counter()
    functions = pick(args.trace, args.functions)
    end = (math.floor(time.time() / 3600) - 2) * 3600.0  # two hours ago, on the hour
    first = end - args.days * DAY * 60.0
    print(
        f"trace: {args.trace} (first {len(functions)} functions, renamed fn-<hash>.{NAMESPACE}); "
        f"Prometheus holds {args.days} day(s) ({'the same day repeated' if args.days > 1 else 'the day'})"
    )
    blocks = backfill(functions, days=args.days, first=first, work=work)
    sizes = write_sizes(work / "sizes.yml", write_trace_dir(work / "trace-1d", functions, days=1))
    prometheus = LoggedPrometheus(
        query_log=work / "prometheus" / "queries.log",
        data_dir=work / "prometheus",
        targets=[],
        blocks=blocks,
        retention="30d",
        binary=binary,
    )
    started = time.perf_counter()
    prometheus.start(timeout=300)
    assert prometheus.process is not None
    rss, _ = rss_mb(prometheus.process.pid)
    print(f"prometheus {prometheus.url}: ready in {time.perf_counter() - started:.1f} s, RSS {rss:.0f} MB")
    try:
        same = compare("the day", days=1, end=end, functions=functions, prometheus=prometheus,
                       sizes=sizes, work=work, jobs=args.jobs)  # fmt: skip
        if args.days > 1:
            same &= compare(f"{args.days} days (the day repeated)", days=args.days, end=end,
                            functions=functions, prometheus=prometheus, sizes=sizes, work=work,
                            jobs=args.jobs)  # fmt: skip
    finally:
        prometheus.stop()
    print("\nreplay of the history equals the trace replay" if same else "\nREPLAYS DIFFER")
    print(f"whole benchmark: {time.perf_counter() - begun:.0f} s wall")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
