"""The in-process reader's pending figure (`type=queue`): the queue-worker's backlog, or no data.

Without a queue there is nothing to count, and that must read as no data (None), never as an empty
queue (0): a `type=queue` function would otherwise be scaled down on a figure nobody measured. With
one, a function the worker leaves out has nothing queued, but only once the reader has watched for a
whole window, as with the proxy's own counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from autoscaler.demo.stack import QUEUE_EXAMPLE, LocalStack, StackSettings, with_queue_example
from autoscaler.functionsfile import FunctionsFile, load_builtin
from autoscaler.inprocess import ProxyLoadReader
from autoscaler.interfaces import InvocationStats
from autoscaler.spec import parse_labels
from policies.model import ScaleType


class Queue:
    """Stands in for the worker's backlog per function (None: it cannot list the queue now)."""

    def __init__(self) -> None:
        self.counts: Mapping[str, float] | None = {}

    def __call__(self) -> Mapping[str, float] | None:
        return self.counts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def served(completed: float) -> InvocationStats:
    return InvocationStats(completed_total=completed, started_total=completed, inflight=0, held=0)


async def test_the_backlog_a_worker_reports_is_the_functions_pending_figure_even_before_a_window() -> None:
    clock, queue = Clock(), Queue()
    queue.counts = {"batch.fn": 12.0}
    reader = ProxyLoadReader(
        stats=lambda: {"hello.fn": served(3)}, clock=clock, window=10.0, pending=queue, known=lambda: []
    )
    clock.now = 101.0
    loads = (await reader.read()).loads
    assert loads["batch.fn"].pending == 12.0  # queued for a function the proxy has not seen yet
    assert loads["batch.fn"].rps is None  # and nothing else is known about it
    assert loads["hello.fn"].pending is None  # left out, but not watched for a window: no data yet


async def test_a_function_the_worker_leaves_out_has_zero_pending_once_watched_for_a_window() -> None:
    clock, queue = Clock(), Queue()
    reader = ProxyLoadReader(
        stats=lambda: {"hello.fn": served(3)},
        clock=clock,
        window=10.0,
        pending=queue,
        known=lambda: ["batch.fn"],
    )
    clock.now = 110.0
    loads = (await reader.read()).loads
    assert loads["hello.fn"].pending == 0.0
    assert loads["batch.fn"].pending == 0.0
    queue.counts = None  # the worker lost the queue: no data, never zero
    clock.now = 111.0
    loads = (await reader.read()).loads
    assert loads["hello.fn"].pending is None
    assert loads["batch.fn"].pending is None


async def test_without_a_pending_source_pending_is_no_data_for_every_function() -> None:
    clock = Clock()
    reader = ProxyLoadReader(
        stats=lambda: {"hello.fn": served(3)}, clock=clock, window=10.0, known=lambda: ["batch.fn"]
    )
    clock.now = 120.0
    loads = (await reader.read()).loads
    assert loads["hello.fn"].pending is None
    assert loads["batch.fn"].pending is None
    assert loads["batch.fn"].rps == 0.0  # the proxy's counters are still trusted


async def test_a_stack_without_a_queue_reads_no_pending_figure_for_its_queue_function() -> None:
    functions = with_queue_example(load_builtin())
    stack = LocalStack(functions=functions, settings=StackSettings(rate_window=0.2, embedded_nats=False))
    try:
        await stack.start()
        await asyncio.sleep(0.3)  # a whole window: the other figures of a function never called are 0
        loads = (await stack.reader.read()).loads
    finally:
        await stack.close()
    batch = loads[f"{QUEUE_EXAMPLE}.{functions.namespace}"]
    assert batch.pending is None
    assert batch.rps == 0.0


def test_the_queue_example_is_a_zero_function_scaled_on_its_backlog() -> None:
    empty = FunctionsFile(namespace="openfaas-fn", functions=(), source="test")
    (batch,) = with_queue_example(empty).functions
    spec = parse_labels(batch.labels)
    assert spec.type is ScaleType.QUEUE
    assert spec.zero
    assert batch.initial_replicas == 0
    assert spec.max_replicas > 1
