"""The narrow interfaces between the loop, the proxy and the outside world.

The controller and the proxy depend only on these protocols; Kubernetes, local processes and
Prometheus sit behind them, so tests swap the transport, never the logic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from policies.model import Load

# A Kubernetes name that is a DNS label (RFC 1123): what a function's name and a namespace must be.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# Annotation the proxy writes on a function when it wakes it or serves it; the controller never
# scales a function to zero within its zero-duration of this time (invariant 2).
LAST_ACTIVE_ANNOTATION = "autoscaler.dev/last-active"
# A request header for the proxy: `X-Autoscaler-Busy: pass` asks for a function's 429 at once instead
# of the proxy's retries until the hold timeout; the queue-worker sends it, since it retries a call
# on its own schedule (the function's com.openfaas.retry.* labels). Never forwarded to the function.
BUSY_HEADER = "X-Autoscaler-Busy"


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A function's identity: Deployment name and namespace."""

    name: str
    namespace: str

    @property
    def key(self) -> str:
        """`NAME.NAMESPACE`, the gateway's `function_name` label value."""
        return f"{self.name}.{self.namespace}"

    @classmethod
    def parse(cls, text: str, *, default_namespace: str) -> FunctionRef:
        name, _, namespace = text.partition(".")
        return cls(name=name, namespace=namespace or default_namespace)


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """What the provider knows of one function right now (a cache entry, not a live read)."""

    ref: FunctionRef
    labels: Mapping[str, str]
    replicas: int  # desired replicas as set on the Deployment (spec.replicas / scale)
    ready_replicas: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    last_active: float | None = None  # unix time from LAST_ACTIVE_ANNOTATION, if any
    # Where each label came from: "template" (the pod template, where OpenFaaS writes them),
    # "deployment" (the Deployment's own metadata) or "both"; empty when the provider does not say.
    label_sources: Mapping[str, str] = field(default_factory=dict)
    # One line per scaling label that the pod template and the Deployment's metadata disagree on:
    # the key, both values and which one is used.
    conflicts: tuple[str, ...] = ()
    owner: str | None = None  # "Function/NAME" when an openfaas.com Function (the CRD) owns it
    owner_spec: Mapping[str, Any] | None = None  # that Function's spec, from com.openfaas.function.spec
    # The raw `max_inflight` of the function's environment (the OpenFaaS watchdog's concurrency limit:
    # the function container's env on Kubernetes, the functions file's `environment` locally); None
    # when unset or not readable. Only this one value: the cache keeps no environment.
    env_max_inflight: str | None = None


class Provider(Protocol):
    """Where replicas live: Kubernetes Deployments, or local processes."""

    async def start(self) -> None:
        """Begin watching functions; returns once the cache holds a first full listing."""

    async def close(self) -> None:
        """Stop watches and release connections (and, for local processes, stop them)."""

    def functions(self) -> Mapping[str, FunctionInfo]:
        """Snapshot of the cache, keyed by `FunctionRef.key`."""

    def get(self, ref: FunctionRef) -> FunctionInfo | None:
        """One function from the cache, or None when it is unknown."""

    async def scale(self, ref: FunctionRef, replicas: int) -> None:
        """Set desired replicas (the `scale` subresource). Raises ProviderError."""

    async def wake(self, ref: FunctionRef, replicas: int) -> bool:
        """Scale from zero to `replicas` only if the function is at zero now; True if this call woke it.

        The proxy's wake-up: its cache may be behind, and a plain scale would then write its few
        replicas over a higher number the controller (or another proxy replica) just set.
        Raises ProviderError.
        """

    async def record_event(
        self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Write an Event about the function (best effort: failures are logged, never raised)."""

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        """Record that the function was woken or served at `when` (see LAST_ACTIVE_ANNOTATION)."""

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        """Wait until the function has a ready replica (from a watch, not polling); False on timeout."""

    def endpoints(self, ref: FunctionRef) -> list[str]:
        """Base URLs (`http://host:port`) that reach the function's ready replicas or its Service."""

    def subscribe(self, callback: Callable[[FunctionRef], None]) -> None:
        """Call `callback` whenever a function's object changes (used to poke the loop on a wake-up)."""


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """Load for every function that has data, keyed by `function_name` (`NAME.NAMESPACE`).

    A function absent from `loads` has no data (invariant 1: never zero). `error` is set when the
    whole read failed; `loads` is then empty.
    """

    loads: Mapping[str, Load]
    error: str | None = None
    queries: int = 0  # queries issued for this snapshot


@dataclass(frozen=True, slots=True)
class InvocationStats:
    """In-process counters the proxy keeps per function (the local mode reads load from these)."""

    completed_total: float = 0.0  # invocations answered (any status)
    started_total: float = 0.0  # invocations started (arrived at the proxy)
    inflight: int = 0  # held + being forwarded right now
    held: int = 0  # waiting for a cold start


class LoadReader(Protocol):
    """Reads per-function load once per tick with a constant number of queries.

    `unused` names load figures (`Load` fields) that no function is scaled by this tick: a reader may
    leave them out (they read None), and one that pays per figure should.
    """

    async def read(self, *, unused: frozenset[str] = frozenset()) -> LoadSnapshot: ...

    async def close(self) -> None: ...
