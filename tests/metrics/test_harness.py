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


def test_ten_thousand_functions_render_well_within_a_scrape_interval() -> None:
    exporter = GatewayExporter()
    exporter.set_functions([f"fn-{i}.load" for i in range(10_000)], rps=1.0, inflight=2, cpu=0.1)
    started = time.perf_counter()
    text = exporter.render()
    elapsed = time.perf_counter() - started

    assert text.count("\n") >= 40_000
    assert elapsed < 0.5


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
