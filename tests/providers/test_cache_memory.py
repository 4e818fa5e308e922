"""The watch cache keeps what callers read, once: shared strings and maps, no Deployment objects."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionRef
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
