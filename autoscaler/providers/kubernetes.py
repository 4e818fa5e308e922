"""Functions as Kubernetes Deployments: the provider the controller and the proxy use in a cluster.

Reads never hit the API server: a list-then-watch of Deployments (and of the functions'
EndpointSlices) in each configured namespace keeps a local cache, so a tick or a proxied request
costs no API call, and `wait_ready()` wakes on the watch event, not by polling. Writes are few and
small: a strategic merge patch (the client's default for a dict body; on these maps it is a plain
JSON merge patch) of the `scale` subresource and of the last-active annotation (coalesced), and
core/v1 Events (aggregated like client-go's recorder: a repeat bumps `count`). Every call is retried
and wrapped by `_k8s_calls`, so callers only ever see `autoscaler.errors`.

Namespaces are the configured ones plus, with `--namespaces-annotated KEY=VALUE`, every namespace
carrying that annotation (OpenFaaS's multiple namespaces: `kubectl annotate namespace NAME
openfaas=1`; faas-netes' `pkg/handlers/namespaces.go` follows any value of `openfaas`, which `KEY=*`
does too): a watch of core/v1 namespaces starts a namespace's watches when it gains the annotation
and stops them, dropping its functions, when it loses it or is deleted.

OpenFaaS rewrites a function's Deployment wholesale on every update (faas-netes
`pkg/handlers/update.go` replaces its annotations), wiping the last-active mark; the mark only ever
moves forward, so the cache keeps the newest one it had for the same object until the proxy's next
mark writes it again.

`API_CALLS` lists every (api group, resource, verb) used here; the RBAC manifest must grant them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from autoscaler.config import ProviderSettings
from autoscaler.errors import ConfigError, NotFoundError, ProviderError
from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionInfo, FunctionRef
from autoscaler.providers._k8s_calls import RetryPolicy, call
from autoscaler.providers._k8s_objects import (
    SERVICE_NAME_LABEL,
    Obj,
    event_body,
    format_last_active,
    function_info,
    ref_of,
    rfc3339,
    slice_urls,
)
from autoscaler.providers._k8s_watch import Reflector
from autoscaler.tasks import restarting

log = logging.getLogger(__name__)

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "patch"),  # the last-active annotation
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

EVENT_SERIES_WINDOW = 600.0  # seconds within which a repeated event is aggregated
_MAX_SERIES = 1000


class KubernetesProvider:
    """`Provider` backed by the Kubernetes API (see `autoscaler.interfaces.Provider`)."""

    def __init__(
        self,
        *,
        settings: ProviderSettings,
        api_client: k8s.ApiClient | None = None,
        retry: RetryPolicy | None = None,
        watch_timeout: float = 300.0,
        start_timeout: float | None = 60.0,
        mark_active_interval: float = 5.0,
        component: str = "autoscaler",
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
        self._start_timeout = start_timeout
        self._mark_active_interval = mark_active_interval
        self._component = component
        self._instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._functions: dict[str, FunctionInfo] = {}
        self._uids: dict[str, str] = {}
        self._slices: dict[
            tuple[str, str], tuple[str, tuple[str, ...]]
        ] = {}  # (ns, slice) -> (service, urls)
        self._endpoints: dict[str, tuple[str, ...]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._marked: dict[str, float] = {}
        self._series: dict[tuple[str, str, str, str], tuple[str, int, float]] = {}  # -> (name, count, first)
        self._subscribers: list[Callable[[FunctionRef], None]] = []
        self.reflectors: list[Reflector] = []
        self._tasks: list[asyncio.Task[None]] = []
        # Namespaces followed because of their annotation -> their watches' (reflector, task) pairs.
        self._annotated: dict[str, list[tuple[Reflector, asyncio.Task[None]]]] = {}
        self._followed: set[str] = set(settings.namespaces)
        self._mismatch_logged: set[tuple[str, str]] = set()
        self._namespace_reflector: Reflector | None = None
        key, _, value = (settings.namespaces_annotated or "").partition("=")
        self._annotation = (key, value) if settings.namespaces_annotated else None

    @classmethod
    async def create(cls, *, settings: ProviderSettings, **options: Any) -> KubernetesProvider:
        """Connect with `settings.kubeconfig` if given, else in-cluster config, else ~/.kube/config."""
        configuration = k8s.Configuration()
        try:
            if settings.kubeconfig is None:
                try:
                    k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                except ConfigException:
                    await k8s_config.load_kube_config(client_configuration=configuration)
            else:
                await k8s_config.load_kube_config(
                    config_file=settings.kubeconfig, client_configuration=configuration
                )
        except (ConfigException, OSError) as e:
            where = settings.kubeconfig or "~/.kube/config"
            raise ConfigError(
                f"no Kubernetes API configuration: not running in a cluster and {where} is unusable ({e}); "
                "run inside a pod with a service account or pass --kubeconfig PATH"
            ) from e
        provider = cls(settings=settings, api_client=k8s.ApiClient(configuration), **options)
        provider._owns_client = True
        return provider

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("KubernetesProvider.start() was already called")
        for namespace in self.settings.namespaces:
            self.reflectors.append(self._reflector_deployments(namespace))
            self.reflectors.append(self._reflector_slices(namespace))
        if self._annotation is not None:
            self._namespace_reflector = self._reflector_namespaces()
            self.reflectors.append(self._namespace_reflector)
        for reflector in list(self.reflectors):
            self._tasks.append(self._run(reflector))

        async def first_listings() -> None:
            # Namespaces found annotated in the first listing start watches of their own: wait for
            # those too, so start() returns with every followed namespace listed (re-checking, as a
            # namespace may also stop being followed before its first listing).
            while pending := [r for r in self.reflectors if not r.synced.is_set()]:
                waits = [asyncio.ensure_future(r.synced.wait()) for r in pending]
                try:
                    await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()

        try:
            await asyncio.wait_for(first_listings(), self._start_timeout)
        except TimeoutError:
            missing = [r for r in self.reflectors if not r.synced.is_set()]
            reasons = "; ".join(f"{r.what}: {r.last_error or 'no answer yet'}" for r in missing)
            await self.close()
            raise ProviderError(
                f"no first listing within {self._start_timeout:g}s ({reasons})", retryable=True
            ) from None

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for watches in self._annotated.values():
            tasks.extend(task for _, task in watches)
        self._annotated.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_client:
            await self.api_client.close()

    def _run(self, reflector: Reflector) -> asyncio.Task[None]:
        return restarting(reflector.run, name=f"watch {reflector.what}", restart_delay=self._retry.max_delay)

    def _reflector_namespaces(self) -> Reflector:
        async def list_all() -> tuple[list[Obj], str]:
            result = await self._core.list_namespace(_request_timeout=self.settings.api_timeout)
            return self._items(result)

        return Reflector(
            what="namespaces",
            list_call=list_all,
            watch_func=self._core.list_namespace,
            watch_args=(),
            watch_kwargs={},
            on_sync=self._sync_namespaces,
            on_event=self._namespace_event,
            backoff=self._retry,
            watch_timeout=self._watch_timeout,
            connect_timeout=self.settings.api_timeout,
        )

    def _reflector_deployments(self, namespace: str) -> Reflector:
        async def list_all() -> tuple[list[Obj], str]:
            result = await self._apps.list_namespaced_deployment(
                namespace, _request_timeout=self.settings.api_timeout
            )
            return self._items(result)

        return Reflector(
            what=f"deployments in {namespace}",
            list_call=list_all,
            watch_func=self._apps.list_namespaced_deployment,
            watch_args=(namespace,),
            watch_kwargs={},
            on_sync=lambda items: self._sync_deployments(namespace, items),
            on_event=self._deployment_event,
            backoff=self._retry,
            watch_timeout=self._watch_timeout,
            connect_timeout=self.settings.api_timeout,
        )

    def _reflector_slices(self, namespace: str) -> Reflector:
        async def list_all() -> tuple[list[Obj], str]:
            result = await self._discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=SERVICE_NAME_LABEL, _request_timeout=self.settings.api_timeout
            )
            return self._items(result)

        return Reflector(
            what=f"endpointslices in {namespace}",
            list_call=list_all,
            watch_func=self._discovery.list_namespaced_endpoint_slice,
            watch_args=(namespace,),
            watch_kwargs={"label_selector": SERVICE_NAME_LABEL},
            on_sync=lambda items: self._sync_slices(namespace, items),
            on_event=self._slice_event,
            backoff=self._retry,
            watch_timeout=self._watch_timeout,
            connect_timeout=self.settings.api_timeout,
        )

    def _items(self, result: Any) -> tuple[list[Obj], str]:
        data = self.api_client.sanitize_for_serialization(result)
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion") or "")

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
        for reflector in (self._reflector_deployments(namespace), self._reflector_slices(namespace)):
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
        self._sync_deployments(namespace, [])
        self._sync_slices(namespace, [])

    # ----- cache upkeep (called by the watches) ----------------------------------------------

    def _carry_mark(self, info: FunctionInfo, uid: str) -> FunctionInfo:
        """Keep the newest last-active mark the cache had for this same object (see the docstring)."""
        cached = self._functions.get(info.ref.key)
        if cached is None or cached.last_active is None or self._uids.get(info.ref.key) != uid:
            return info
        if info.last_active is not None and info.last_active >= cached.last_active:
            return info
        return dataclasses.replace(info, last_active=cached.last_active)

    def _sync_deployments(self, namespace: str, items: list[Obj]) -> None:
        if namespace not in self._followed and items:
            return  # a late listing of a namespace no longer followed
        fresh = {}
        for obj in items:
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            info = function_info(obj)
            if info is not None:
                uid = str(obj["metadata"].get("uid") or "")
                fresh[info.ref.key] = self._carry_mark(info, uid)
                self._uids[info.ref.key] = uid
        stale = {key: info for key, info in self._functions.items() if info.ref.namespace == namespace}
        for key in stale.keys() - fresh.keys():
            del self._functions[key]
            self._uids.pop(key, None)
        self._functions.update(fresh)
        for key in stale.keys() | fresh.keys():
            if stale.get(key) != fresh.get(key):
                info = fresh.get(key) or stale[key]
                self._changed(info.ref)

    def _deployment_event(self, kind: str, obj: Obj) -> None:
        ref = ref_of(obj)
        if ref.namespace not in self._followed:
            return  # a late event of a namespace no longer followed
        info = None if kind == "DELETED" else function_info(obj)
        if info is None:
            # Deleted, or no longer labelled as a function: either way it leaves the cache.
            if self._functions.pop(ref.key, None) is not None:
                self._uids.pop(ref.key, None)
                self._changed(ref)
            return
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        self._functions[ref.key] = self._carry_mark(info, uid)
        self._uids[ref.key] = uid
        self._changed(ref)

    def _sync_slices(self, namespace: str, items: list[Obj]) -> None:
        if namespace not in self._followed and items:
            return
        touched = {service for (ns, _), (service, _) in self._slices.items() if ns == namespace}
        self._slices = {key: value for key, value in self._slices.items() if key[0] != namespace}
        for obj in items:
            service, urls = slice_urls(obj)
            self._slices[(namespace, str(obj["metadata"]["name"]))] = (service, urls)
            touched.add(service)
        for service in touched:
            self._refresh_endpoints(FunctionRef(name=service, namespace=namespace))

    def _slice_event(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if namespace not in self._followed:
            return
        before = self._slices.pop((namespace, name), None)
        service, urls = slice_urls(obj)
        if kind != "DELETED":
            self._slices[(namespace, name)] = (service, urls)
        for changed in {service, before[0] if before else service}:
            self._refresh_endpoints(FunctionRef(name=changed, namespace=namespace))

    def _refresh_endpoints(self, ref: FunctionRef) -> None:
        urls = sorted(
            {
                url
                for (ns, _), (service, found) in self._slices.items()
                if (ns, service) == (ref.namespace, ref.name)
                for url in found
            }
        )
        if urls:
            self._endpoints[ref.key] = tuple(urls)
        else:
            self._endpoints.pop(ref.key, None)
        ready = self._ready.setdefault(ref.key, asyncio.Event())
        if urls:
            ready.set()
        else:
            ready.clear()

    def _changed(self, ref: FunctionRef) -> None:
        for callback in list(self._subscribers):
            try:
                callback(ref)
            except Exception:
                log.exception("subscriber %r failed for %s; other subscribers still run", callback, ref.key)

    # ----- Provider: reads -------------------------------------------------------------------

    def functions(self) -> Mapping[str, FunctionInfo]:
        return dict(self._functions)

    def get(self, ref: FunctionRef) -> FunctionInfo | None:
        return self._functions.get(ref.key)

    def endpoints(self, ref: FunctionRef) -> list[str]:
        return list(self._endpoints.get(ref.key, ()))

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        """True once the function's EndpointSlices list a ready endpoint; False after `timeout`."""
        if self._endpoints.get(ref.key):
            return True
        ready = self._ready.setdefault(ref.key, asyncio.Event())
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def subscribe(self, callback: Callable[[FunctionRef], None]) -> None:
        self._subscribers.append(callback)

    # ----- Provider: writes ------------------------------------------------------------------

    async def scale(self, ref: FunctionRef, replicas: int) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ProviderError(f"cannot scale {ref.key} to {replicas!r}: replicas must be an integer >= 0")
        await call(
            f"scale {ref.key} to {replicas}",
            lambda: self._apps.patch_namespaced_deployment_scale(
                ref.name,
                ref.namespace,
                {"spec": {"replicas": replicas}},
                _request_timeout=self.settings.api_timeout,
            ),
            # The patch carries no resourceVersion: the retry applies to the latest object.
            policy=self._retry,
        )

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        """Write the last-active annotation; writes closer than `mark_active_interval` are coalesced."""
        cached = self._functions.get(ref.key)
        marks = [
            m for m in (self._marked.get(ref.key), cached.last_active if cached else None) if m is not None
        ]
        known = max(marks) if marks else None
        if known is not None and when < known + self._mark_active_interval:
            return  # never moves the mark back, and a recent mark already protects the function
        self._marked[ref.key] = when
        body = {"metadata": {"annotations": {LAST_ACTIVE_ANNOTATION: format_last_active(when)}}}
        try:
            await call(
                f"mark {ref.key} active",
                lambda: self._apps.patch_namespaced_deployment(
                    ref.name,
                    ref.namespace,
                    body,
                    _request_timeout=self.settings.api_timeout,
                ),
                policy=self._retry,
            )
        except ProviderError:
            if self._marked.get(ref.key) == when:
                del self._marked[ref.key]  # not written: let the next call try again
            raise

    async def record_event(
        self, ref: FunctionRef, *, reason: str, message: str, warning: bool = False
    ) -> None:
        kind = "Warning" if warning else "Normal"
        key = (ref.key, reason, message, kind)
        now = time.time()
        try:
            series = self._series.get(key)
            if series is not None and now - series[2] < EVENT_SERIES_WINDOW:
                try:
                    await self._bump_event(ref, key, series, now)
                    return
                except NotFoundError:
                    pass  # expired or deleted by the cluster: start a new one
            await self._create_event(ref, key, reason=reason, message=message, warning=warning, now=now)
        except ProviderError as e:
            log.warning("could not record event %s on %s (%s): %s", reason, ref.key, message, e)

    async def _create_event(
        self,
        ref: FunctionRef,
        key: tuple[str, str, str, str],
        *,
        reason: str,
        message: str,
        warning: bool,
        now: float,
    ) -> None:
        body = event_body(
            ref,
            uid=self._uids.get(ref.key),
            reason=reason,
            message=message,
            warning=warning,
            component=self._component,
            instance=self._instance,
            now=now,
        )
        await call(
            f"create event {reason} on {ref.key}",
            lambda: self._core.create_namespaced_event(
                ref.namespace, body, _request_timeout=self.settings.api_timeout
            ),
            policy=self._retry,
        )
        if len(self._series) >= _MAX_SERIES:
            self._series = {k: v for k, v in self._series.items() if now - v[2] < EVENT_SERIES_WINDOW}
        self._series[key] = (str(body.metadata.name), 1, now)

    async def _bump_event(
        self, ref: FunctionRef, key: tuple[str, str, str, str], series: tuple[str, int, float], now: float
    ) -> None:
        name, count, first = series
        patch = {"count": count + 1, "lastTimestamp": rfc3339(now)}
        await call(
            f"update event {key[1]} on {ref.key}",
            lambda: self._core.patch_namespaced_event(
                name,
                ref.namespace,
                patch,
                _request_timeout=self.settings.api_timeout,
            ),
            policy=self._retry,
        )
        self._series[key] = (name, count + 1, first)
