"""When Prometheus is down, slow, wrong or misaddressed, the reader says so clearly and never reports 0.

Invariant 1: a failed read is not zero traffic. Every failure here must give an error snapshot (no
loads at all) whose message names the URL and the cause, within about the query timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.config import MetricsSettings
from autoscaler.errors import ConfigError
from autoscaler.metrics import PrometheusReader
from tests.metrics.conftest import ECHO, RATE_WINDOW
from tests.support.child import free_port
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory

Serve = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]


def settings(url: str, **overrides: Any) -> MetricsSettings:
    return MetricsSettings(prometheus_url=url, rate_window=RATE_WINDOW, **overrides)


@pytest.mark.prometheus
@pytest.mark.slow
async def test_a_killed_prometheus_gives_an_error_snapshot_never_zeros(
    prometheus_factory: PrometheusFactory,
) -> None:
    with GatewayExporter() as exporter:
        exporter.set_function(ECHO, rps=5.0, inflight=2)
        prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=1.0)
        await prometheus.wait_for_series("gateway_function_invocation_inflight", lambda r: ECHO in r)
        async with PrometheusReader(settings=settings(prometheus.url)) as reader:
            assert (await reader.read()).loads[ECHO].inflight == 2.0
            prometheus.kill()
            snapshot = await reader.read()

    assert snapshot.loads == {}
    assert snapshot.queries == 5
    assert (
        snapshot.error
        == f"Prometheus at {prometheus.url}/ unreachable: Connection refused; check --prometheus-url"
    )


async def test_an_unreachable_prometheus_is_named_with_its_url_and_the_cause() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    async with PrometheusReader(settings=settings(url)) as reader:
        snapshot = await reader.read()

    assert snapshot.loads == {}
    assert snapshot.error == f"Prometheus at {url} unreachable: Connection refused; check --prometheus-url"
    assert dict(reader.errors_total) == {"rps": 1, "inflight": 1, "cpu": 1, "started_total": 1, "pending": 1}


async def test_a_slow_prometheus_fails_within_about_the_query_timeout(http_server: Serve) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    url = await http_server(stall)
    async with PrometheusReader(settings=settings(url, query_timeout=0.5)) as reader:
        started = time.monotonic()
        snapshot = await reader.read()
        elapsed = time.monotonic() - started

    assert 0.4 <= elapsed < 3.0  # about the 0.5 s timeout, not the 30 s stall (a loaded machine lags)
    assert snapshot.loads == {}
    assert snapshot.error == (
        f"Prometheus at {url} did not answer within 0.5s; check its load or raise --query-timeout"
    )


async def test_an_http_error_that_is_not_prometheus_gives_an_error_snapshot() -> None:
    # The exporter is a real HTTP server with no query API: 404 on /api/v1/query.
    with GatewayExporter() as exporter:
        url = f"http://{exporter.target}/"
        async with PrometheusReader(settings=settings(url)) as reader:
            snapshot = await reader.read()

    assert snapshot.loads == {}
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"Prometheus at {url} answered HTTP 404")
    assert "check --prometheus-url" in snapshot.error


async def test_an_error_body_gives_an_error_snapshot_with_prometheus_own_words(http_server: Serve) -> None:
    async def overloaded(request: web.Request) -> web.Response:
        body = {"status": "error", "errorType": "unavailable", "error": "too many concurrent queries"}
        return web.json_response(body, status=503)

    url = await http_server(overloaded)
    async with PrometheusReader(settings=settings(url)) as reader:
        snapshot = await reader.read()

    assert snapshot.loads == {}
    assert snapshot.error is not None
    assert f"Prometheus at {url} rejected the query (HTTP 503, unavailable: too many concurrent queries)" in (
        snapshot.error
    )


async def test_an_unparsable_answer_gives_an_error_snapshot(http_server: Serve) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>login required</html>", content_type="text/html")

    url = await http_server(html)
    async with PrometheusReader(settings=settings(url)) as reader:
        snapshot = await reader.read()

    assert snapshot.loads == {}
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"Prometheus at {url} answered unparsable JSON")


async def test_a_base_url_with_a_path_prefix_keeps_the_prefix(http_server: Serve) -> None:
    paths: list[str] = []

    async def prefixed(request: web.Request) -> web.Response:
        paths.append(request.path)
        if request.path != "/prometheus/api/v1/query":
            return web.Response(status=404, text="404 page not found")
        sample = {"metric": {"function_name": ECHO}, "value": [time.time(), "7"]}
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [sample]}})

    url = await http_server(prefixed)
    async with PrometheusReader(settings=settings(url + "prometheus")) as reader:
        snapshot = await reader.read()

    assert snapshot.error is None
    assert snapshot.loads[ECHO].rps == 7.0
    assert paths == ["/prometheus/api/v1/query"] * 5


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("prometheus:9090", "needs an http:// or https:// scheme and a host"),
        ("http://", "needs an http:// or https:// scheme and a host"),
        ("ftp://prometheus:9090", "needs an http:// or https:// scheme and a host"),
        ("http://prometheus:9090/?query=up", "must not carry a query"),
        ("", "is not set"),
    ],
)
def test_a_malformed_url_is_refused_with_a_clear_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="--prometheus-url") as caught:
        PrometheusReader(settings=settings(url))

    assert problem in str(caught.value)


async def test_a_lasting_outage_is_logged_once_and_counted_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    url = f"http://127.0.0.1:{free_port()}/"
    caplog.set_level(logging.INFO, logger="autoscaler.metrics")
    async with PrometheusReader(settings=settings(url), registry=registry) as reader:
        for _ in range(3):
            assert (await reader.read()).error is not None

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert url in warnings[0].getMessage()
    assert registry.get_sample_value("autoscaler_prometheus_query_errors_total", {"query": "rps"}) == 3
    assert registry.get_sample_value("autoscaler_prometheus_read_seconds_count") == 3
