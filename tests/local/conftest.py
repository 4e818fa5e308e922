"""The `make_provider` fixture: a started LocalProvider over the fixture function, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from autoscaler.providers.local import LocalProvider, ReplicaTiming

from .support import FAST, functions_file


@pytest.fixture
async def make_provider() -> AsyncIterator[Callable[..., Any]]:
    made: list[LocalProvider] = []

    async def make(*, timing: ReplicaTiming = FAST, **kwargs: Any) -> LocalProvider:
        provider = LocalProvider(functions=functions_file(**kwargs), timing=timing)
        made.append(provider)
        await provider.start()
        return provider

    yield make
    for provider in made:
        await provider.close()
