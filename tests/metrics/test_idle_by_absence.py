"""Absent from the counters is idle only where a healthy source proves it (invariant 1, extended).

A function that was never called has no invocation series anywhere, and one called only through the
OpenFaaS CE gateway has no in-flight gauge. The reader reads those absences as 0 only when the metric
source itself answers for the function (`gateway_service_count`, exported for every function the
gateway or our proxy knows, folded into the started query); a source that is down, or a query that
failed, proves nothing.
Against a real Prometheus scraping a gateway-shaped exporter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from autoscaler.metrics import PrometheusReader
from tests.metrics.conftest import Live
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory

NEVER = "never.openfaas-fn"  # deployed, never called: only gateway_service_count
CE_ONLY = "ce.openfaas-fn"  # called through a CE gateway: counters, no in-flight gauge
NAN = "nan.openfaas-fn"  # in-flight gauge is NaN
WINDOW = "2s"  # four scrapes: enough for rate(), and settled sooner than the readers' usual 5s
SERVICE = "max by (function_name) (gateway_service_count)"


async def start(factory: PrometheusFactory, exporter: GatewayExporter) -> Live:
    exporter.deploy(NEVER)
    exporter.set_function(CE_ONLY, rps=2.0, inflight=None)
    prometheus = factory.start(targets=[exporter.target], scrape_interval=0.5)
    await prometheus.wait_for_rates({CE_ONLY: 2.0}, window=WINDOW, tolerance=0.2)
    await prometheus.wait_for_series(SERVICE, lambda found: NEVER in found)
    return Live(exporter=exporter, prometheus=prometheus)


@pytest.fixture(scope="module")
def shared(module_prometheus_factory: PrometheusFactory) -> Iterator[Live]:
    """One exporter and Prometheus for the tests that only read (each test reads with its own settings)."""
    with GatewayExporter() as exporter:
        exporter.set_function(NAN, rps=1.0, inflight=float("nan"))
        yield asyncio.run(start(module_prometheus_factory, exporter))


async def test_a_function_the_source_knows_but_never_saw_called_reads_as_zero_calls(shared: Live) -> None:
    async with PrometheusReader(settings=shared.settings(rate_window=WINDOW)) as reader:
        snapshot = await reader.read()

    never = snapshot.loads[NEVER]
    assert (never.rps, never.inflight, never.started_total) == (0.0, 0.0, 0.0)
    assert never.cpu is None  # the source says nothing of CPU: still no data
    ce = snapshot.loads[CE_ONLY]
    assert ce.inflight == 0.0
    # Its rate comes through: over a 2 s window of 0.5 s scrapes one late scrape on a loaded machine
    # moves it by a quarter or more (0.2 failed once under six workers), so the bound is loose.
    assert ce.rps == pytest.approx(2.0, rel=0.5)
    assert ce.started_total is not None
    assert ce.started_total > 0


async def test_without_the_source_query_absence_stays_no_data(shared: Live) -> None:
    async with PrometheusReader(settings=shared.settings(rate_window=WINDOW, query_source="")) as reader:
        snapshot = await reader.read()

    assert snapshot.queries == 5  # the pending query stays; only the source's proof is gone
    assert NEVER not in snapshot.loads
    assert snapshot.loads[CE_ONLY].inflight is None


async def test_a_source_that_went_down_proves_nothing(prometheus_factory: PrometheusFactory) -> None:
    with GatewayExporter() as exporter:
        live = await start(prometheus_factory, exporter)
    # The exporter is stopped: Prometheus's next scrape fails and marks every series of it stale.
    await live.prometheus.wait_for_series(SERVICE, lambda found: not found, timeout=10)
    async with PrometheusReader(settings=live.settings(rate_window=WINDOW)) as reader:
        snapshot = await reader.read()

    assert snapshot.error is None
    assert NEVER not in snapshot.loads
    # rate() still spans the last scrapes for a while; no missing figure is made up as 0.
    ce = snapshot.loads.get(CE_ONLY)
    assert ce is None or (ce.inflight, ce.started_total) == (None, None)


async def test_a_failed_started_query_proves_nothing_and_nothing_reads_as_zero(shared: Live) -> None:
    # The source's proof rides on the started query (`started or 0 * source`): when that query fails,
    # no absence is read as 0, and the figures that did come keep their values.
    broken = shared.settings(rate_window=WINDOW, query_started="sum by (function_name) (")
    async with PrometheusReader(settings=broken) as reader:
        snapshot = await reader.read()

    assert set(reader.last_errors) == {"started_total"}
    assert "--query-started or --query-source" in reader.last_errors["started_total"]
    assert NEVER not in snapshot.loads
    ce = snapshot.loads[CE_ONLY]
    assert (ce.started_total, ce.inflight) == (None, None)
    assert ce.rps == pytest.approx(2.0, rel=0.5)  # it came, with its value (a loose bound: see above)


async def test_the_source_costs_no_query_of_its_own(shared: Live) -> None:
    async with PrometheusReader(settings=shared.settings(rate_window=WINDOW)) as reader:
        snapshot = await reader.read()

    assert snapshot.queries == 5
    assert set(reader.queries) == {"rps", "inflight", "cpu", "started_total", "pending"}
    assert "gateway_service_count" in reader.queries["started_total"]


async def test_a_stale_or_nan_series_is_bad_data_not_absence(shared: Live) -> None:
    async with PrometheusReader(settings=shared.settings(rate_window=WINDOW)) as reader:
        snapshot = await reader.read()

    assert snapshot.loads[NAN].inflight is None


async def test_cpu_comes_from_the_kubelet_series_where_the_pro_series_is_missing(
    prometheus_factory: PrometheusFactory,
) -> None:
    with GatewayExporter(cpu_series="cadvisor") as exporter:
        exporter.set_function("busy.openfaas-fn", rps=1.0, cpu=0.5)
        prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
        live = Live(exporter=exporter, prometheus=prometheus)
        await prometheus.wait_for_rates({"busy.openfaas-fn": 1.0}, window=WINDOW, tolerance=0.2)
        cpu = 'rate(container_cpu_usage_seconds_total{container="busy"}[' + WINDOW + "])"
        await prometheus.wait_for_series(f"sum({cpu})", lambda found: sum(found.values()) >= 0.47)
        async with PrometheusReader(settings=live.settings(rate_window=WINDOW)) as reader:
            snapshot = await reader.read()

    # 0.5 cores in the function's container; the pause container and the pod-level cgroup (which
    # repeats the containers' sum) are left out, as the default query says.
    assert snapshot.loads["busy.openfaas-fn"].cpu == pytest.approx(500.0, rel=0.15)
