"""Ready endpoints from the EndpointSlice watch: `endpoints()` and `wait_ready()` follow it, no polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from autoscaler.interfaces import FunctionRef
from tests.support.apiserver import FakeApiServer

from .support import eventually, fn_labels

ECHO = FunctionRef(name="echo", namespace="openfaas-fn")


async def test_wait_ready_returns_true_when_the_slice_turns_ready(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=0)
    api.set_backend("echo", host="127.0.0.1", port=18080, ready_delay=0.3)
    provider = await make_provider()
    assert provider.endpoints(ECHO) == []

    waiter = asyncio.create_task(provider.wait_ready(ECHO, 5.0))
    await provider.scale(ECHO, 1)
    started = time.monotonic()

    assert await waiter is True
    assert time.monotonic() - started >= 0.2  # woken by the slice turning ready, not by the scale
    assert provider.endpoints(ECHO) == ["http://127.0.0.1:18080"]
    await eventually(lambda: provider.get(ECHO).ready_replicas == 1, what="readyReplicas from the Deployment")


async def test_wait_ready_returns_false_at_the_timeout(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=0)
    api.set_backend("echo", host="127.0.0.1", port=18080)
    provider = await make_provider()
    started = time.monotonic()

    assert await provider.wait_ready(ECHO, 0.3) is False
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_waiting_costs_no_api_requests(api: FakeApiServer, make_provider: Callable[..., Any]) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=0)
    api.set_backend("echo", host="127.0.0.1", port=18080)
    provider = await make_provider()
    before = len(api.requests)

    assert await provider.wait_ready(ECHO, 0.5) is False

    assert len(api.requests) == before


async def test_endpoints_list_only_ready_addresses(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=3)
    api.set_endpoints(
        "echo", port=8080, endpoints=[("10.0.0.2", True), ("10.0.0.3", False), ("fd00::1", True)]
    )
    api.set_endpoints("other", port=9090, endpoints=[("10.0.9.9", True)])
    provider = await make_provider()

    assert provider.endpoints(ECHO) == ["http://10.0.0.2:8080", "http://[fd00::1]:8080"]
    assert await provider.wait_ready(ECHO, 0.1) is True


async def test_scaling_to_zero_empties_the_endpoints(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=0)
    api.set_backend("echo", host="127.0.0.1", port=18080)
    provider = await make_provider()
    await provider.scale(ECHO, 2)
    assert await provider.wait_ready(ECHO, 3.0) is True

    await provider.scale(ECHO, 0)

    await eventually(lambda: provider.endpoints(ECHO) == [], what="the slice to empty")
    await eventually(lambda: provider.get(ECHO).ready_replicas == 0, what="readyReplicas 0")
    assert await provider.wait_ready(ECHO, 0.1) is False


async def test_endpoints_survive_a_resync(api: FakeApiServer, make_provider: Callable[..., Any]) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=1)
    api.set_endpoints("echo", port=8080, endpoints=[("10.0.0.2", True)])
    provider = await make_provider()
    slices = r"/endpointslices$"

    api.delay("GET", slices, seconds=0.3, watch=True)
    api.drop_watches()
    await eventually(lambda: api.count("GET", slices, watch=True) >= 2, what="a new watch")
    api.set_endpoints("echo", port=8080, endpoints=[("10.0.0.7", True)])
    api.expire_resource_versions()

    await eventually(lambda: provider.endpoints(ECHO) == ["http://10.0.0.7:8080"], what="the resync")
    assert api.count("GET", slices, watch=False) == 2
