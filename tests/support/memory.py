"""In-memory stand-ins for the loop's two interfaces: a provider of functions and a load reader.

They implement `autoscaler.interfaces` exactly, so controller tests exercise the real loop code on
virtual time; the real providers and reader have their own tests against real servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from autoscaler.errors import ProviderError
from autoscaler.interfaces import FunctionInfo, FunctionRef, LoadSnapshot
from policies.model import Load


class MemoryProvider:
    """Functions in a dict; `scale` records calls and can be told to fail for some functions."""

    def __init__(self) -> None:
        self.items: dict[str, FunctionInfo] = {}
        self.scaled: list[tuple[str, int]] = []
        self.events: list[tuple[str, str, str, bool]] = []
        self.active: list[tuple[str, float]] = []
        self.failing: set[str] = set()
        self._callbacks: list[Callable[[FunctionRef], None]] = []

    def add(
        self,
        name: str,
        *,
        replicas: int = 1,
        labels: Mapping[str, str] | None = None,
        namespace: str = "openfaas-fn",
        conflicts: tuple[str, ...] = (),
    ) -> FunctionRef:
        ref = FunctionRef(name, namespace)
        self.items[ref.key] = FunctionInfo(
            ref=ref,
            labels=dict(labels or {}),
            replicas=replicas,
            ready_replicas=replicas,
            conflicts=conflicts,
        )
        return ref

    def replicas(self, key: str) -> int:
        return self.items[key].replicas

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def functions(self) -> Mapping[str, FunctionInfo]:
        return dict(self.items)

    def get(self, ref: FunctionRef) -> FunctionInfo | None:
        return self.items.get(ref.key)

    async def scale(self, ref: FunctionRef, replicas: int) -> None:
        if ref.key in self.failing:
            raise ProviderError(f"scale {ref.key}: injected failure", status=500, retryable=True)
        info = self.items[ref.key]
        self.items[ref.key] = FunctionInfo(
            ref=ref,
            labels=info.labels,
            replicas=replicas,
            ready_replicas=replicas,
            last_active=info.last_active,
        )
        self.scaled.append((ref.key, replicas))

    async def wake(self, ref: FunctionRef, replicas: int) -> bool:
        if self.items[ref.key].replicas > 0:
            return False
        await self.scale(ref, replicas)
        return True

    async def record_event(
        self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.events.append((ref.key, reason, message, warning))

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        self.active.append((ref.key, when))

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        return bool(self.items[ref.key].ready_replicas)

    def endpoints(self, ref: FunctionRef) -> list[str]:
        return []

    def subscribe(self, callback: Callable[[FunctionRef], None]) -> None:
        self._callbacks.append(callback)


class StaticReader:
    """Returns whatever the test put in `loads` (or `error`), counting reads."""

    def __init__(self) -> None:
        self.loads: dict[str, Load] = {}
        self.error: str | None = None
        self.reads = 0
        self.unused: frozenset[str] = frozenset()  # what the last read was told no function uses
        self.read_event = asyncio.Event()

    async def read(self, *, unused: frozenset[str] = frozenset()) -> LoadSnapshot:
        self.reads += 1
        self.unused = unused
        self.read_event.set()
        if self.error:
            return LoadSnapshot(loads={}, error=self.error, queries=4)
        return LoadSnapshot(loads=dict(self.loads), queries=4)

    async def close(self) -> None:
        return None
