"""Fixtures for the kubernetes provider: the fake API server, a real client, and started providers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.config import ProviderSettings
from autoscaler.providers.kubernetes import KubernetesProvider
from tests.support.apiserver import FakeApiServer

from .support import FAST, eventually


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer() as server:
        yield server


@pytest.fixture
async def api_client(api: FakeApiServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(api.configuration()) as client:
        yield client


@pytest.fixture
async def make_provider(api: FakeApiServer, api_client: ApiClient) -> AsyncIterator[Callable[..., Any]]:
    """`await make_provider(namespaces=[...], start=True, **provider_options)`; closed after the test."""
    made: list[KubernetesProvider] = []

    async def make(
        *,
        namespaces: list[str] | None = None,
        namespaces_annotated: str | None = None,
        api_timeout: float = 2.0,
        start: bool = True,
        **options: Any,
    ) -> KubernetesProvider:
        settings = ProviderSettings(
            namespaces=["openfaas-fn"] if namespaces is None else namespaces,
            namespaces_annotated=namespaces_annotated,
            api_timeout=api_timeout,
        )
        options.setdefault("retry", FAST)
        provider = KubernetesProvider(settings=settings, api_client=api_client, **options)
        made.append(provider)
        if start:
            await provider.start()
            # Both watches (Deployments, EndpointSlices) of every followed namespace are open on the
            # server, and the watch of namespaces when they are followed by annotation.
            watching = 2 * len(provider.followed_namespaces()) + (1 if namespaces_annotated else 0)
            await eventually(lambda: api.open_watches >= watching, what="the watches to open")
        return provider

    yield make
    for provider in made:
        await provider.close()
