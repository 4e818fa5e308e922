"""The warm Prometheus pool the fixtures use: a taken spare scrapes the test's own target at once,
and a target that goes down is a failed scrape, as it is for a server scraping it directly."""

from __future__ import annotations

import time

from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory
from tests.support.prometheus_pool import Pool

SERVICE = "gateway_service_count"


async def test_a_second_server_of_a_shape_is_warm_and_scrapes_within_a_few_intervals(
    prometheus_factory: PrometheusFactory,
) -> None:
    pool = Pool()
    try:
        with GatewayExporter() as exporter:
            exporter.deploy("a.openfaas-fn")
            cold = pool.take(targets=[exporter.target], scrape_interval=0.5, binary=prometheus_factory.binary)
            try:
                await cold.wait_for_series(SERVICE, lambda r: len(r) == 1, timeout=20)
            finally:
                cold.release()
            pool.spare_booted((1, 0.5), timeout=30)
            taken_at = time.monotonic()
            warm = pool.take(targets=[exporter.target], scrape_interval=0.5, binary=prometheus_factory.binary)
            try:
                await warm.wait_for_series(SERVICE, lambda r: r == {"a.openfaas-fn": 1.0}, timeout=20)
                # A fresh server waits 5-6 s for its first scrape (Prometheus's 5 s discovery tick).
                assert time.monotonic() - taken_at < 3.0
            finally:
                warm.release()
    finally:
        pool.close()


async def test_a_target_that_goes_down_behind_a_relay_is_a_failed_scrape(
    prometheus_factory: PrometheusFactory,
) -> None:
    exporter = GatewayExporter().start()
    exporter.deploy("a.openfaas-fn")
    prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
    await prometheus.wait_for_series("up", lambda r: list(r.values()) == [1.0], timeout=20)
    exporter.stop()
    await prometheus.wait_for_series("up", lambda r: list(r.values()) == [0.0], timeout=10)
    await prometheus.wait_for_series(SERVICE, lambda r: r == {}, timeout=10)  # stale once the scrape fails
