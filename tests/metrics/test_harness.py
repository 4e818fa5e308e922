"""The test harness other suites reuse: the gateway exporter's output and the Prometheus fixtures' rules."""

from __future__ import annotations

import math
import time

import aiohttp
import pytest

from tests.support.exporter import GatewayExporter
from tests.support.prometheus import INSTALL_HINT, require_binary


def sample(text: str, metric: str, key: str) -> float | None:
    prefix = f'{metric}{{function_name="{key}"'
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_counters_advance_with_the_exporter_clock_and_gauges_hold_what_was_set() -> None:
    now = [1000.0]
    exporter = GatewayExporter(clock=lambda: now[0])
    exporter.set_function("echo.openfaas-fn", rps=2.0, inflight=3, cpu=0.5)
    now[0] += 10
    exporter.set_rate("echo.openfaas-fn", 5.0)
    now[0] += 2
    text = exporter.render()

    assert sample(text, "gateway_function_invocation_total", "echo.openfaas-fn") == 30.0
    assert sample(text, "gateway_function_invocation_started", "echo.openfaas-fn") == 30.0
    assert sample(text, "pod_cpu_usage_seconds_total", "echo.openfaas-fn") == 6.0
    assert sample(text, "gateway_function_invocation_inflight", "echo.openfaas-fn") == 3.0


def test_a_removed_function_and_a_dropped_series_disappear_from_the_text() -> None:
    exporter = GatewayExporter()
    exporter.set_functions(["a.fn", "b.fn"], rps=1.0, inflight=1)
    exporter.remove("a.fn")
    exporter.set_cpu("b.fn", None)
    exporter.set_inflight("b.fn", math.nan)
    text = exporter.render()

    assert 'function_name="a.fn"' not in text
    assert sample(text, "pod_cpu_usage_seconds_total", "b.fn") is None
    nan = sample(text, "gateway_function_invocation_inflight", "b.fn")
    assert nan is not None
    assert math.isnan(nan)


def render_seconds(functions: int) -> tuple[float, str]:
    """The least CPU of five renders of `functions` functions (this thread's: the machine's other
    processes do not count), and the text."""
    exporter = GatewayExporter()
    exporter.set_functions([f"fn-{i}.load" for i in range(functions)], rps=1.0, inflight=2, cpu=0.1)
    best, text = math.inf, ""
    for _ in range(5):
        started = time.thread_time()
        text = exporter.render()
        best = min(best, time.thread_time() - started)
    return best, text


def test_rendering_grows_in_proportion_to_the_functions_so_ten_thousand_are_served_per_scrape() -> None:
    # A ratio against a tenth as many, in the same process: an absolute time would measure the machine.
    small, _ = render_seconds(1_000)
    large, text = render_seconds(10_000)

    assert text.count("\n") >= 40_000
    assert large / small < 40.0  # ten times the functions: about ten times the time (16 measured), not 100


async def test_the_exporter_serves_prometheus_text_on_a_free_loopback_port() -> None:
    async with GatewayExporter() as exporter:
        exporter.set_function("echo.openfaas-fn", rps=1.0, inflight=4)
        async with aiohttp.ClientSession() as session, session.get(exporter.url) as response:
            body = await response.text()
            content_type = response.headers["Content-Type"]

    assert exporter.target.startswith("127.0.0.1:")
    assert content_type.startswith("text/plain; version=0.0.4")
    assert sample(body, "gateway_function_invocation_inflight", "echo.openfaas-fn") == 4.0
    assert exporter.scrapes == 1


def test_a_missing_prometheus_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_BIN", "/nonexistent/prometheus")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=INSTALL_HINT):
        require_binary()


def test_a_missing_prometheus_binary_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_BIN", "/nonexistent/prometheus")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y prometheus"):
        require_binary()
