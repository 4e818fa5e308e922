"""The local provider: functions as processes on this machine, behind the same Provider interface.

This is the embedded default (as faasd is for OpenFaaS): with no cluster, the same loop and proxy scale
real functions. A function's desired replicas are the number of supervised processes it should have;
ready replicas are those whose health path answers. Scaling down takes a replica out of the endpoints,
then drains it with SIGTERM and a grace period. Closing the provider (or the add-on exiting through
an exit hook) stops every replica, so no process outlives the add-on.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import functools
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from autoscaler.errors import NotFoundError, ProviderError
from autoscaler.functionsfile import FunctionsFile, LocalFunction
from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionInfo, FunctionRef
from autoscaler.providers._subscribers import Subscribers
from autoscaler.providers.local._replica import (
    LIVE_GROUPS,
    Replica,
    ReplicaState,
    ReplicaTiming,
    ReplicaView,
    signal_group,
)
from autoscaler.spec import MAX_INFLIGHT_ENV
from autoscaler.tasks import spawn

__all__ = ["MAX_REPLICAS", "LocalEvent", "LocalProvider", "ReplicaTiming", "ReplicaView"]

log = logging.getLogger("autoscaler.providers.local")

MAX_REPLICAS = 100  # per function: a guard against a runaway loop forking the machine to death
_EXIT_HOOK = False  # whether _kill_leftovers is registered (once per process)


@dataclass(frozen=True, slots=True)
class LocalEvent:
    """An event as `record_event` received it (the demo shows the last few)."""

    when: float
    function: str
    reason: str
    message: str
    warning: bool = False


@dataclass(slots=True)
class _Function:
    spec: LocalFunction
    ref: FunctionRef
    desired: int = 0
    next_index: int = 0
    replicas: list[Replica] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_active: float | None = None
    cold_starts: int = 0


class LocalProvider:
    """Runs the functions of a functions file as local processes on free loopback ports."""

    def __init__(
        self,
        *,
        functions: FunctionsFile,
        timing: ReplicaTiming | None = None,
        keep_events: int = 50,
    ) -> None:
        self._file = functions
        self._timing = timing or ReplicaTiming()
        self._events: collections.deque[LocalEvent] = collections.deque(maxlen=keep_events)
        self._subscribers = Subscribers()
        self._functions: dict[str, _Function] = {}
        self._stops: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every function's initial replicas; returns at once (readiness comes later)."""
        if self._started:
            return
        self._started = True
        global _EXIT_HOOK
        if not _EXIT_HOOK:
            _EXIT_HOOK = atexit.register(_kill_leftovers) is not None
        self._session = aiohttp.ClientSession()
        for spec in self._file.functions:
            ref = FunctionRef(name=spec.name, namespace=self._file.namespace)
            self._functions[ref.key] = _Function(spec=spec, ref=ref)
        for fn in self._functions.values():
            self._reconcile(fn, fn.spec.initial_replicas)

    async def close(self) -> None:
        """Stop every replica (SIGTERM, grace, SIGKILL) and wait until all have exited."""
        if self._closed:
            return
        self._closed = True
        replicas = [r for fn in self._functions.values() for r in fn.replicas]
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        if self._stops:
            await asyncio.gather(*self._stops, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- reads -----------------------------------------------------------------------------------

    def functions(self) -> Mapping[str, FunctionInfo]:
        return {key: self._info(fn) for key, fn in self._functions.items()}

    def get(self, ref: FunctionRef) -> FunctionInfo | None:
        fn = self._functions.get(ref.key)
        return self._info(fn) if fn is not None else None

    def endpoints(self, ref: FunctionRef) -> list[str]:
        fn = self._functions.get(ref.key)
        if fn is None:
            return []
        return [r.url for r in fn.replicas if r.state is ReplicaState.READY]

    def replicas(self, ref: FunctionRef) -> list[ReplicaView]:
        """Every replica process the function has right now, draining ones included."""
        fn = self._lookup(ref)
        return [r.view() for r in fn.replicas]

    def cold_starts(self, ref: FunctionRef) -> int:
        """How many times the function was scaled up from zero."""
        return self._lookup(ref).cold_starts

    def events(self) -> list[LocalEvent]:
        """The last events recorded, oldest first."""
        return list(self._events)

    def _info(self, fn: _Function) -> FunctionInfo:
        ready = sum(1 for r in fn.replicas if r.state is ReplicaState.READY)
        annotations = {} if fn.last_active is None else {LAST_ACTIVE_ANNOTATION: f"{fn.last_active:.3f}"}
        return FunctionInfo(
            ref=fn.ref,
            labels=dict(fn.spec.labels),
            replicas=fn.desired,
            ready_replicas=ready,
            annotations=annotations,
            last_active=fn.last_active,
            # The functions file's `environment` is the replicas' environment, as stack.yml's is.
            env_max_inflight=fn.spec.environment.get(MAX_INFLIGHT_ENV),
        )

    def _lookup(self, ref: FunctionRef) -> _Function:
        fn = self._functions.get(ref.key)
        if fn is None:
            known = ", ".join(sorted(self._functions)) or "none"
            raise NotFoundError(
                f"function {ref.key} is not in {self._file.source} (known: {known})", status=404
            )
        return fn

    # -- writes ----------------------------------------------------------------------------------

    async def scale(self, ref: FunctionRef, replicas: int) -> None:
        """Set desired replicas; new processes start and surplus ones drain in the background."""
        fn = self._lookup(ref)
        if self._closed or not self._started:
            raise ProviderError(f"cannot scale {ref.key}: the local provider is not running", retryable=False)
        if not 0 <= replicas <= MAX_REPLICAS:
            raise ProviderError(
                f"cannot scale {ref.key} to {replicas}: the local provider runs 0..{MAX_REPLICAS}"
            )
        if fn.desired == 0 and replicas > 0:
            fn.cold_starts += 1
            message = f"scaled from 0 to {replicas}: starting replica processes"
            self._events.append(LocalEvent(time.time(), ref.key, "ColdStart", message))
        self._reconcile(fn, replicas)

    async def wake(self, ref: FunctionRef, replicas: int) -> bool:
        if self._lookup(ref).desired > 0:
            return False
        await self.scale(ref, replicas)
        return True

    def _reconcile(self, fn: _Function, replicas: int) -> None:
        changed = fn.desired != replicas
        fn.desired = replicas
        active = [r for r in fn.replicas if not r.stopping]
        for _ in range(replicas - len(active)):
            replica = Replica(
                fn=fn.spec,
                index=fn.next_index,
                session=self._require_session(),
                timing=self._timing,
                on_change=functools.partial(self._on_change, fn),
                on_crash=functools.partial(self._on_crash, fn),
            )
            fn.next_index += 1
            fn.replicas.append(replica)
            replica.start()
        if len(active) > replicas:
            # Not yet ready first (nothing to drain), then the newest.
            order = sorted(active, key=lambda r: (r.state is ReplicaState.READY, -r.index))
            for replica in order[: len(active) - replicas]:
                replica.retire()
                task = spawn(replica.stop(), name=f"stop {replica.name}")
                self._stops.add(task)
                task.add_done_callback(self._stops.discard)
        if changed:
            log.info("function %s: desired replicas %d", fn.ref.key, replicas)
            self._subscribers.notify(fn.ref)

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ProviderError("the local provider has not been started", retryable=False)
        return self._session

    def _on_change(self, fn: _Function, replica: Replica) -> None:
        if replica.state is ReplicaState.EXITED and replica in fn.replicas:
            fn.replicas.remove(replica)
        if any(r.state is ReplicaState.READY for r in fn.replicas):
            fn.ready.set()
        else:
            fn.ready.clear()
        self._subscribers.notify(fn.ref)

    def _on_crash(self, fn: _Function, replica: Replica, why: str) -> None:
        self._events.append(LocalEvent(time.time(), fn.ref.key, "ReplicaCrashed", why, warning=True))

    async def record_event(
        self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False
    ) -> None:
        self._events.append(LocalEvent(time.time(), ref.key, reason, message, warning))
        log.log(logging.WARNING if warning else logging.INFO, "event %s %s: %s", ref.key, reason, message)

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        fn = self._functions.get(ref.key)
        if fn is not None and (fn.last_active is None or when > fn.last_active):
            fn.last_active = when

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        fn = self._functions.get(ref.key)
        if fn is None:
            return False
        try:
            await asyncio.wait_for(fn.ready.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True

    def subscribe(self, callback: Callable[[FunctionRef], None]) -> None:
        self._subscribers.add(callback)


def _kill_leftovers() -> None:
    """Exit hook: if the add-on exits without closing the provider, no replica survives it."""
    for pgid in list(LIVE_GROUPS):
        signal_group(pgid, signal.SIGKILL)
    LIVE_GROUPS.clear()
