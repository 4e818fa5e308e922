"""Pending asynchronous calls per function come from the queue-worker's gauge, in the same five queries.

`type=queue` scales on `queue_worker_pending_messages` (OpenFaaS Pro's name): the calls on the queue
not yet acknowledged. Every worker replica reports the same stream-wide count, so two replicas must not
count a backlog twice; a function the source knows reads 0 pending only while the workers answer, and
with the workers down pending is no data, never 0 (invariant 1). Against a real Prometheus scraping a
gateway-shaped exporter and the worker's real metric families.
"""

from __future__ import annotations

import pytest

from autoscaler.config import MetricsSettings
from autoscaler.metrics import PrometheusReader
from tests.metrics.conftest import Live
from tests.queue.worker_exporter import WorkerExporter
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory

pytestmark = pytest.mark.prometheus

BATCH = "batch.openfaas-fn"  # 12 calls waiting
QUIET = "quiet.openfaas-fn"  # known to the gateway, nothing queued
PENDING = "max by (function_name) (queue_worker_pending_messages)"


async def test_two_worker_replicas_report_one_backlog_and_it_counts_once(
    prometheus_factory: PrometheusFactory,
) -> None:
    with GatewayExporter() as gateway, WorkerExporter() as first, WorkerExporter() as second:
        gateway.deploy(BATCH)
        gateway.deploy(QUIET)
        first.set_pending(BATCH, 12)
        second.set_pending(BATCH, 12)
        prometheus = prometheus_factory.start(
            targets=[gateway.target, first.target, second.target], scrape_interval=0.5
        )
        await prometheus.wait_for_series(
            "count by (function_name) (queue_worker_pending_messages)", lambda found: found.get(BATCH) == 2
        )
        # The gateway's target is scraped on its own schedule: QUIET is known once its series is in.
        await prometheus.wait_for_series(
            "max by (function_name) (gateway_service_count)", lambda found: QUIET in found
        )
        async with PrometheusReader(settings=Live(gateway, prometheus).settings()) as reader:
            snapshot = await reader.read()

    assert snapshot.error is None
    assert snapshot.queries == 5
    assert snapshot.loads[BATCH].pending == 12.0
    assert snapshot.loads[QUIET].pending == 0.0  # the workers answer and list no call for it


async def test_with_no_worker_answering_pending_is_no_data_not_zero(
    prometheus_factory: PrometheusFactory,
) -> None:
    with GatewayExporter() as gateway:
        gateway.deploy(QUIET)
        with WorkerExporter() as worker:
            worker.set_pending(BATCH, 3)
            targets = [gateway.target, worker.target]
            prometheus = prometheus_factory.start(targets=targets, scrape_interval=0.5)
            await prometheus.wait_for_series(PENDING, lambda found: found.get(BATCH) == 3.0)
        # The worker is gone: Prometheus's next scrape fails and marks its series stale.
        await prometheus.wait_for_series(PENDING, lambda found: not found, timeout=10)
        async with PrometheusReader(settings=Live(gateway, prometheus).settings()) as reader:
            snapshot = await reader.read()

    assert snapshot.error is None
    assert snapshot.loads[QUIET].pending is None
    assert snapshot.loads[QUIET].inflight == 0.0  # the gateway's proof still holds for its own figures
    assert BATCH not in snapshot.loads or snapshot.loads[BATCH].pending is None


async def test_without_the_source_query_only_the_workers_own_series_count(
    prometheus_factory: PrometheusFactory,
) -> None:
    with GatewayExporter() as gateway, WorkerExporter() as worker:
        gateway.deploy(QUIET)
        worker.set_pending(BATCH, 7)
        prometheus = prometheus_factory.start(targets=[gateway.target, worker.target], scrape_interval=0.5)
        await prometheus.wait_for_series(PENDING, lambda found: found.get(BATCH) == 7.0)
        settings = Live(gateway, prometheus).settings(query_source="")
        async with PrometheusReader(settings=settings) as reader:
            snapshot = await reader.read()

    assert snapshot.queries == 5
    assert snapshot.loads[BATCH].pending == 7.0
    assert QUIET not in snapshot.loads  # nothing proves the function, so nothing is made up for it


def test_the_pending_query_reads_the_workers_series_alone_and_the_proof_comes_from_the_started_answer() -> (
    None
):
    # The fallback to 0 is made on the answers: Prometheus does not go over every function's source
    # series a second time per tick (the started query already carries them).
    reader = PrometheusReader(settings=MetricsSettings(prometheus_url="http://127.0.0.1:9"))
    assert reader.queries["pending"] == PENDING
    assert "gateway_service_count" in reader.queries["started_total"]
