"""What the reader makes of a healthy, real Prometheus: values per function, and "no data" as None.

Every test reads from the module's shared exporter + Prometheus (see conftest.py), whose functions
have known, settled load.
"""

from __future__ import annotations

import math
import re
import time

import aiohttp
import numpy as np
import pytest

from autoscaler import _promql
from autoscaler.errors import MetricsError
from autoscaler.metrics import PrometheusReader
from tests.metrics.conftest import BROKEN, BULK, ECHO, IDLE, LEAVING, NO_CPU, OVERFLOW, RATE_WINDOW, Live

pytestmark = pytest.mark.prometheus


async def query_requests_served(live: Live) -> float:
    """Instant queries Prometheus has answered so far, from its own /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{live.prometheus.url}/metrics") as response:
        text = await response.text()
    pattern = re.compile(r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/query"[^}]*\} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(text))


async def test_rates_inflight_and_cpu_come_through_per_function(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        snapshot = await reader.read()

    assert snapshot.error is None
    echo = snapshot.loads[ECHO]
    assert echo.rps == pytest.approx(10.0, rel=0.1)
    assert echo.inflight == 3.0
    assert echo.cpu == pytest.approx(250.0, rel=0.1)  # 0.25 cores, in millicores
    assert echo.started_total is not None
    assert echo.started_total > 0
    no_cpu = snapshot.loads[NO_CPU]
    assert no_cpu.rps == pytest.approx(6.0, rel=0.1)
    assert no_cpu.inflight == 1.0


async def test_a_true_zero_is_read_as_zero_not_as_no_data(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        idle = (await reader.read()).loads[IDLE]

    assert (idle.rps, idle.inflight, idle.cpu, idle.started_total) == (0.0, 0.0, 0.0, 0.0)


async def test_every_read_costs_five_queries_whatever_the_function_count(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        before = await query_requests_served(live)
        snapshot = await reader.read()
        after = await query_requests_served(live)

    assert len(snapshot.loads) > len(BULK)
    assert all(snapshot.loads[key].rps == pytest.approx(1.0, rel=0.1) for key in BULK)
    assert snapshot.queries == 5
    assert after - before == 5


async def test_a_figure_no_function_uses_costs_no_query_and_the_others_read_the_same(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        full = await reader.read()
        before = await query_requests_served(live)
        lean = await reader.read(unused=frozenset({"cpu"}))
        after = await query_requests_served(live)

    assert (lean.queries, after - before) == (4, 4)
    assert lean.loads[ECHO].cpu is None  # not asked: no data, never 0
    assert full.loads[ECHO].cpu == pytest.approx(250.0, rel=0.1)
    for key in (ECHO, IDLE, NO_CPU):
        assert lean.loads[key].inflight == full.loads[key].inflight
        assert lean.loads[key].rps == pytest.approx(full.loads[key].rps, rel=0.1)
        assert (lean.loads[key].started_total is None) == (full.loads[key].started_total is None)


async def test_a_series_missing_for_one_function_leaves_that_figure_none_for_it_alone(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        snapshot = await reader.read()

    assert snapshot.loads[NO_CPU].cpu is None
    assert snapshot.loads[NO_CPU].rps is not None
    assert snapshot.loads[ECHO].cpu is not None


@pytest.mark.parametrize("key", [BROKEN, OVERFLOW])
async def test_a_nan_or_infinite_sample_reads_as_no_data(live: Live, key: str) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        load = (await reader.read()).loads[key]

    assert load.inflight is None
    assert load.rps == pytest.approx(4.0, rel=0.1)


async def test_samples_older_than_stale_after_read_as_no_data_never_zero(live: Live) -> None:
    # The reader's clock runs two minutes ahead, so every sample Prometheus returns is 120 s old.
    ahead = PrometheusReader(settings=live.settings(stale_after=60.0), clock=lambda: time.time() + 120)
    async with ahead as reader:
        snapshot = await reader.read()

    assert snapshot.error is None
    assert snapshot.loads, "the functions are still listed"
    for load in snapshot.loads.values():
        assert (load.rps, load.inflight, load.cpu, load.started_total) == (None, None, None, None)


async def test_a_failing_cpu_query_keeps_rps_and_inflight_for_everyone(live: Live) -> None:
    async with PrometheusReader(settings=live.settings(query_cpu="sum by (function_name) (")) as reader:
        snapshot = await reader.read()

    assert snapshot.error is None
    assert snapshot.queries == 5
    assert all(load.cpu is None for load in snapshot.loads.values())
    assert snapshot.loads[ECHO].rps == pytest.approx(10.0, rel=0.1)
    assert snapshot.loads[ECHO].inflight == 3.0
    assert "--query-cpu" in reader.last_errors["cpu"]
    assert "bad_data" in reader.last_errors["cpu"]
    assert reader.errors_total["cpu"] == 1
    assert set(reader.last_errors) == {"cpu"}


async def test_a_removed_function_goes_from_its_values_to_no_data_never_zero(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        assert (await reader.read()).loads[LEAVING].inflight == 1.0
        live.exporter.remove(LEAVING)
        # The gauges go stale at the next scrape; rate() keeps the last samples for one window.
        await live.prometheus.wait_for_series(
            "sum by (function_name) (gateway_function_invocation_inflight)", lambda r: LEAVING not in r
        )
        gone = (await reader.read()).loads.get(LEAVING)
        assert gone is not None
        assert (gone.inflight, gone.started_total) == (None, None)
        await live.prometheus.wait_for_series(
            f"sum by (function_name) (rate(gateway_function_invocation_total[{RATE_WINDOW}]))",
            lambda r: LEAVING not in r,
        )
        snapshot = await reader.read()

    assert LEAVING not in snapshot.loads
    assert snapshot.loads[ECHO].rps == pytest.approx(10.0, rel=0.1)


async def test_history_returns_the_started_counter_on_a_step_grid(live: Live) -> None:
    end = time.time()
    async with PrometheusReader(settings=live.settings()) as reader:
        series = await reader.history(
            query="sum by (function_name) (gateway_function_invocation_started)",
            start=end - 4,
            end=end,
            step=1,
        )

    echo = series[ECHO]
    assert echo.shape == (5,)
    assert not math.isnan(echo[-1])
    seen = echo[np.isfinite(echo)]
    assert (seen[1:] >= seen[:-1]).all(), "a counter never decreases"
    assert series[IDLE][-1] == 0.0


async def test_history_over_more_than_ten_thousand_points_is_fetched_in_chunks(live: Live) -> None:
    end = time.time()
    async with PrometheusReader(settings=live.settings()) as reader:
        series = await reader.history(
            query=f'gateway_function_invocation_inflight{{function_name="{ECHO}"}}',
            start=end - 12.0,
            end=end,
            step=0.001,
        )

    echo = series[ECHO]
    assert echo.shape == (12_001,)
    assert echo[-1] == 3.0
    assert echo[10_500] == 3.0  # a point from the second chunk


async def test_history_of_an_invalid_query_raises_a_metrics_error_naming_it(live: Live) -> None:
    async with PrometheusReader(settings=live.settings()) as reader:
        with pytest.raises(MetricsError, match=r"rejected the query .*bad_data"):
            await reader.history(query="rate(", start=time.time() - 10, end=time.time(), step=1)


async def test_a_real_prometheus_answer_takes_the_fast_path_and_reads_as_the_general_path_does(
    live: Live,
) -> None:
    reader = PrometheusReader(settings=live.settings())  # the default queries, the source's included
    now = time.time()
    async with aiohttp.ClientSession() as session:
        for name, promql in reader.queries.items():
            params = {"query": promql}
            async with session.get(f"{live.prometheus.url}/api/v1/query", params=params) as response:
                body = await response.read()
            fast = _promql.fast_vector(body, now=now, stale_after=60.0)
            data = _promql.decode(body, status=200, where="test", flag="--flag")
            general = _promql.vector(data, now=now, stale_after=60.0, where="test", flag="--flag")
            assert fast is not None, f"the {name} answer did not take the fast path: {body[:200]!r}"
            assert (fast.values, fast.stale, fast.not_finite, fast.unlabelled) == (
                general.values,
                general.stale,
                general.not_finite,
                general.unlabelled,
            )
    await reader.close()
