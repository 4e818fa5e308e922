"""Leader election on a coordination.k8s.io Lease, so that one controller patches at a time.

Two controller replicas run for availability, but two loops patching the same Deployments would
fight (invariant 7). The controller that holds the Lease leads; the other waits and takes over once
the holder has not renewed for the lease duration.

This is a small loop on the CoordinationV1Api rather than `kubernetes_asyncio.leaderelection`,
because that module runs a single election and returns once leadership is lost, refuses periods
under one second (tests could not run in moments), keeps "renewing" after another holder has taken
the lease, and starts the leader's work as a task whose crash nobody sees. The guarantees here:

- `on_started` runs only after this candidate holds the Lease, as a task watched by the elector (a
  crash is logged and gives the lease up, and the crashed candidate stands back for a lease
  duration, so the other replica leads);
- `is_leader` turns False at the latest `renew_deadline` after the start of the last successful
  renewal, whether or not the loop is scheduled, and `on_stopped` is called then, before the task
  of `on_started` is cancelled. Another candidate waits `lease_duration` (> `renew_deadline`) after
  it last saw the Lease change, so the old leader has stopped before the new one starts;
- a leader that is cancelled (shutdown, rollout) releases the Lease, so the next one takes over at
  its next retry instead of after a full lease duration.

Local timing uses a monotonic clock, as client-go does: the times written into the Lease are for
people reading it, not for deciding, so clock skew between nodes cannot cause two leaders. The clock
and the sleep are one injectable pair (`clock`, `sleep`), so the lease's timing can be tested on
virtual time. A candidate that cannot reach the API backs off by `policies.backoff`, from the retry
period up to the renew deadline; API errors are mapped, and calls bounded, by the provider's one
mapping (`autoscaler.providers.kubernetes._calls.call`, one attempt: this loop is the retry).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta

from autoscaler.errors import ConfigError, ConflictError, NotFoundError, ProviderError
from autoscaler.providers.kubernetes._calls import RetryPolicy, call
from policies.backoff import Backoff

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
)
"""Every (api_group, resource, verb) this module calls; the RBAC test holds the Role to exactly these."""

log = logging.getLogger("autoscaler.leader")

_ONE_ATTEMPT = RetryPolicy(attempts=1)  # the election loop retries, on the lease's own schedule


def default_identity() -> str:
    """Pod name (the hostname in a pod) plus a random suffix, so a restarted pod is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class _Seen:
    """A version of the Lease as this candidate saw it, and when (on the local monotonic clock)."""

    holder: str
    version: str
    duration: float
    at: float


class LeaderElector:
    """Campaign for the Lease `namespace/name` until cancelled; lead while holding it."""

    def __init__(
        self,
        *,
        api_client: ApiClient,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (lease_duration > renew_deadline > retry_period > 0):
            raise ConfigError(
                "leader election needs lease_duration > renew_deadline > retry_period > 0 "
                f"(got {lease_duration}, {renew_deadline}, {retry_period}): the leader must give up "
                "before another candidate may take the lease"
            )
        if not (name and namespace and identity):
            raise ConfigError(
                "leader election needs a lease name, a lease namespace and a non-empty identity"
            )
        self._api = CoordinationV1Api(api_client)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(retry_period, renew_deadline)  # a follower the API keeps failing
        self._leading = False
        self._renewed_at = -math.inf
        self._seen: _Seen | None = None
        self._lease: Any = None  # the last V1Lease this candidate wrote while leading

    @property
    def is_leader(self) -> bool:
        """True while this candidate holds the Lease and its last renewal is within the renew deadline."""
        return self._leading and self._clock() - self._renewed_at < self._renew_deadline

    @property
    def holder(self) -> str | None:
        """Identity of the holder as last seen (None before the first read or when nobody holds it)."""
        if self._leading:
            return self.identity
        return (self._seen.holder or None) if self._seen is not None else None

    async def run(self, on_started: Callable[[], Awaitable[None]], on_stopped: Callable[[], None]) -> None:
        """Campaign and lead, again and again, until cancelled (then give the Lease up if held)."""
        while True:
            await self._acquire()
            crashed = await self._lead(on_started, on_stopped)
            if crashed:
                # Stand back for a lease duration, so a healthy candidate takes the released lease first.
                await self._sleep(self._lease_duration)

    # ----- following --------------------------------------------------------------------------

    async def _acquire(self) -> None:
        failures = 0
        while True:
            try:
                if await self._try_acquire():
                    return
                failures = 0  # the API answered: someone else holds the lease
            except ProviderError as e:
                failures += 1
                log.warning(
                    "lease %s/%s: %s", self.namespace, self.name, e, extra=self._fields("acquire_failed")
                )
            await self._sleep(self._backoff.delay(failures) if failures else self._retry_period)

    async def _try_acquire(self) -> bool:
        started = self._clock()
        try:
            lease = await self._call("get", self._api.read_namespaced_lease, self.name, self.namespace)
        except NotFoundError:
            body = V1Lease(
                metadata=V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(V1LeaseSpec(lease_transitions=0), acquired=True),
            )
            try:
                self._wrote(
                    await self._call("create", self._api.create_namespaced_lease, self.namespace, body)
                )
            except ConflictError:
                return False  # another candidate created it first
            self._renewed_at = started
            return True
        holder = self._observe(lease)
        if holder and holder != self.identity and not self._expired():
            return False
        spec = lease.spec or V1LeaseSpec()
        if holder != self.identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        lease.spec = self._spec(spec, acquired=True)
        try:
            self._wrote(await self._call("update", self._put, lease))
        except ConflictError:
            return False  # someone else wrote it between our read and our write
        self._renewed_at = started
        return True

    def _observe(self, lease: Any) -> str:
        spec = lease.spec or V1LeaseSpec()
        holder = spec.holder_identity or ""
        version = lease.metadata.resource_version or ""
        if self._seen is None or (self._seen.holder, self._seen.version) != (holder, version):
            duration = float(spec.lease_duration_seconds or self._lease_duration)
            self._seen = _Seen(holder=holder, version=version, duration=duration, at=self._clock())
        return holder

    def _wrote(self, lease: Any) -> None:
        """Remember the Lease as written by this candidate (the base of the next write)."""
        self._lease = lease
        self._observe(lease)

    def _expired(self) -> bool:
        seen = self._seen
        return seen is None or self._clock() - seen.at >= seen.duration

    # ----- leading ----------------------------------------------------------------------------

    async def _lead(self, on_started: Callable[[], Awaitable[None]], on_stopped: Callable[[], None]) -> bool:
        """Lead until the Lease is lost or `on_started` crashes (returns True then); release on cancel."""
        self._leading = True
        log.info(
            "%s leads (lease %s/%s)", self.identity, self.namespace, self.name, extra=self._fields("leading")
        )

        async def started() -> None:
            await on_started()

        work = asyncio.create_task(started(), name=f"leader:{self.name}")
        crashed = False
        try:
            crashed = await self._renew_until_lost(work)
        finally:
            self._leading = False
            try:
                on_stopped()
            except Exception:
                log.exception("on_stopped of lease %s/%s failed", self.namespace, self.name)
            if not work.done():
                work.cancel()
                await asyncio.wait({work})  # unlike `await work`, never mistakes our own cancellation
            if crashed or not self._lost_to_another():
                await self._release()
        return crashed

    async def _renew_until_lost(self, work: asyncio.Task[None]) -> bool:
        while True:
            wait = max(0.0, min(self._retry_period, self._renewed_at + self._renew_deadline - self._clock()))
            await self._pause(work, wait)
            if work.done() and not work.cancelled() and work.exception() is not None:
                log.error(
                    "leader work crashed; giving up lease %s/%s",
                    self.namespace,
                    self.name,
                    exc_info=work.exception(),
                    extra=self._fields("leader_work_crashed"),
                )
                return True
            started = self._clock()
            remaining = self._renewed_at + self._renew_deadline - started
            if remaining > 0:
                try:
                    if await self._try_renew(budget=remaining):
                        self._renewed_at = started
                        continue
                except ProviderError as e:
                    log.warning("renewing lease failed: %s", e, extra=self._fields("renew_failed"))
            if self._lost_to_another():
                log.warning("lease taken by %s", self.holder, extra=self._fields("lost"))
                return False
            if self._clock() - self._renewed_at >= self._renew_deadline:
                log.warning(
                    "could not renew lease %s/%s within %gs; stepping down",
                    self.namespace,
                    self.name,
                    self._renew_deadline,
                    extra=self._fields("lost"),
                )
                return False

    async def _pause(self, work: asyncio.Task[None], seconds: float) -> None:
        """Sleep `seconds` on the elector's clock, waking early if the leader's work ends."""
        if work.done():
            await self._sleep(seconds)
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({work, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    async def _try_renew(self, *, budget: float) -> bool:
        lease = await self._call(
            "get", self._api.read_namespaced_lease, self.name, self.namespace, budget=budget
        )
        if self._observe(lease) != self.identity:
            return False
        lease.spec = self._spec(lease.spec, acquired=False)
        try:
            self._wrote(await self._call("update", self._put, lease, budget=budget))
        except ConflictError:
            return False
        return True

    def _lost_to_another(self) -> bool:
        return self._seen is not None and self._seen.holder not in ("", self.identity)

    async def _release(self) -> None:
        """Hand the Lease back (empty holder) so the next candidate need not wait for it to expire."""
        lease, self._lease = self._lease, None
        if lease is None or lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        lease.spec.renew_time = datetime.now(UTC)
        try:
            await self._call("update", self._put, lease, budget=self._retry_period)
            log.info("released lease %s/%s", self.namespace, self.name, extra=self._fields("released"))
        except ProviderError as e:
            log.warning(
                "could not release lease (it will expire): %s", e, extra=self._fields("release_failed")
            )

    # ----- API ------------------------------------------------------------------------------

    def _spec(self, spec: Any, *, acquired: bool) -> Any:
        now = datetime.now(UTC)
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = max(1, math.ceil(self._lease_duration))
        spec.renew_time = now
        if acquired or spec.acquire_time is None:
            spec.acquire_time = now
        return spec

    async def _put(self, lease: Any, **kwargs: Any) -> Any:
        return await self._api.replace_namespaced_lease(self.name, self.namespace, lease, **kwargs)

    async def _call(
        self, verb: str, method: Callable[..., Awaitable[Any]], *args: Any, budget: float | None = None
    ) -> Any:
        """One API call, bounded in time, with every failure mapped into `autoscaler.errors` types."""
        seconds = self._retry_period if budget is None else max(0.05, min(budget, self._retry_period))
        return await call(
            f"{verb} lease {self.namespace}/{self.name}",
            lambda: method(*args, _request_timeout=seconds),
            policy=_ONE_ATTEMPT,
            timeout=seconds + 0.5,
        )

    def _fields(self, event: str) -> dict[str, Any]:
        return {
            "fields": {"event": event, "identity": self.identity, "lease": f"{self.namespace}/{self.name}"}
        }
