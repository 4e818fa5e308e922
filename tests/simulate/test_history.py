"""What-if on the user's own history: the started counters in a real Prometheus, replayed.

A real Prometheus is loaded with a known history (promtool backfills an OpenMetrics file this test
writes: 120 functions' started counters at one sample a minute over six hours), then
`read_history` must give back exactly the calls per minute that were written, and replaying them
must give the same per-policy results as replaying the same calls from a trace directory.
"""

from __future__ import annotations

import http.server
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from autoscaler.errors import ConfigError, MetricsError
from autoscaler.simulate import simulate
from autoscaler.simulate.history import (
    Sizes,
    minute_counts,
    parse_span,
    parse_until,
    read_history,
    read_sizes,
)
from autoscaler.simulate.policies import POLICY_NAMES, SimSettings
from autoscaler.simulate.trace import read_trace
from tests.simulate.support import write_trace
from tests.support.cli import run_cli
from tests.support.prometheus import PrometheusServer, free_port, require_binary

QUERY = "sum by (function_name) (gateway_function_invocation_started)"
MINUTES = 360
FUNCTIONS = 120


class TestCallsPerMinuteFromACounter:
    def test_the_increase_between_samples_is_the_minutes_calls(self) -> None:
        assert minute_counts(np.array([3.0, 3.0, 5.0, 9.0])).tolist() == [0, 2, 4]

    def test_a_drop_is_a_reset_whose_new_value_counts(self) -> None:
        assert minute_counts(np.array([7.0, 9.0, 2.0, 2.0])).tolist() == [2, 2, 0]

    def test_a_gap_counts_its_calls_once_the_counter_is_seen_again(self) -> None:
        nan = math.nan
        assert minute_counts(np.array([nan, 1.0, nan, nan, 6.0])).tolist() == [0, 0, 0, 5]

    def test_a_function_seen_once_has_no_calls_to_count(self) -> None:
        assert minute_counts(np.array([math.nan, 4.0, math.nan])).tolist() == [0, 0]


class TestFlags:
    @pytest.mark.parametrize(("text", "seconds"), [("7d", 604800.0), ("36h", 129600.0), ("1d12h", 129600.0)])
    def test_spans_take_days_and_go_durations(self, text: str, seconds: float) -> None:
        assert parse_span(text, flag="--since") == seconds

    @pytest.mark.parametrize("text", ["a week", "-1h", "0", "7 d"])
    def test_a_bad_span_names_the_flag_and_an_example(self, text: str) -> None:
        with pytest.raises(ConfigError, match=r"--since .*e\.g\. 7d"):
            parse_span(text, flag="--since")

    def test_until_is_a_time_or_a_span_ago(self) -> None:
        assert parse_until("2026-12-01T00:00:00Z", now=0.0) == 1796083200.0
        assert parse_until("2h", now=10_000.0) == 2800.0
        assert parse_until(None, now=5.0) == 5.0

    def test_a_sizes_file_gives_durations_and_memory_per_function(self, tmp_path: Path) -> None:
        path = tmp_path / "sizes.yml"
        path.write_text("functions:\n  resize.openfaas-fn: {duration: 1.5s, memory_mb: 512}\n")
        sizes = read_sizes(path, duration=0.1, memory_mb=128)
        assert sizes.of("resize.openfaas-fn") == (1.5, 512.0)
        assert sizes.of("other.openfaas-fn") == (0.1, 128.0)

    @pytest.mark.parametrize(
        "text", ["functions: [a]", "functions:\n  a: {duration: fast}", "functions:\n  a: {cpu: 2}", ": :"]
    )
    def test_a_bad_sizes_file_is_one_clear_error(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "sizes.yml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="--sizes"):
            read_sizes(path, duration=0.1, memory_mb=128)

    def test_a_busy_answer_is_asked_again_and_the_next_answer_is_read(self) -> None:
        # Prometheus's query_range answers in this shape (docs: HTTP API, range queries); the first
        # is a 503, as a Prometheus behind a restarting proxy gives.
        answers = [(503, b"busy"), (200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}')]
        paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path.split("?")[0])
                status, body = answers.pop(0) if answers else (500, b"asked too often")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            with pytest.raises(ConfigError, match="has no series"):  # the second answer, read: empty
                read_history(url=url, query="up", start=0.0, end=3600.0)
            server.shutdown()
        assert paths == ["/api/v1/query_range"] * 2  # asked twice, at the API's own path

    def test_a_refused_connection_is_reported_at_once(self, caplog: pytest.LogCaptureFixture) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(MetricsError, match="cannot read the history"):
            read_history(url=url, query="up", start=0.0, end=3600.0)
        assert [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")] == []

    def test_an_unreachable_prometheus_exits_with_one_line(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        done = subprocess.run(
            [sys.executable, "-m", "autoscaler", "simulate", "--prometheus-url", url, "--since", "1h"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert f"cannot read the history from Prometheus at {url}/" in done.stderr
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["--since", "a week"], "--since 'a week'"),
            (["--trace", "x"], "give --trace or --prometheus-url, not both"),
            (["--memory-mb", "-1"], "--memory-mb must be a number > 0"),
        ],
    )
    def test_bad_history_flags_exit_2(self, argv: list[str], expected: str) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        done = run_cli("simulate", "--prometheus-url", url, *argv)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr
        assert "Traceback" not in done.stderr


def _history(seed: int = 0) -> dict[str, np.ndarray]:
    """Calls per minute of FUNCTIONS functions: sparse, bursty and steady ones, and two resets."""
    rng = np.random.default_rng(seed)
    calls: dict[str, np.ndarray] = {}
    for i in range(FUNCTIONS):
        kind = i % 3
        if kind == 0:  # sparse: a call every hour or so
            counts = (rng.random(MINUTES) < 1 / 60).astype(np.int64)
        elif kind == 1:  # bursty: quiet, then bursts of tens of calls
            counts = np.where(rng.random(MINUTES) < 0.05, rng.integers(10, 60, MINUTES), 0)
        else:  # steady
            counts = rng.poisson(5, MINUTES)
        calls[f"fn-{i:03d}.{'openfaas-fn' if i % 4 else 'team-a'}"] = counts.astype(np.int64)
    return calls


def _openmetrics(calls: dict[str, np.ndarray], *, first: float, resets: set[str]) -> str:
    """The started counters at one sample a minute; for `resets`, the counter restarts halfway."""
    lines: list[str] = []
    for key, counts in calls.items():
        totals = np.concatenate([[0], np.cumsum(counts)]).astype(float)
        if key in resets:
            half = MINUTES // 2
            totals[half + 1 :] = totals[half + 1 :] - totals[half]  # a proxy restart: from 0 again
        lines.extend(
            f'gateway_function_invocation_started{{function_name="{key}"}} {total:g} {first + m * 60:.0f}'
            for m, total in enumerate(totals)
        )
    return "\n".join(lines) + "\n# EOF\n"


def _blocks(tmp_path: Path, calls: dict[str, np.ndarray], *, first: float, resets: set[str]) -> Path:
    """promtool's TSDB blocks of the started counters of `calls`."""
    promtool = shutil.which("promtool") or str(Path(require_binary()).with_name("promtool"))
    source = tmp_path / "history.om"
    source.write_text(_openmetrics(calls, first=first, resets=resets))
    blocks = tmp_path / "blocks"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(blocks)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    return blocks


def _prometheus(data_dir: Path, blocks: Path, *flags: str) -> PrometheusServer:
    """A real Prometheus started on `blocks`, with `flags`."""
    server = PrometheusServer(data_dir=data_dir, targets=[], blocks=blocks, retention="30d", flags=flags)
    return server.start()


def _first_minute() -> float:
    return (math.floor(time.time() / 3600) - 8) * 3600.0  # six hours ending two hours ago, on the hour


@pytest.mark.prometheus
@pytest.mark.slow
def test_a_replay_of_the_history_in_prometheus_equals_the_replay_of_the_same_calls_from_a_trace(
    tmp_path: Path,
) -> None:
    calls = _history()
    first = _first_minute()
    # A reset must not move calls: a restarted counter's first new sample counts its whole value
    # (two steady functions, whose counter visibly drops when it restarts).
    resets = {key for key in list(calls)[2:6:3]}
    assert all(calls[k][MINUTES // 2] < calls[k][: MINUTES // 2].sum() for k in resets)
    prometheus = _prometheus(tmp_path / "prometheus", _blocks(tmp_path, calls, first=first, resets=resets))
    try:
        sizes = Sizes(duration=0.25, memory_mb=384.0)
        trace = read_history(
            url=prometheus.url, query=QUERY, start=first, end=first + MINUTES * 60, sizes=sizes
        )
        only_team = read_history(
            url=prometheus.url, query=QUERY, start=first, end=first + MINUTES * 60, namespaces=("team-a",)
        )
    finally:
        prometheus.stop()

    assert trace.minutes == MINUTES
    assert [fn.key for fn in trace.functions] == sorted(calls)
    for fn in trace.functions:
        assert fn.counts.tolist() == calls[fn.key].tolist(), fn.key
        assert (fn.duration, fn.memory_mb) == (0.25, 384.0)
    assert {fn.key for fn in only_team.functions} == {k for k in calls if k.endswith(".team-a")}

    directory = write_trace(
        tmp_path / "trace",
        {key: [(m, int(c)) for m, c in enumerate(counts) if c] for key, counts in calls.items()},
        duration_ms=250.0,
        memory_mb=384.0,
        minutes=MINUTES,
    )
    from_files = read_trace(directory)
    settings = SimSettings()
    replayed = simulate(trace, policies=POLICY_NAMES, settings=settings, jobs=1)
    expected = simulate(
        from_files, policies=POLICY_NAMES, settings=settings, jobs=1
    )  # the same calls, keyed the same: the same arrivals
    assert replayed.rows == expected.rows
    assert sum(fn.invocations for fn in trace.functions) == sum(int(c.sum()) for c in calls.values())


@pytest.mark.prometheus
@pytest.mark.slow
def test_a_range_prometheus_refuses_as_too_many_samples_is_read_in_smaller_chunks_with_the_same_calls(
    tmp_path: Path,
) -> None:
    # `sum by` over 120 series of 361 points holds about 87,000 samples: a Prometheus allowing 20,000
    # refuses the whole range (as the default 50,000,000 refuses a week of 2,500 functions at once).
    calls = _history(seed=1)
    first = _first_minute()
    blocks = _blocks(tmp_path, calls, first=first, resets=set())
    prometheus = _prometheus(tmp_path / "prometheus", blocks, "--query.max-samples=20000")
    try:
        trace = read_history(url=prometheus.url, query=QUERY, start=first, end=first + MINUTES * 60)
    finally:
        prometheus.stop()
    assert trace.minutes == MINUTES
    assert {fn.key: fn.counts.tolist() for fn in trace.functions} == {k: c.tolist() for k, c in calls.items()}

    # Where not even one point of every series fits, one clear error once the halving runs out.
    tiny = _prometheus(tmp_path / "tiny", blocks, "--query.max-samples=100")
    try:
        with pytest.raises(MetricsError, match=r"too many samples.*raise Prometheus's --query\.max-samples"):
            read_history(url=tiny.url, query=QUERY, start=first, end=first + MINUTES * 60)
    finally:
        tiny.stop()
