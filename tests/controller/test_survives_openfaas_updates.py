"""The loop through an OpenFaaS update: `faas-cli deploy` of a new version wipes nothing the loop needs.

faas-netes (`pkg/handlers/update.go`) replaces a function's annotations and pod template labels on every
update, the proxy's last-active mark included. Here the real kubernetes provider runs against the fake
API server (which makes that update as faas-netes does) under a real Controller: the function's
per-function state and its protection from a scale to zero must come through the update.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.config import ControllerSettings, ProviderSettings
from autoscaler.controller import Controller
from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes import KubernetesProvider
from autoscaler.providers.kubernetes._calls import RetryPolicy
from policies.model import Load, Reason
from tests.support.apiserver import FakeApiServer
from tests.support.memory import StaticReader
from tests.support.waiting import until

FIGLET = FunctionRef(name="figlet", namespace="openfaas-fn")
LABELS = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "60s"}
T = 1_700_000_000.0  # the proxy's mark


@pytest.fixture
async def world() -> AsyncIterator[tuple[FakeApiServer, KubernetesProvider, Controller, StaticReader]]:
    async with FakeApiServer() as api, ApiClient(api.configuration()) as client:
        api.add_faas_netes_function("figlet", labels=LABELS)
        provider = KubernetesProvider(
            settings=ProviderSettings(api_timeout=2.0),
            api_client=client,
            retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05),
        )
        await provider.start()
        reader = StaticReader()
        reader.loads = {FIGLET.key: Load(rps=0.0, inflight=0.0, cpu=0.0, started_total=3.0)}
        controller = Controller(provider=provider, reader=reader, settings=ControllerSettings())
        try:
            yield api, provider, controller, reader
        finally:
            await controller.close()
            await provider.close()


async def test_the_loop_state_and_the_last_active_mark_survive_a_faas_netes_update(
    world: tuple[FakeApiServer, KubernetesProvider, Controller, StaticReader],
) -> None:
    api, provider, controller, _ = world
    await controller.tick(now=T - 100)  # first sight: the idle timer starts here
    state = controller.state(FIGLET.key)
    assert state is not None
    await provider.mark_active(FIGLET, T)
    await until(lambda: getattr(provider.get(FIGLET), "last_active", None) == T, within=3, what="the mark")

    api.faas_netes_update("figlet", labels=LABELS, image="ghcr.io/openfaas/figlet:2")
    await until(lambda: "uid" in getattr(provider.get(FIGLET), "labels", {}), within=3, what="the update")
    assert "autoscaler.dev/last-active" not in api.deployment("figlet")["metadata"]["annotations"]

    # 150 s after the idle timer started but 50 s after the mark: the mark still protects it.
    report = await controller.tick(now=T + 50)

    assert report.decisions[FIGLET.key].reason is not Reason.SCALE_TO_ZERO
    assert api.replicas("figlet") == 1
    assert controller.state(FIGLET.key) is state
    assert (state.last_active, state.last_started_total) == (T, 3.0)


async def test_once_the_kept_mark_is_older_than_zero_duration_the_function_goes_to_zero(
    world: tuple[FakeApiServer, KubernetesProvider, Controller, StaticReader],
) -> None:
    api, provider, controller, _ = world
    await controller.tick(now=T - 100)
    await provider.mark_active(FIGLET, T)
    await until(lambda: getattr(provider.get(FIGLET), "last_active", None) == T, within=3, what="the mark")
    api.faas_netes_update("figlet", labels=LABELS)
    await until(lambda: "uid" in getattr(provider.get(FIGLET), "labels", {}), within=3, what="the update")

    report = await controller.tick(now=T + 100)

    assert report.decisions[FIGLET.key].reason is Reason.SCALE_TO_ZERO
    assert api.replicas("figlet") == 0
