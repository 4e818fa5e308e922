"""Functions as Kubernetes Deployments: the provider the controller and the proxy use in a cluster.

Reads never hit the API server: a list-then-watch of Deployments (and of the functions'
EndpointSlices) in each configured namespace keeps a local cache (`_cache`), so a tick or a
proxied request costs no API call, and `wait_ready()` wakes on the watch event, not by polling.
Writes are few and small: a strategic merge patch (the client's default for a dict body; on these
maps it is a plain JSON merge patch) of the `scale` subresource and of the last-active annotation
(at most one write per function per `mark_active_interval`, by a few writer tasks: `_marks`),
and core/v1 Events (aggregated like client-go's recorder: `_events`). Every write first takes a
token of the write budget (`_budget`: `api_qps`, `api_burst`), wake-ups first and Events last;
every call is retried and wrapped by `_calls`, so callers only ever see `autoscaler.errors`.

Namespaces are the configured ones plus, with `--namespaces-annotated KEY=VALUE`, every namespace
carrying that annotation (OpenFaaS's multiple namespaces: `kubectl annotate namespace NAME
openfaas=1`; faas-netes' `pkg/handlers/namespaces.go` follows any value of `openfaas`, which `KEY=*`
does too): a watch of core/v1 namespaces starts a namespace's watches when it gains the annotation
and stops them, dropping its functions, when it loses it or is deleted.

`API_CALLS` lists every (api group, resource, verb) used here; the RBAC manifest must grant them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from kubernetes_asyncio import client as k8s

from autoscaler.config import ProviderSettings
from autoscaler.errors import ConfigError, ProviderError
from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionInfo, FunctionRef
from autoscaler.providers.kubernetes._budget import Priority, WriteBudget, scale_priority
from autoscaler.providers.kubernetes._cache import FunctionCache
from autoscaler.providers.kubernetes._calls import RetryPolicy, call
from autoscaler.providers.kubernetes._events import EVENT_SERIES_WINDOW, EventRecorder
from autoscaler.providers.kubernetes._kubeconfig import load_configuration
from autoscaler.providers.kubernetes._marks import MarkWriter
from autoscaler.providers.kubernetes._objects import SERVICE_NAME_LABEL, Obj, format_last_active
from autoscaler.providers.kubernetes._watch import Reflector, read_list
from autoscaler.tasks import restarting

__all__ = ["API_CALLS", "EVENT_SERIES_WINDOW", "KubernetesProvider"]

log = logging.getLogger(__name__)

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "patch"),  # the last-active annotation; a wake-up (conditional on zero)
    ("apps", "deployments/scale", "patch"),
    ("discovery.k8s.io", "endpointslices", "list"),
    ("discovery.k8s.io", "endpointslices", "watch"),
    ("", "events", "create"),
    ("", "events", "patch"),  # a repeated event bumps count and lastTimestamp
    ("", "namespaces", "list"),  # only with --namespaces-annotated
    ("", "namespaces", "watch"),
)

# OpenFaaS never runs functions there (faas-netes refuses it), and neither do we.
_NEVER_FOLLOWED = frozenset({"kube-system"})

ListCall = Callable[..., Awaitable[Any]]
T = TypeVar("T")


class KubernetesProvider:
    """`Provider` backed by the Kubernetes API (see `autoscaler.interfaces.Provider`)."""

    def __init__(
        self,
        *,
        settings: ProviderSettings,
        api_client: k8s.ApiClient | None = None,
        retry: RetryPolicy | None = None,
        watch_timeout: float = 300.0,
        start_timeout: float | None = None,  # default: settings.start_timeout
        mark_active_interval: float = 5.0,
        component: str = "autoscaler",
        budget: WriteBudget | None = None,
    ) -> None:
        if not settings.namespaces and not settings.namespaces_annotated:
            raise ConfigError(
                "--namespaces is empty: give at least one namespace whose Deployments are functions "
                "(or --namespaces-annotated KEY=VALUE)"
            )
        self.settings = settings
        self._owns_client = api_client is None
        self.api_client: k8s.ApiClient = api_client if api_client is not None else k8s.ApiClient()
        self._apps = k8s.AppsV1Api(self.api_client)
        self._discovery = k8s.DiscoveryV1Api(self.api_client)
        self._core = k8s.CoreV1Api(self.api_client)
        self._retry = retry or RetryPolicy()
        self._watch_timeout = watch_timeout
        self._start_timeout = start_timeout if start_timeout is not None else settings.start_timeout
        self._followed: set[str] = set(settings.namespaces)
        self._cache = FunctionCache(self._followed)
        self.budget = budget or WriteBudget(qps=settings.api_qps, burst=settings.api_burst)
        self._marks = MarkWriter(
            write=self._write_mark, seen=self._cache.last_active, interval=mark_active_interval
        )
        timeout = settings.api_timeout
        self._events = EventRecorder(
            create=lambda namespace, body: self._budgeted(
                Priority.LAST,
                lambda: self._core.create_namespaced_event(namespace, body, _request_timeout=timeout),
            ),
            patch=lambda name, namespace, body: self._budgeted(
                Priority.LAST,
                lambda: self._core.patch_namespaced_event(name, namespace, body, _request_timeout=timeout),
            ),
            retry=self._retry,
            component=component,
            instance=os.environ.get("POD_NAME") or socket.gethostname(),
            uid_of=self._cache.uid,
        )
        self.reflectors: list[Reflector] = []
        self._tasks: list[asyncio.Task[None]] = []
        # Namespaces followed because of their annotation -> their watches' (reflector, task) pairs.
        self._annotated: dict[str, list[tuple[Reflector, asyncio.Task[None]]]] = {}
        self._mismatch_logged: set[tuple[str, str]] = set()
        key, _, value = (settings.namespaces_annotated or "").partition("=")
        self._annotation = (key, value) if settings.namespaces_annotated else None

    @classmethod
    async def create(cls, *, settings: ProviderSettings, **options: Any) -> KubernetesProvider:
        """Connect with `settings.kubeconfig` if given, else in-cluster config, else ~/.kube/config."""
        configuration = await load_configuration(settings.kubeconfig)
        # Every followed namespace holds two watch connections open for good, and the client's default
        # pool (100 connections) would leave writes and the watches of namespaces past 50 waiting for
        # a watch to reach its timeout: no limit here (the write budget bounds writes, not a pool).
        configuration.connection_pool_maxsize = 0  # aiohttp: 0 is no limit
        provider = cls(settings=settings, api_client=k8s.ApiClient(configuration), **options)
        provider._owns_client = True
        return provider

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("KubernetesProvider.start() was already called")
        for namespace in self.settings.namespaces:
            self.reflectors.extend(self._namespace_watches(namespace))
        if self._annotation is not None:
            self.reflectors.append(
                self._reflector(
                    "namespaces",
                    watch_func=self._core.list_namespace,
                    on_sync=self._sync_namespaces,
                    on_event=self._namespace_event,
                )
            )
        for reflector in list(self.reflectors):
            self._tasks.append(self._run(reflector))
        try:
            await asyncio.wait_for(self._first_listings(), self._start_timeout)
        except TimeoutError:
            missing = [r for r in self.reflectors if not r.synced.is_set()]
            reasons = "; ".join(str(r.last_error or f"{r.what}: no answer yet") for r in missing)
            await self.close()
            raise ProviderError(
                f"no first listing from the Kubernetes API server within {self._start_timeout:g}s "
                f"({reasons}); check that the cluster of your kubeconfig is up and reachable, or give "
                "--start-timeout more time",
                retryable=True,
            ) from None

    async def _first_listings(self) -> None:
        # Namespaces found annotated in the first listing start watches of their own: wait for those
        # too, so start() returns with every followed namespace listed (re-checking, as a namespace
        # may also stop being followed before its first listing).
        while pending := [r for r in self.reflectors if not r.synced.is_set()]:
            waits = [asyncio.ensure_future(r.synced.wait()) for r in pending]
            try:
                await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for watches in self._annotated.values():
            tasks.extend(task for _, task in watches)
        self._annotated.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._marks.close()
        await self.budget.close()
        if self._owns_client:
            await self.api_client.close()

    def _run(self, reflector: Reflector) -> asyncio.Task[None]:
        return restarting(reflector.run, name=f"watch {reflector.what}", restart_delay=self._retry.max_delay)

    def _reflector(
        self,
        what: str,
        *args: str,
        watch_func: ListCall,
        on_sync: Callable[[list[Obj]], None],
        on_event: Callable[[str, Obj], None],
        **kwargs: str,
    ) -> Reflector:
        """A list-then-watch of `watch_func(*args, **kwargs)` feeding `on_sync` and `on_event`."""

        async def list_all() -> tuple[list[Obj], str]:
            response = await watch_func(
                *args, _request_timeout=self.settings.api_timeout, _preload_content=False, **kwargs
            )
            return await read_list(response)

        return Reflector(
            what=what,
            list_call=list_all,
            watch_func=watch_func,
            watch_args=args,
            watch_kwargs=kwargs,
            on_sync=on_sync,
            on_event=on_event,
            backoff=self._retry,
            watch_timeout=self._watch_timeout,
            connect_timeout=self.settings.api_timeout,
        )

    def _namespace_watches(self, namespace: str) -> tuple[Reflector, Reflector]:
        """The watches of one followed namespace: its Deployments and its functions' EndpointSlices."""
        cache = self._cache
        deployments = self._reflector(
            f"deployments in {namespace}",
            namespace,
            watch_func=self._apps.list_namespaced_deployment,
            on_sync=lambda items: cache.sync_deployments(namespace, items),
            on_event=cache.deployment_event,
        )
        slices = self._reflector(
            f"endpointslices in {namespace}",
            namespace,
            watch_func=self._discovery.list_namespaced_endpoint_slice,
            on_sync=lambda items: cache.sync_slices(namespace, items),
            on_event=cache.slice_event,
            label_selector=SERVICE_NAME_LABEL,
        )
        return deployments, slices

    # ----- namespaces followed by annotation ---------------------------------------------------

    def followed_namespaces(self) -> list[str]:
        """The namespaces whose functions are in the cache right now (configured and annotated)."""
        return sorted(self._followed)

    def _wanted(self, obj: Obj) -> bool:
        """True when a Namespace carries the annotation and is not being deleted."""
        assert self._annotation is not None
        key, value = self._annotation
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        found = (meta.get("annotations") or {}).get(key)
        if found is None or meta.get("deletionTimestamp") or name in _NEVER_FOLLOWED:
            return False
        if value != "*" and str(found) != value:
            if (name, str(found)) not in self._mismatch_logged:
                self._mismatch_logged.add((name, str(found)))
                log.info(
                    "namespace %s has annotation %s=%r, not %r: not followed (OpenFaaS itself follows "
                    "any value; --namespaces-annotated %s=* does too)",
                    name,
                    key,
                    found,
                    value,
                    key,
                )
            return False
        return True

    def _sync_namespaces(self, items: list[Obj]) -> None:
        wanted = {str(o["metadata"]["name"]) for o in items if self._wanted(o)}
        for namespace in sorted(set(self._annotated) - wanted):
            self._unfollow(namespace)
        for namespace in sorted(wanted):
            self._follow(namespace)

    def _namespace_event(self, kind: str, obj: Obj) -> None:
        namespace = str((obj.get("metadata") or {}).get("name", ""))
        if kind != "DELETED" and self._wanted(obj):
            self._follow(namespace)
        else:
            self._unfollow(namespace)

    def _follow(self, namespace: str) -> None:
        if namespace in self._followed:
            return  # configured, or already followed
        log.info(
            "following namespace %s: it has the annotation %s", namespace, self.settings.namespaces_annotated
        )
        self._followed.add(namespace)
        watches = []
        for reflector in self._namespace_watches(namespace):
            self.reflectors.append(reflector)
            watches.append((reflector, self._run(reflector)))
        self._annotated[namespace] = watches

    def _unfollow(self, namespace: str) -> None:
        watches = self._annotated.pop(namespace, None)
        if watches is None:
            return  # configured namespaces are always followed; unknown ones were never
        log.info("no longer following namespace %s: annotation gone or namespace deleted", namespace)
        self._followed.discard(namespace)
        for reflector, task in watches:
            task.cancel()
            self.reflectors.remove(reflector)
        self._cache.forget(namespace)

    # ----- Provider: reads -------------------------------------------------------------------

    def functions(self) -> Mapping[str, FunctionInfo]:
        return dict(self._cache.functions)

    def get(self, ref: FunctionRef) -> FunctionInfo | None:
        return self._cache.functions.get(ref.key)

    def endpoints(self, ref: FunctionRef) -> list[str]:
        return self._cache.endpoints(ref)

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        """True once the function's EndpointSlices list a ready endpoint; False after `timeout`."""
        return await self._cache.wait_ready(ref, timeout)

    def subscribe(self, callback: Callable[[FunctionRef], None]) -> None:
        self._cache.subscribers.add(callback)

    # ----- Provider: writes ------------------------------------------------------------------

    async def scale(self, ref: FunctionRef, replicas: int) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ProviderError(f"cannot scale {ref.key} to {replicas!r}: replicas must be an integer >= 0")
        cached = self._cache.functions.get(ref.key)
        priority = scale_priority(None if cached is None else cached.replicas, replicas)
        await call(
            f"scale {ref.key} to {replicas}",
            lambda: self._budgeted(
                priority,
                lambda: self._apps.patch_namespaced_deployment_scale(
                    ref.name,
                    ref.namespace,
                    {"spec": {"replicas": replicas}},
                    _request_timeout=self.settings.api_timeout,
                ),
            ),
            # The patch carries no resourceVersion: the retry applies to the latest object.
            policy=self._retry,
        )

    async def wake(self, ref: FunctionRef, replicas: int) -> bool:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ProviderError(f"cannot wake {ref.key} to {replicas!r}: replicas must be an integer >= 1")
        # A JSON patch whose `test` makes it conditional: the API server applies it only while
        # spec.replicas is 0, else answers 422 ("Testing value /spec/replicas failed": apiserver
        # handlers/patch.go, interpretJSONPatchError). On the Deployment, not its Scale: Scale's
        # spec.replicas is `omitempty`, so at 0 the path a test needs is absent from the Scale.
        body = [
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": replicas},
        ]
        try:
            await call(
                f"wake {ref.key} to {replicas}",
                lambda: self._budgeted(
                    Priority.WAKE,
                    lambda: self._apps.patch_namespaced_deployment(
                        ref.name, ref.namespace, body, _request_timeout=self.settings.api_timeout
                    ),
                ),
                policy=self._retry,
            )
        except ProviderError as e:
            if e.status == 422:
                log.info("%s is no longer at zero: another writer woke it first", ref.key)
                return False
            raise
        return True

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        """Write the last-active annotation, at most once per `mark_active_interval` (see `_marks`)."""
        await self._marks.mark(ref, when)

    async def _write_mark(self, ref: FunctionRef, when: float) -> None:
        body = {"metadata": {"annotations": {LAST_ACTIVE_ANNOTATION: format_last_active(when)}}}
        # A function at zero is marked by the wake-up about to scale it: that mark cannot wait.
        cached = self._cache.functions.get(ref.key)
        priority = Priority.WAKE if cached is not None and cached.replicas == 0 else Priority.LAST
        await call(
            f"mark {ref.key} active",
            lambda: self._budgeted(
                priority,
                lambda: self._apps.patch_namespaced_deployment(
                    ref.name, ref.namespace, body, _request_timeout=self.settings.api_timeout
                ),
            ),
            policy=self._retry,
        )

    async def _budgeted(self, priority: Priority, write: Callable[[], Awaitable[T]]) -> T:
        """One attempt of a write, once the write budget gives it a token (each retry takes another)."""
        await self.budget.take(priority)
        return await write()

    async def record_event(
        self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False
    ) -> None:
        await self._events.record(ref, reason=reason, message=message, warning=warning)
