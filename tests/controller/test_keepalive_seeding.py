"""Adaptive keep-alive in the real loop: seeded from invocation history at start, learning after that."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest

from autoscaler.config import ControllerSettings, MetricsSettings
from autoscaler.controller import Controller
from autoscaler.keepalive import factory, history_query, read_histories
from autoscaler.metrics import PrometheusReader
from policies.adaptive import HybridHistogram
from policies.model import Load
from tests.support.exporter import GatewayExporter
from tests.support.memory import MemoryProvider, StaticReader
from tests.support.prometheus import PrometheusFactory, prometheus_factory  # noqa: F401

ADAPTIVE = {
    "com.openfaas.scale.zero": "true",
    "com.openfaas.scale.zero-duration": "10m",
    "autoscaler.dev/keepalive": "adaptive",
}


def every(minutes: int, *, hours: int = 4) -> npt.NDArray[np.float64]:
    """Per-minute started counts of a function called once every `minutes` minutes."""
    series = np.zeros(hours * 60)
    series[::minutes] = 3.0
    return series


class RecordingSource:
    def __init__(self, answer: dict[str, npt.NDArray[np.float64]] | Exception) -> None:
        self.answer = answer
        self.queries: list[tuple[str, float, float, float]] = []

    async def history(
        self, *, query: str, start: float, end: float, step: float
    ) -> dict[str, npt.NDArray[np.float64]]:
        self.queries.append((query, start, end, step))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_history_is_read_once_for_the_adaptive_functions_only() -> None:
    source = RecordingSource({"a.fn": every(30)})
    histories = await read_histories(source, keys=["a.fn"], now=100_000.0)
    [(query, start, end, step)] = source.queries
    assert 'function_name=~"a\\\\.fn"' in query
    assert (end - start, step) == (4 * 3600, 60)
    assert set(histories) == {"a.fn"}


async def test_no_adaptive_function_means_no_query() -> None:
    source = RecordingSource({})
    assert await read_histories(source, keys=[], now=0.0) == {}
    assert source.queries == []


async def test_an_unreadable_history_starts_learning_from_scratch() -> None:
    histories = await read_histories(RecordingSource(RuntimeError("down")), keys=["a.fn"], now=0.0)
    assert histories == {}


async def test_a_seeded_function_predicts_its_next_call_from_the_first_tick() -> None:
    now = 100_000.0
    provider, reader = MemoryProvider(), StaticReader()
    provider.add("cron", labels=ADAPTIVE, replicas=1)
    provider.add("fresh", labels=ADAPTIVE, replicas=1)
    histories = {"cron.openfaas-fn": every(30)}
    loop = Controller(
        provider=provider,
        reader=reader,
        settings=ControllerSettings(),
        keepalive_factory=factory(histories, end=now),
    )
    reader.loads = {key: Load(rps=0.0, inflight=0.0, started_total=1.0) for key in provider.items}
    await loop.tick(now=now)
    cron = getattr(loop.state("cron.openfaas-fn"), "keepalive", None)
    fresh = getattr(loop.state("fresh.openfaas-fn"), "keepalive", None)
    assert isinstance(cron, HybridHistogram)
    assert isinstance(fresh, HybridHistogram)
    assert cron.mode == "histogram"
    prewarm, keep = cron.windows(now=now)
    assert 25 * 60 <= prewarm < 30 * 60 < prewarm + keep <= 35 * 60
    assert fresh.mode == "learning"
    assert fresh.windows(now=now) == (0.0, 600.0)


async def test_a_restart_keeps_a_seeded_function_warm_for_the_call_its_history_predicts() -> None:
    # Called every 30 minutes; the last call was 30 minutes before the restart: the next is due.
    now = 100_000.0
    provider, reader = MemoryProvider(), StaticReader()
    provider.add("cron", labels=ADAPTIVE, replicas=1)
    loop = Controller(
        provider=provider,
        reader=reader,
        settings=ControllerSettings(),
        keepalive_factory=factory({"cron.openfaas-fn": every(30)[:-30]}, end=now - 60),
    )
    reader.loads = {"cron.openfaas-fn": Load(rps=0.0, inflight=0.0, started_total=7.0)}
    for tick in range(4):  # two minutes: past the 30 s grace, and past the call's due time
        await loop.tick(now=now + 30 * tick)
        assert provider.replicas("cron.openfaas-fn") == 1
    for tick in range(4, 20):  # no call came: it goes to zero once the predicted window has passed
        await loop.tick(now=now + 30 * tick)
    assert provider.replicas("cron.openfaas-fn") == 0


async def test_the_history_query_selects_exactly_the_named_functions_in_a_real_prometheus(
    prometheus_factory: PrometheusFactory,  # noqa: F811
) -> None:
    with GatewayExporter() as exporter:
        for key in ("a.openfaas-fn", "ab.openfaas-fn", "a-b.other"):
            exporter.set_function(key, rps=2.0)
        prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
        query = history_query(["a.openfaas-fn", "a-b.other"]).replace("[1m]", "[5s]")
        await prometheus.wait_for_series(query, lambda s: len(s) == 2)
        reader = PrometheusReader(settings=MetricsSettings(prometheus_url=prometheus.url))
        try:
            now = time.time()
            series = await reader.history(query=query, start=now - 2, end=now, step=1)
        finally:
            await reader.close()
    assert set(series) == {"a.openfaas-fn", "a-b.other"}


@pytest.mark.parametrize("minutes", [30, 90])
def test_seeding_matches_learning_the_same_calls_one_by_one(minutes: int) -> None:
    end = 50_000.0
    seeded = HybridHistogram.from_minute_counts(every(minutes), end=end, fixed_keepalive=600)
    learned = HybridHistogram(fixed_keepalive=600)
    series = every(minutes)
    for index in np.flatnonzero(series):
        learned.observe_call(now=end - (series.size - 1 - index) * 60)
    assert seeded.windows(now=end) == learned.windows(now=end)
