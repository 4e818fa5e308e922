"""An in-memory Provider whose replicas are real HTTP servers that start after a configurable delay.

It implements the whole `autoscaler.interfaces.Provider` protocol so the proxy (and the loop) can
run against it unchanged. A function is warm (a server already listening) or cold (zero replicas);
`scale()` to more than zero starts a real `Upstream` after `ready_delay` seconds and then wakes
every `wait_ready` caller (an event, like a watch, not polling). `endpoint_lag` makes readiness
come before the server listens, as Kubernetes endpoints lag pod readiness. Scale and mark_active
calls are recorded so tests can count wake-ups and check the last-active signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from autoscaler.errors import NotFoundError, ProviderError
from autoscaler.interfaces import FunctionInfo, FunctionRef
from tests.support.child import stable_port
from tests.support.upstream import Upstream


@dataclass
class _Function:
    info: FunctionInfo
    ready_delay: float
    url: str | None = None  # a fixed endpoint (e.g. nginx) instead of an Upstream we start
    upstream: Upstream | None = None
    starting: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    listed: bool = False  # whether endpoints() lists the replica
    extra_endpoints: list[str] | None = None  # set_endpoints(): replaces the listed endpoints
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ready_now(): cut the delay short


class FakeProvider:
    """Functions in memory, replicas as real servers on 127.0.0.1."""

    def __init__(self, *, ready_delay: float = 0.0, endpoint_lag: float = 0.0) -> None:
        self.ready_delay = ready_delay
        self.endpoint_lag = endpoint_lag
        self.scale_calls: list[tuple[FunctionRef, int]] = []
        self.mark_active_calls: list[tuple[FunctionRef, float]] = []
        self.events: list[tuple[FunctionRef, str, str]] = []
        self.fail_scale: ProviderError | None = None
        self.on_scale: Callable[[FunctionRef, int], None] | None = None
        self._functions: dict[str, _Function] = {}
        self._subscribers: list[Callable[[FunctionRef], None]] = []

    async def add(
        self,
        name: str,
        namespace: str = "openfaas-fn",
        *,
        warm: bool = True,
        labels: Mapping[str, str] | None = None,
        ready_delay: float | None = None,
        url: str | None = None,
        env_max_inflight: str | None = None,
    ) -> FunctionRef:
        """Register a function; a warm one gets a listening replica now."""
        ref = FunctionRef(name=name, namespace=namespace)
        info = FunctionInfo(
            ref=ref, labels=dict(labels or {}), replicas=1 if warm else 0, env_max_inflight=env_max_inflight
        )
        fn = _Function(
            info=info, ready_delay=self.ready_delay if ready_delay is None else ready_delay, url=url
        )
        self._functions[ref.key] = fn
        if warm:
            await self._bring_up(fn, replicas=1, lag=0.0)
        return ref

    def upstream(self, ref: FunctionRef) -> Upstream | None:
        """The running replica's server (None while cold or when the function has a fixed url)."""
        return self._functions[ref.key].upstream

    def ready_now(self, ref: FunctionRef) -> None:
        """Let a starting replica finish its delay at once (tests that must hold requests first)."""
        self._functions[ref.key].release.set()

    def set_endpoints(self, ref: FunctionRef, urls: list[str]) -> None:
        """List these base URLs as the function's endpoints while it is ready (several replicas)."""
        self._functions[ref.key].extra_endpoints = list(urls)

    # -- Provider protocol ----------------------------------------------------------------------

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for fn in self._functions.values():
            if fn.starting is not None:
                fn.starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fn.starting
            if fn.upstream is not None:
                await fn.upstream.stop()
                fn.upstream = None

    def functions(self) -> Mapping[str, FunctionInfo]:
        return {key: fn.info for key, fn in self._functions.items()}

    def get(self, ref: FunctionRef) -> FunctionInfo | None:
        fn = self._functions.get(ref.key)
        return None if fn is None else fn.info

    async def scale(self, ref: FunctionRef, replicas: int) -> None:
        fn = self._functions.get(ref.key)
        if fn is None:
            raise NotFoundError(f"function {ref.key} does not exist", status=404)
        if self.fail_scale is not None:
            raise self.fail_scale
        self.scale_calls.append((ref, replicas))
        if self.on_scale is not None:
            self.on_scale(ref, replicas)
        self._update(fn, replicas=replicas)
        if replicas > 0 and fn.info.ready_replicas == 0 and fn.starting is None:
            fn.starting = asyncio.get_running_loop().create_task(self._start_later(fn, replicas))
        elif replicas == 0:
            await self._bring_down(fn)

    async def wake(self, ref: FunctionRef, replicas: int) -> bool:
        fn = self._functions.get(ref.key)
        if fn is not None and fn.info.replicas > 0:
            return False
        await self.scale(ref, replicas)
        return True

    async def record_event(
        self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.events.append((ref, reason, message))

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        self.mark_active_calls.append((ref, when))
        fn = self._functions.get(ref.key)
        if fn is not None:
            self._update(fn, last_active=when)

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        fn = self._functions.get(ref.key)
        if fn is None:
            raise NotFoundError(f"function {ref.key} does not exist", status=404)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while fn.info.ready_replicas <= 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fn.changed.wait(), remaining)
        return True

    def endpoints(self, ref: FunctionRef) -> list[str]:
        fn = self._functions.get(ref.key)
        if fn is None or not fn.listed or fn.info.ready_replicas <= 0:
            return []
        if fn.extra_endpoints is not None:
            return list(fn.extra_endpoints)
        if fn.url is not None:
            return [fn.url]
        return [] if fn.upstream is None else [fn.upstream.url]

    def subscribe(self, callback: Callable[[FunctionRef], None]) -> None:
        self._subscribers.append(callback)

    # -- replicas -------------------------------------------------------------------------------

    async def _start_later(self, fn: _Function, replicas: int) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fn.release.wait(), fn.ready_delay)
            fn.release.clear()
            await self._bring_up(fn, replicas=replicas, lag=self.endpoint_lag)
        finally:
            fn.starting = None

    async def _bring_up(self, fn: _Function, *, replicas: int, lag: float) -> None:
        if fn.url is None:
            fn.upstream = Upstream(name=fn.info.ref.name, port=stable_port() if lag > 0 else 0)
            if lag <= 0:
                await fn.upstream.start()
        fn.listed = True
        self._update(fn, ready_replicas=replicas, replicas=max(replicas, fn.info.replicas))
        if lag > 0 and fn.upstream is not None:
            # Announced ready and listed, but the server only listens a moment later.
            await asyncio.sleep(lag)
            await fn.upstream.start()

    async def _bring_down(self, fn: _Function) -> None:
        if fn.starting is not None:
            fn.starting.cancel()
        fn.listed = False
        self._update(fn, ready_replicas=0, replicas=0)
        if fn.upstream is not None:
            await fn.upstream.stop()
            fn.upstream = None

    def _update(self, fn: _Function, **changes: object) -> None:
        fn.info = dataclasses.replace(fn.info, **changes)  # type: ignore[arg-type]
        event, fn.changed = fn.changed, asyncio.Event()
        event.set()
        for callback in self._subscribers:
            callback(fn.info.ref)
