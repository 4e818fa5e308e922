"""Ready endpoints from the EndpointSlice watch: `endpoints()` and `wait_ready()` follow it, no polling.

An endpoint takes new requests only when it is ready, serving and not terminating, whichever of those
conditions the EndpointSlice leaves unset (the shapes below are discovery.k8s.io/v1 `EndpointConditions`).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.interfaces import FunctionRef
from tests.support._apiserver_cluster import ENDPOINT_SLICES
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


# -- terminating and not-serving endpoints ---------------------------------------------------------


def set_conditions(api: FakeApiServer, service: str, *, port: int, endpoints: list[tuple[str, Any]]) -> None:
    """The Service's EndpointSlice with (address, conditions) endpoints, conditions as given verbatim
    (None: no `conditions` field at all)."""
    api.set_endpoints(service, port=port, endpoints=[(address, True) for address, _ in endpoints])
    name = f"{service}-ep"  # the slice `set_endpoints` writes
    old = api.store.get(ENDPOINT_SLICES, "openfaas-fn", name)
    new = copy.deepcopy(old)
    for endpoint, (_, conditions) in zip(new["endpoints"], endpoints, strict=True):
        if conditions is None:
            del endpoint["conditions"]
        else:
            endpoint["conditions"] = conditions
    api.store.commit(ENDPOINT_SLICES, new, old=old)


@pytest.mark.parametrize(
    ("conditions", "takes_requests"),
    [
        # What the EndpointSlice controller writes for a pod shutting down that still passes its probe.
        ({"ready": False, "serving": True, "terminating": True}, False),
        ({"terminating": True}, False),  # ready unset (nil: true) does not make a terminating one usable
        ({"serving": True, "terminating": True}, False),
        ({"ready": True, "terminating": True}, False),  # a Service publishing not-ready addresses
        ({"serving": False}, False),  # ready unset, not serving
        ({"ready": True, "serving": False}, False),
        ({"ready": False}, False),
        ({}, True),  # every condition unset: ready, serving, not terminating
        (None, True),  # no conditions at all
        ({"serving": True, "terminating": False}, True),
        ({"ready": True, "serving": True, "terminating": False}, True),
    ],
)
async def test_an_endpoint_takes_requests_only_when_ready_serving_and_not_terminating(
    api: FakeApiServer,
    make_provider: Callable[..., Any],
    conditions: dict[str, bool] | None,
    takes_requests: bool,
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=2)
    set_conditions(
        api, "echo", port=8080, endpoints=[("10.0.0.2", {"ready": True}), ("10.0.0.3", conditions)]
    )
    provider = await make_provider()

    expected = ["http://10.0.0.2:8080"] + (["http://10.0.0.3:8080"] if takes_requests else [])
    assert provider.endpoints(ECHO) == expected


async def test_an_endpoint_that_starts_terminating_gets_no_new_requests_even_with_ready_unset(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=2)
    set_conditions(api, "echo", port=8080, endpoints=[("10.0.0.2", {}), ("10.0.0.3", {})])
    provider = await make_provider()
    assert provider.endpoints(ECHO) == ["http://10.0.0.2:8080", "http://10.0.0.3:8080"]

    set_conditions(api, "echo", port=8080, endpoints=[("10.0.0.2", {}), ("10.0.0.3", {"terminating": True})])

    await eventually(lambda: provider.endpoints(ECHO) == ["http://10.0.0.2:8080"], what="the watch event")
    assert await provider.wait_ready(ECHO, 0.1) is True  # one replica still takes requests


async def test_a_function_whose_endpoints_all_terminate_is_not_ready(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=1)
    set_conditions(api, "echo", port=8080, endpoints=[("10.0.0.2", {"serving": True, "terminating": True})])
    provider = await make_provider()

    assert provider.endpoints(ECHO) == []
    assert await provider.wait_ready(ECHO, 0.1) is False  # a request is held, not sent to a pod going away
