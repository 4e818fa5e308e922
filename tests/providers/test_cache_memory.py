"""The watch cache keeps what callers read, once (shared strings and maps, no Deployment objects, no
readiness event per function), and its upkeep costs what changed, not everything it holds."""

from __future__ import annotations

import functools
import gc
import json
import math
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionRef
from autoscaler.providers.kubernetes._cache import FunctionCache
from tests.support._apiserver_cluster import DEPLOYMENTS, ENDPOINT_SLICES, Cluster
from tests.support._apiserver_store import Obj
from tests.support.apiserver import FakeApiServer

from .support import eventually

SCALING = {"com.openfaas.scale.max": "50", "com.openfaas.scale.zero": "true"}


def ref(name: str) -> FunctionRef:
    return FunctionRef(name=name, namespace="openfaas-fn")


async def test_functions_with_the_same_layout_share_one_copy_of_their_maps_and_strings(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    for name in ("a", "b"):
        api.add_faas_netes_function(name, labels=SCALING)
    provider = await make_provider()
    api.add_faas_netes_function("c", labels=SCALING)  # by a watch event, not the listing
    await eventually(lambda: provider.get(ref("c")) is not None, what="function c")

    a, b, c = (provider.get(ref(name)) for name in "abc")
    assert a.label_sources is b.label_sources is c.label_sources
    assert a.annotations is b.annotations is c.annotations
    assert dict(a.annotations) == {"prometheus.io.scrape": "false"}
    assert a.labels is not b.labels  # each has its own faas_function value
    assert a.labels == {"faas_function": "a", **SCALING}
    for key, value in c.labels.items():
        assert key is sys.intern(key)
        assert value is sys.intern(value)


async def test_a_function_marked_active_keeps_annotations_of_its_own(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    for name in ("a", "b"):
        api.add_faas_netes_function(name, labels=SCALING)
    provider = await make_provider()

    await provider.mark_active(ref("a"), 1000.0)
    await eventually(lambda: provider.get(ref("a")).last_active == 1000.0, what="the mark")

    a, b = provider.get(ref("a")), provider.get(ref("b"))
    assert a.annotations is not b.annotations
    assert a.annotations[LAST_ACTIVE_ANNOTATION] == "1000.000"
    assert LAST_ACTIVE_ANNOTATION not in b.annotations


async def test_a_listing_of_thousands_of_deployments_fills_the_cache_with_one_request(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    for i in range(2000):
        api.add_faas_netes_function(f"fn-{i}", labels=SCALING)

    provider = await make_provider()

    assert len(provider.functions()) == 2000
    assert api.count("GET", r"/deployments$", watch=False) == 1
    info = provider.get(ref("fn-1999"))
    assert (info.replicas, info.labels["faas_function"]) == (1, "fn-1999")


@functools.cache
def listings(functions: int, namespaces: int) -> dict[str, tuple[list[Obj], list[Obj]]]:
    """Per namespace, (Deployments, EndpointSlices) as a first listing returns them.

    One function is made as faas-netes makes it (with its EndpointSlice) by the fake API server's
    helpers; the others are its wire-format text with their own names and addresses (quick to make).
    """
    cluster = Cluster()
    cluster.add_faas_netes_function("fn", namespace="ns", labels=SCALING)
    cluster.set_endpoints("fn", namespace="ns", port=8080, endpoints=[("10.0.0.1", True)])
    deployment = json.dumps(cluster.store.get(DEPLOYMENTS, "ns", "fn"))
    endpoints = json.dumps(cluster.store.get(ENDPOINT_SLICES, "ns", "fn-ep"))
    found: dict[str, tuple[list[Obj], list[Obj]]] = {}
    for i in range(functions):
        name, namespace = f"fn-{i:05d}", f"ns-{i % namespaces:03d}"
        names = {'"fn"': f'"{name}"', '"fn-ep"': f'"{name}-ep"', '"ns"': f'"{namespace}"'}
        names['"10.0.0.1"'] = f'"10.0.{i // 250}.{i % 250}"'
        listed = found.setdefault(namespace, ([], []))
        for text, into in ((deployment, listed[0]), (endpoints, listed[1])):
            for old, new in names.items():
                text = text.replace(old, new)
            into.append(json.loads(text))
    return found


async def test_a_function_with_a_ready_endpoint_costs_the_cache_under_a_kib() -> None:
    lists = listings.__wrapped__(1000, 10)  # its own copy: the cache keeps parts of it
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = FunctionCache(set(lists))
        for namespace in list(lists):
            deployments, slices = lists.pop(namespace)
            cache.sync_deployments(namespace, deployments)
            cache.sync_slices(namespace, slices)
            del deployments, slices
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert len(cache.functions) == 1000
    assert cache.endpoints(FunctionRef(name="fn-00999", namespace="ns-009")) == ["http://10.0.3.249:8080"]
    assert grown / 1000 < 1024  # 1.9 KiB before: an asyncio.Event per function, keys kept 4 times


def slice_sync_seconds(functions: int, namespaces: int) -> tuple[float, FunctionCache]:
    """The least CPU of five first syncs of every namespace's EndpointSlices, and the last cache.

    CPU time of this thread: what the machine's other processes take does not count."""
    lists = listings(functions, namespaces)
    best, cache = math.inf, FunctionCache(set(lists))
    for _ in range(5):
        cache = FunctionCache(set(lists))
        started = time.thread_time()
        for namespace, (_, slices) in lists.items():
            cache.sync_slices(namespace, slices)
        best = min(best, time.thread_time() - started)
    return best, cache


async def test_listing_the_endpoint_slices_of_many_namespaces_costs_what_they_hold_not_all_of_it() -> None:
    small, _ = slice_sync_seconds(200, 20)
    large, cache = slice_sync_seconds(2000, 20)

    assert len(cache._endpoints) == 2000
    # Ten times the slices, about ten times the time: the scan of every slice per slice (2 s here
    # before, 38 s at 10,000) made it a hundred. A ratio in one process, not a time of this machine.
    assert large / small < 40.0
