"""What the worker reports as a function's pending calls, the figure `type=queue` scales on.

Pending is every call on the queue not yet acknowledged: waiting, being invoked, or waiting for a
retry. The loop reads it through Prometheus, so the worker must report a true 0 for a function with
nothing queued, also after a restart that found the queue already drained (its durable consumer
remembers that the function is called asynchronously); otherwise the loop would see no data and
could not scale the function down. Against a real nats-server, the real proxy and real functions.
"""

from __future__ import annotations

import aiohttp
import pytest

from autoscaler.queue import QueueWorker
from tests.queue.conftest import MakeReceiver, MakeWorker, Stack
from tests.support.waiting import until

pytestmark = pytest.mark.nats

KEY = "batch.openfaas-fn"


def pending(worker: QueueWorker) -> float | None:
    labels = {"function_name": KEY, "queue_name": "faas-request"}
    return worker.registry.get_sample_value("queue_worker_pending_messages", labels)


async def test_calls_waiting_and_running_count_as_pending_until_acknowledged(
    stack: Stack, make_receiver: MakeReceiver, make_worker: MakeWorker, client: aiohttp.ClientSession
) -> None:
    function = await make_receiver(delay=0.5)
    await stack.provider.add("batch", url=function.url)
    for index in range(4):
        async with client.post(f"{stack.base}/async-function/batch", data=b"%d" % index) as response:
            assert response.status == 202
    worker = await make_worker(max_inflight=1, adaptive_concurrency=False)
    await until(lambda: function.busy == 1, within=10, what="the first call running")
    await until(lambda: pending(worker) == 4, within=5, what=lambda: f"4 pending, saw {pending(worker)}")
    await until(lambda: len(function.seen) == 4 and function.busy == 0, within=15, what="four calls")
    await until(lambda: pending(worker) == 0, within=5, what=lambda: f"0 pending, saw {pending(worker)}")


async def test_a_restarted_worker_reports_zero_for_a_function_whose_calls_were_all_done(
    stack: Stack, make_receiver: MakeReceiver, make_worker: MakeWorker, client: aiohttp.ClientSession
) -> None:
    function = await make_receiver()
    await stack.provider.add("batch", url=function.url)
    async with client.post(f"{stack.base}/async-function/batch", data=b"once") as response:
        assert response.status == 202
    first = await make_worker()
    await until(lambda: first.completed == 1, within=10, what="the call done")
    await first.close()

    second = await make_worker()
    await until(lambda: pending(second) == 0, within=5, what=lambda: f"0 pending, saw {pending(second)}")
    assert len(function.seen) == 1
