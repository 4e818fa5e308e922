"""Fixtures for the load-reader tests: one real Prometheus per module, and tiny misbehaving servers.

Prometheus needs about five seconds before its first scrape and a full rate window after that, so
the well-behaved scenarios share one exporter and one Prometheus per module (`live`); tests that kill
Prometheus start their own through `prometheus_factory`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from autoscaler.config import MetricsSettings
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import (  # noqa: F401 - fixtures re-exported for this directory
    PrometheusFactory,
    PrometheusServer,
    module_prometheus_factory,
    prometheus_factory,
)

# Ten one-second scrapes: over five, one late scrape on a loaded machine moved a 4/s rate to 3.44
# (rate()'s extrapolation at the window's edges weighs a missing sample by a fifth of the window).
RATE_WINDOW = "10s"

ECHO = "echo.openfaas-fn"  # steady traffic on every figure
IDLE = "idle.openfaas-fn"  # a true zero: served as 0, read as 0
BROKEN = "broken.openfaas-fn"  # in-flight gauge is NaN
OVERFLOW = "overflow.openfaas-fn"  # in-flight gauge is +Inf
NO_CPU = "nocpu.staging"  # no CPU series at all
LEAVING = "leaving.openfaas-fn"  # removed by a test
BULK = [f"bulk-{i}.load" for i in range(1000)]


@dataclass(frozen=True)
class Live:
    exporter: GatewayExporter
    prometheus: PrometheusServer

    def settings(self, **overrides: Any) -> MetricsSettings:
        values: dict[str, Any] = {
            "prometheus_url": self.prometheus.url,
            "rate_window": RATE_WINDOW,
            "query_timeout": 5.0,
        }
        values.update(overrides)
        return MetricsSettings(**values)


@pytest.fixture(scope="module")
def live(module_prometheus_factory: PrometheusFactory) -> Iterator[Live]:  # noqa: F811
    """Exporter with known load scraped every second by a real Prometheus, rates settled."""
    factory = module_prometheus_factory
    with GatewayExporter() as exporter:
        exporter.set_function(ECHO, rps=10.0, inflight=3, cpu=0.25)
        exporter.set_function(IDLE, rps=0.0, inflight=0, cpu=0.0)
        exporter.set_function(BROKEN, rps=4.0, inflight=math.nan)
        exporter.set_function(OVERFLOW, rps=4.0, inflight=math.inf)
        exporter.set_function(NO_CPU, rps=6.0, inflight=1, cpu=None)
        exporter.set_function(LEAVING, rps=1.0, inflight=1)
        exporter.set_functions(BULK, rps=1.0, inflight=0)
        prometheus = factory.start(targets=[exporter.target], scrape_interval=1.0)
        asyncio.run(
            prometheus.wait_for_rates(
                {ECHO: 10.0, NO_CPU: 6.0, IDLE: 0.0, BROKEN: 4.0, OVERFLOW: 4.0},
                window=RATE_WINDOW,
                tolerance=0.05,
                timeout=40.0,
            )
        )
        yield Live(exporter=exporter, prometheus=prometheus)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start tiny aiohttp servers on free loopback ports: `url = await http_server(handler)`."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/"

    yield start
    for runner in runners:
        await runner.cleanup()
